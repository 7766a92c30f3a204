"""Where the command line and the daemon log, and how: lines for people, or one JSON
object per line for machines (`--log-format json`, `[daemon] log_format = "json"`).

A log call says what it is about with `extra=`: the keys in CONTEXT become fields of
the JSON object (the text format keeps them in its message, which already names them).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("mailbox", "folder", "request")
HANDLER_NAME = "mailwatch"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; control characters in a message are escaped by JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: getattr(record, key) for key in CONTEXT if hasattr(record, key)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(verbose: bool, log_format: str) -> None:
    """Log to stderr in `log_format` ("text" or "json"). Called again (once the configuration
    names a format) it only changes the format. Where something else already handles the
    root logger (a test harness), it is left alone, as logging.basicConfig would."""
    root = logging.getLogger()
    ours = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if ours is None:
        if root.handlers:
            return
        ours = logging.StreamHandler()
        ours.set_name(HANDLER_NAME)
        root.addHandler(ours)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
