"""Emails as mailwatch would send them, kept instead of sent: what `mailwatch demo` writes
and what the screenshots show (docs/screenshots/emails.py).

`RecordingMailer` is a `Mailer` that keeps each email it is given and sends nothing, so the
real passes (nudges, digests, client reports, alerts) run unchanged against it, the mail
kinds they will send one day included.  `write_html` writes each kept email as the page a
person opens: its HTML part, else its HTML attachment (a client report travels as one).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailwatch.adapters.render import RenderedEmail
from mailwatch.adapters.smtp import Attachment, Mailer

KIND_HEADER = "X-Mailwatch"  # every pass names its kind of mail in it: "nudge", "digest", …


@dataclass(frozen=True)
class KeptEmail:
    kind: str
    to: tuple[str, ...]
    rendered: RenderedEmail
    attachments: tuple[Attachment, ...]

    @property
    def html(self) -> str:
        if self.rendered.html:
            return self.rendered.html
        for attachment in self.attachments:
            if attachment.mime_type == "text/html":
                return attachment.content.decode()
        return f"<pre style='white-space:pre-wrap'>{html.escape(self.rendered.text)}</pre>"


class RecordingMailer(Mailer):
    """Keeps what `send` was given; no server, no network, no staff check (nothing leaves)."""

    def __init__(self) -> None:  # a Mailer's settings describe a server: there is none
        self.kept: list[KeptEmail] = []

    def send(
        self,
        to: Sequence[str],
        rendered: RenderedEmail,
        *,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> str:
        kind = (headers or {}).get(KIND_HEADER, "email")
        self.kept.append(KeptEmail(kind, tuple(to), rendered, tuple(attachments)))
        return f"<kept-{len(self.kept)}@mailwatch.invalid>"

    def check(self) -> None:
        """Nothing to connect to."""


def write_html(emails: Sequence[KeptEmail], directory: Path, prefix: str = "") -> list[Path]:
    """One file per email, named by kind and recipient ("nudge-alice.html"), in send order."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for email in emails:
        recipient = email.to[0].partition("@")[0] if email.to else "nobody"
        stem = f"{prefix}{email.kind}-{recipient}"
        path, number = directory / f"{stem}.html", 1
        while path in written:
            number += 1
            path = directory / f"{stem}-{number}.html"
        path.write_text(email.html, encoding="utf-8")
        written.append(path)
    return written
