"""Templates to email parts: the only importer of jinja2.

A template set is three files, `{name}.subject.txt`, `{name}.txt` and
`{name}.html`.  HTML is autoescaped (client subjects and names are untrusted
text) and a missing variable is an error, not a blank.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from mailwatch.output import printable

SUBJECT_MAX = 160

# In a checkout the templates live at the repository root; an installed wheel
# carries them as the package `mailwatch.templates`.
_CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, template_dir: Path | None = None):
        self._env = _environment(template_dir)

    def render(self, name: str, context: dict[str, Any]) -> RenderedEmail:
        subject = self._env.get_template(f"{name}.subject.txt").render(context)
        return RenderedEmail(
            subject=clean_subject(subject),
            text=self._env.get_template(f"{name}.txt").render(context),
            html=self._env.get_template(f"{name}.html").render(context),
        )


def clean_subject(subject: str) -> str:
    """One line: line breaks and control characters go (no header injection), ≤ 160 chars."""
    # Cc: CR, LF, tabs and the rest; Zl/Zp: Unicode line breaks; Cf: invisible
    # format characters such as right-to-left overrides that disguise text.
    visible = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in subject
        if unicodedata.category(c) != "Cf"
    )
    line = " ".join(visible.split())
    if len(line) > SUBJECT_MAX:
        line = line[: SUBJECT_MAX - 1].rstrip() + "…"
    return line


@cache
def _environment(template_dir: Path | None) -> jinja2.Environment:
    """One environment per template folder for the whole process: jinja compiles a
    template once per environment, and compiling was 60 % of building 13 digests."""
    root = template_dir if template_dir is not None else _installed_templates()
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: _read(root, name)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        finalize=_printable,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _printable(value: object) -> object:
    """Control characters in a stranger's text (a Message-ID, a subject) shown as escapes,
    in the plain-text part too; HTML that a template marked safe is left as it is."""
    return printable(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def _installed_templates() -> Traversable:
    try:
        return files("mailwatch.templates")
    except ModuleNotFoundError:
        return _CHECKOUT_TEMPLATES


def _read(root: Traversable, name: str) -> str | None:
    """A template's source, or None (jinja2 then raises TemplateNotFound)."""
    source = root.joinpath(name)
    return source.read_text(encoding="utf-8") if source.is_file() else None
