"""Every email kind, from the screenshot script's fixture, as a person sees it: hostile client
strings escaped, nothing wider than a phone.

Chromium lays the pages out (Debian's `chromium`): without it these tests fail, never skip.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "emails.py"
# A client report shows no subject and no sender by design (client_reports.py); an alert is
# about mailwatch itself (the fixture's IMAP server answers with markup, though).
WITHOUT_CLIENT_TEXT = {"client-report"}
WITHOUT_SUBJECTS = {"client-report", "alert"}


def screenshot_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_emails", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, list[Path]]:
    script = screenshot_script()
    return script, script.render_emails(tmp_path_factory.mktemp("emails"))


def kind_of(page: Path) -> str:
    """ "75-nudge-alice.html" -> "nudge"; "client-report-bob.html" -> "client-report"."""
    return re.sub(r"^(\d+|month|quarter|week|morning)-", "", page.stem).rsplit("-", 1)[0]


def test_the_fixture_produces_every_kind_of_email_at_every_stage_and_period(emails):
    _, pages = emails
    names = {page.name for page in pages}
    for stage in ("75", "90", "100"):
        assert f"{stage}-nudge-alice.html" in names
    assert "100-nudge-head.html" in names
    for period in ("week", "month", "quarter"):
        assert {f"{period}-digest-head.html", f"{period}-digest-alice.html"} <= names
    assert {"client-report-alice.html", "alert-head.html"} <= names
    assert {"morning-still-waiting-alice.html", "morning-still-waiting-head.html"} <= names
    assert "morning-directors-dana.html" in names


def by_kind(pages: list[Path]) -> dict[str, list[str]]:
    """The emails' HTML by kind. Each email lists its recipient's requests only, so a hostile
    request reaches some emails of a kind, not all (Bob's list may hold no Acme request)."""
    found: dict[str, list[str]] = {}
    for page in pages:
        found.setdefault(kind_of(page), []).append(page.read_text(encoding="utf-8"))
    return found


def test_every_email_shows_the_clients_markup_as_text_never_as_markup(emails):
    _, pages = emails
    for page in pages:
        html = page.read_text(encoding="utf-8").lower()
        assert "<script" not in html and "<img" not in html, page.name
    for kind, htmls in by_kind(pages).items():
        if kind not in WITHOUT_CLIENT_TEXT:
            assert any("&lt;script&gt;" in html for html in htmls), kind


def test_a_right_to_left_override_is_shown_as_its_code_and_cannot_disguise_a_subject(emails):
    _, pages = emails
    for page in pages:
        assert "\u202e" not in page.read_text(encoding="utf-8"), page.name
    for kind, htmls in by_kind(pages).items():
        if kind not in WITHOUT_SUBJECTS:
            shown = [html for html in htmls if "invoice_\\u202egpj.exe" in html]
            assert shown, kind
            assert all("הצעת מחיר طلب عرض سعر" in html for html in shown)  # kept as written


def test_no_email_is_wider_than_a_phone_screen_of_390_pixels(emails):
    script, pages = emails
    sizes = script.page_sizes(pages, 390)
    too_wide = {page.name: size.width for page, size in sizes.items() if size.width > 390}
    assert too_wide == {}
    assert all(size.viewport == 390 for size in sizes.values())
