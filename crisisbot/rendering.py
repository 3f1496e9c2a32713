"""Render the committee's messages from security managers' Jinja2 templates.

Layout: `templates/<name>/<lang>/subject.txt`, `body.txt` and optional `body.html`.
The sandbox keeps a template from reaching Python internals; autoescaping applies
to `.html` files only, so the plain-text part is not littered with `&amp;`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, TemplateNotFound, TemplateSyntaxError, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

from crisisbot.errors import Problem

PARTS = ("subject.txt", "body.txt", "body.html")
REQUIRED_PARTS = ("subject.txt", "body.txt")


@dataclass(slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def _localtime(value: datetime, tz: str = "UTC", fmt: str = "%d/%m/%Y %H:%M:%S %Z") -> str:
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


class TemplateSet:
    def __init__(self, directory: Path):
        self.directory = directory
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            keep_trailing_newline=True,
        )
        self.env.filters["localtime"] = _localtime
        self._languages: dict[str, set[str]] = {}

    def names(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        return {p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("_")}

    def languages(self, name: str) -> set[str]:
        # cached: a TemplateSet lives as long as one loaded configuration (reload builds a new one)
        if name not in self._languages:
            base = self.directory / name
            self._languages[name] = {p.name for p in base.iterdir() if p.is_dir()} if base.is_dir() else set()
        return self._languages[name]

    def check(self, display_root: Path) -> list[Problem]:
        """Syntax-check every template file; Jinja gives the line, not the column."""
        problems: list[Problem] = []
        if not self.directory.is_dir():
            return problems
        for file in sorted(self.directory.rglob("*")):
            if not file.is_file() or file.suffix not in (".txt", ".html"):
                continue
            rel = file.relative_to(self.directory).as_posix()
            shown = _display(file, display_root)
            try:
                self.env.parse(file.read_text(encoding="utf-8"), name=rel)
            except TemplateSyntaxError as exc:
                problems.append(Problem(shown, exc.lineno or 1, 1, "", f"template syntax error: {exc.message}"))
            except UnicodeDecodeError:
                problems.append(Problem(shown, 1, 1, "", "template is not UTF-8 text"))
        for name in sorted(self.names()):
            for lang in sorted(self.languages(name)):
                for part in REQUIRED_PARTS:
                    if not (self.directory / name / lang / part).is_file():
                        shown = _display(self.directory / name / lang, display_root)
                        problems.append(Problem(shown, 1, 1, "", f"template '{name}' ({lang}) lacks {part}"))
        return problems

    def pick_language(self, name: str, wanted: list[str | None]) -> str:
        langs = self.languages(name)
        for lang in wanted:
            if lang and lang in langs:
                return lang
        if not langs:
            raise TemplateNotFound(name)
        return sorted(langs)[0]

    def render(self, name: str, language: str, context: dict[str, Any]) -> Rendered:
        out = {}
        for part in PARTS:
            rel = f"{name}/{language}/{part}"
            try:
                out[part] = self.env.get_template(rel).render(context)
            except TemplateNotFound:
                if part in REQUIRED_PARTS:
                    raise
                out[part] = ""
        subject = " ".join(out["subject.txt"].split())  # a subject is one line
        return Rendered(subject=subject, text=out["body.txt"], html=out["body.html"])

    def render_string(self, source: str, context: dict[str, Any]) -> str:
        return self.env.from_string(source).render(context)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
