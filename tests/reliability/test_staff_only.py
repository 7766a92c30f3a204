"""mailwatch mails staff only, in two places: the configuration refuses a recipient who is
not staff (tests/reliability/test_cli_config_errors.py), and the mailer the command line
builds refuses one again whatever its caller asks, recording the refusal where `health` and
the claim of that send see it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from mailwatch.adapters.render import RenderedEmail
from mailwatch.adapters.smtp import TransportError
from mailwatch.bootstrap import make_mailer, make_renderer
from mailwatch.claims import DIGEST
from mailwatch.config import load_settings
from mailwatch.digests import send_digests
from mailwatch.health import health_problems

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
NOTE = RenderedEmail(subject="Reminder", text="A client is waiting.", html="<p>waiting</p>")
CONFIG = """
[agency]
name = "Rouge"
domains = ["rouge.example"]
timezone = "Europe/London"
head_of_client_management = ["head@rouge.example"]

[[staff]]
email = "alice@rouge.example"
aliases = ["a.smith@rouge.example"]

[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
addresses = ["boss@gmail.com"]

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
sender = "Mailwatch <mailwatch@rouge.example>"
"""


def settings_for(tmp_path, smtp_server):
    path = tmp_path / "mailwatch.toml"
    path.write_text(CONFIG.format(port=smtp_server.port))
    return load_settings(path)


def test_the_mailer_sends_to_staff_and_refuses_clients_and_others_whoever_asks(
    tmp_path, smtp_server
):
    mailer = make_mailer(settings_for(tmp_path, smtp_server))
    assert mailer is not None
    mailer.send(["alice@rouge.example", "a.smith@rouge.example", "head@rouge.example"], NOTE)
    for stranger in ("jane@acme.example", "boss@gmail.com", "someone@elsewhere.example"):
        try:
            mailer.send([stranger], NOTE)
        except TransportError as error:
            assert error.permanent and stranger in str(error)
        else:
            raise AssertionError(f"sent to {stranger}")
    (sent,) = smtp_server.messages
    assert sent.rcpt_tos == ("alice@rouge.example", "a.smith@rouge.example", "head@rouge.example")


def test_a_digest_a_caller_addresses_to_a_client_is_not_sent_and_health_and_its_claim_say_why(
    tmp_path, smtp_server, store
):
    settings = settings_for(tmp_path, smtp_server)
    # A caller with a bug: the configuration itself refuses a client as the head.
    wrong = replace(
        settings, policy=replace(settings.policy, head_of_client_management=("jane@acme.example",))
    )

    run = send_digests(wrong, store, NOW, mailer=make_mailer(settings), renderer=make_renderer())

    assert all("jane@acme.example" not in m.rcpt_tos for m in smtp_server.messages)
    assert [(recipient, permanent) for recipient, _, permanent in run.failed] == [
        ("jane@acme.example", True)
    ]
    (claim,) = [c for c in store.claims(DIGEST) if c.recipient == "jane@acme.example"]
    assert claim.sent_at is None and "not a staff address" in (claim.error or "")
    assert any(
        "jane@acme.example" in problem and "not a staff address" in problem
        for problem in health_problems(settings, store, NOW)
    )
