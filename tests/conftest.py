pytest_plugins = [
    "tests.fixtures.dovecot",
    "tests.fixtures.postgres",
    "tests.fixtures.smtp",
    "tests.fixtures.stores",
]
