"""The client report of the README, made again: `make screenshots`.

A year of made-up mail for one client (seeded, so the figures come out the same), imported
into a scratch database, reported for November 2026 and photographed by headless Chromium
(Debian's `chromium`) at A4 width: docs/screenshots/client-report.png.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
A4 = "794,1123"  # CSS pixels at 96 dpi
CONFIG = """
[agency]
name = "Rouge Digital"
domains = ["rouge.example"]
timezone = "Europe/London"
[database]
url = "sqlite:///{database}"
[[sla.tiers]]
name = "critical"
target = "1h"
subject = ["(?i)\\\\bdown\\\\b"]
[[sla.tiers]]
name = "major"
target = "4h"
subject = ["(?i)\\\\bbroken\\\\b"]
[[staff]]
email = "alice@rouge.example"
name = "Alice Smith"
[[accounts]]
name = "Acme Ltd"
domains = ["acme.example"]
manager = "alice@rouge.example"
"""
SUBJECTS = (  # (share of requests, subject, the tier's target in hours)
    (0.05, "Our site is down", 1),
    (0.15, "Checkout broken", 4),
    (0.80, "Question about the newsletter", 24),
)


def write(folder: Path, name: str, headers: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{key}: {value}\n" for key, value in headers.items())
    (folder / f"{name}.eml").write_text(lines + "\nHello.\n")


def a_year_of_mail(mail: Path) -> None:
    rng = random.Random(7)
    day, number = datetime(2025, 12, 1, tzinfo=UTC), 0
    while day < datetime(2026, 12, 1, tzinfo=UTC):
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2]) if day.weekday() < 5 else 0):
            number += 1
            sent = day + timedelta(hours=rng.randint(8, 17), minutes=rng.randint(0, 59))
            subject, target = rng.choices(
                [(s, t) for _, s, t in SUBJECTS], [w for w, _, _ in SUBJECTS]
            )[0]
            late = rng.random() >= 0.93
            wait = target * rng.uniform(1.1, 2) if late else rng.expovariate(1 / (target * 0.35))
            key, date = f"m{number}", format_datetime(sent)
            write(
                mail / "INBOX",
                key,
                {
                    "Received": f"from mx.acme.example by mx.rouge.example; {date}",
                    "From": "Jane <jane@acme.example>",
                    "To": "alice@rouge.example",
                    "Subject": subject,
                    "Date": date,
                    "Message-ID": f"<{key}@acme.example>",
                },
            )
            write(
                mail / "Sent",
                f"re-{key}",
                {
                    "From": "alice@rouge.example",
                    "To": "jane@acme.example",
                    "Subject": f"Re: {subject}",
                    "Date": format_datetime(sent + timedelta(hours=wait)),
                    "Message-ID": f"<re-{key}@rouge.example>",
                    "In-Reply-To": f"<{key}@acme.example>",
                },
            )
        day += timedelta(days=1)


def main() -> int:
    mailwatch = [sys.executable, "-m", "mailwatch"]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        config = work / "mailwatch.toml"
        config.write_text(CONFIG.format(database=work / "mailwatch.db"))
        a_year_of_mail(work / "mail")
        now = ["--config", str(config), "--now", "2026-12-02"]
        subprocess.run([*mailwatch, "import", str(work / "mail/INBOX"), *now], check=True)
        subprocess.run([*mailwatch, "import", str(work / "mail/Sent"), "--sent", *now], check=True)
        report = work / "report"
        subprocess.run(
            [*mailwatch, "client-report", "Acme Ltd", "--output", str(report), *now], check=True
        )
        (page,) = report.glob("*.html")
        chromium = shutil.which("chromium") or "chromium"
        shot = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--hide-scrollbars",
                f"--window-size={A4}",
                f"--screenshot={HERE / 'client-report.png'}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
        )
        if shot.returncode or "written to file" not in shot.stdout + shot.stderr:
            print(shot.stdout + shot.stderr, file=sys.stderr)
            return 1
    print(HERE / "client-report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
