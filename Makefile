# The two commands a newcomer types: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench screenshots clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Dovecot (IMAP) and PostgreSQL: real servers for the tests and the demo; Chromium lays out
# the emails for tests/test_screenshots.py and `make screenshots`.
system-packages:
	@if ! command -v dovecot >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| ! command -v chromium >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dovecot-imapd postgresql chromium >/dev/null; \
	fi

demo: $(STAMP) system-packages
	$(BIN)/mailwatch demo

test: lint system-packages
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check mailwatch tests $(wildcard bench)
	$(BIN)/ruff format --check mailwatch tests $(wildcard bench)
	$(BIN)/mypy

bench: $(STAMP) system-packages
	$(BIN)/python -m bench

# The README's screenshots made again, and every email at phone and desktop width in
# build/emails/ (needs Debian's chromium).
screenshots: $(STAMP) system-packages
	$(BIN)/python docs/screenshots/client_report.py
	$(BIN)/python docs/screenshots/emails.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache
