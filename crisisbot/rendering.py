"""Render the committee's messages from security managers' Jinja2 templates.

Layout: `templates/<name>/<lang>/subject.txt`, `body.txt` and optional `body.html`.
The sandbox keeps a template from reaching Python internals; autoescaping applies
to `.html` files only, so the plain-text part is not littered with `&amp;`.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping
from zoneinfo import ZoneInfo

from jinja2 import (FileSystemLoader, StrictUndefined, Template, TemplateNotFound, TemplateSyntaxError, Undefined,
                    select_autoescape)
from crisisbot.errors import Problem
from crisisbot.render_limits import BoundedSandbox, TemplateTimeout, render_capped, time_budget

if TYPE_CHECKING:
    from crisisbot.config.settings import Site
    from crisisbot.models import Alarm

PARTS = ("subject.txt", "body.txt", "body.html")
SLOW_MEMORY = 60.0  # seconds a template that ran out of time is skipped for (fallback at once)
REQUIRED_PARTS = ("subject.txt", "body.txt")


log = logging.getLogger(__name__)


@dataclass(slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    fallback: str | None = None  # why the built-in message was sent instead of the template


# -- what templates may see -------------------------------------------------------
# Bidi overrides/isolates and marks: U+202E turns "exe.txt" into "txt.exe" in a subject.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def clean_text(value: str) -> str:
    """One line of alarm text as people may read it: no line breaks (an attacker's
    extra line in a mail or report), no control or bidi characters; the rest kept."""
    value = _LINE_BREAKS.sub(" ", value)
    return "".join(
        " " if ch == "\t" else ch
        for ch in value
        if ch == "\t" or (ch not in _BIDI and unicodedata.category(ch) != "Cc")
    )


def _clean_any(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if depth > 32:  # payload depth is capped at the inputs; this only bounds the walk
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_any(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_any(v, depth + 1) for v in value]
    return value


_ALARM_TEXT = ("source", "site", "zone", "input", "label", "dedup_key")


def clean_alarm(alarm: "Alarm") -> "Alarm":
    """The alarm with every string a person may read normalised (see `clean_text`).

    Applied where an alarm enters the core (Engine) and again in the template context,
    so no input — present or future — can put raw control characters in front of people.
    `raw` (the frame as received) is kept verbatim for the incident log."""
    update: dict[str, Any] = {}
    for name in _ALARM_TEXT:
        value = getattr(alarm, name)
        if isinstance(value, str) and clean_text(value) != value:
            update[name] = clean_text(value)
    if alarm.details:
        details = _clean_any(alarm.details)
        if details != alarm.details:
            update["details"] = details
    if alarm.links:
        links = _clean_any(alarm.links)
        if links != alarm.links:
            update["links"] = links
    return alarm.model_copy(update=update) if update else alarm


@dataclass(frozen=True, slots=True)
class ZoneView:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class SiteView:
    """What a template may know of a site: no cameras, hence no credentials."""

    id: str
    name: str
    address: str
    timezone: str
    country: str | None
    language: str | None
    zones: Mapping[str, ZoneView]


def site_view(site_id: str, site: "Site | None") -> SiteView | None:
    if site is None:
        return None
    zones = MappingProxyType({z: ZoneView(z, zone.name or z) for z, zone in site.zones.items()})
    return SiteView(site_id, site.name, site.address, site.timezone, site.country, site.language, zones)


def _localtime(value: datetime, tz: str = "UTC", fmt: str = "%d/%m/%Y %H:%M:%S %Z") -> str:
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


def _environment(directory: Path, undefined: type[Undefined]) -> BoundedSandbox:
    # bounded: a time budget and an output cap on top of the sandbox (crisisbot/render_limits.py)
    env = BoundedSandbox(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        keep_trailing_newline=True,
        undefined=undefined,
    )
    env.filters["localtime"] = _localtime
    return env


def error_line(exc: BaseException, directory: Path, rel: str) -> tuple[Path, int]:
    """Template file and line where a render failed: Jinja rewrites the traceback so
    that template frames carry the template's file name and line."""
    found: tuple[Path, int] = (directory / rel, 1)
    tb = exc.__traceback__
    root = str(directory)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root) and filename.endswith((".txt", ".html")):
            found = (Path(filename), tb.tb_lineno)
        tb = tb.tb_next
    return found


class TemplateSet:
    def __init__(self, directory: Path, display_root: Path | None = None):
        self.directory = directory
        self.display_root = display_root or directory.parent
        self.env = _environment(directory, Undefined)
        # validation: an undefined variable is an error, not an empty string
        self.strict_env = _environment(directory, StrictUndefined)
        self._languages: dict[str, set[str]] = {}
        self._too_slow: dict[tuple[str, str], tuple[float, TemplateTimeout]] = {}
        self._strings: dict[str, Template] = {}  # templated playbook fields (meeting subject, card title)

    def display(self, path: Path) -> str:
        return _display(path, self.display_root)

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
        """Compile every template file: syntax errors and unknown filters or tests
        (`| upperr`) alike. Jinja gives the line, not the column. Through the loader, so
        the compiled templates stay in the environment's cache for the sample renders of
        config/templatecheck.py (one compile per file at start instead of two)."""
        problems: list[Problem] = []
        if not self.directory.is_dir():
            return problems
        for file in sorted(self.directory.rglob("*")):
            if not file.is_file() or file.suffix not in (".txt", ".html"):
                continue
            rel = file.relative_to(self.directory).as_posix()
            shown = _display(file, display_root)
            try:
                self.strict_env.get_template(rel)
            except TemplateSyntaxError as exc:  # TemplateAssertionError (unknown filter/test) is one too
                kind = "syntax error" if type(exc) is TemplateSyntaxError else "error"
                problems.append(Problem(shown, exc.lineno or 1, 1, "", f"template {kind}: {exc.message}"))
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
        """The template's message, or — if it fails on this alarm's data — the built-in
        one with what, where, when and the links, so the committee is still reached;
        `Rendered.fallback` says why, for the timeline and the audit log."""
        try:
            slow = self._too_slow.get((name, language))
            if slow is not None and time.monotonic() - slow[0] < SLOW_MEMORY:
                raise slow[1]  # one recipient's message waited out the budget; the others need not
            return self._render(name, language, context)
        except Exception as exc:  # noqa: BLE001 - whatever broke, people must still be told
            if isinstance(exc, TemplateTimeout):
                self._too_slow[(name, language)] = (time.monotonic(), exc)
            file, line = error_line(exc, self.directory, f"{name}/{language}/body.txt")
            why = f"template '{name}' ({language}) failed at {self.display(file)}:{line}: {exc}"
            log.error("%s; sending the built-in message instead", why)
            rendered = fallback_message(language, context)
            rendered.fallback = why
            return rendered

    def _render(self, name: str, language: str, context: dict[str, Any]) -> Rendered:
        out = {}
        with time_budget():
            for part in PARTS:
                rel = f"{name}/{language}/{part}"
                try:
                    out[part] = render_capped(self.env.get_template(rel), context)
                except TemplateNotFound:
                    if part in REQUIRED_PARTS:
                        raise
                    out[part] = ""
        subject = " ".join(out["subject.txt"].split())  # a subject is one line
        return Rendered(subject=subject, text=out["body.txt"], html=out["body.html"])

    def render_string(self, source: str, context: dict[str, Any]) -> str:
        template = self._strings.get(source)
        if template is None:  # compiled once per configuration: compiling costs ~1 ms, rendering ~20 µs
            template = self._strings[source] = self.env.from_string(source)
        with time_budget():
            return render_capped(template, context)

    def render_field(self, source: str, context: dict[str, Any], what: str) -> str:
        """A templated playbook field (meeting subject, card title): one line, and ""
        when it fails on this alarm's data — the caller then uses its default (the
        incident title) rather than failing the step; the failure is logged."""
        try:
            return " ".join(clean_text(self.render_string(source, context)).split())
        except Exception as exc:  # noqa: BLE001 - a subject must not cost the meeting
            log.error("%s %r failed (%s); using the default instead", what, source, exc)
            return ""


def _get(context: dict[str, Any], *names: str) -> Any:
    value: Any = context
    for name in names:
        value = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
    return value


def fallback_message(language: str, context: dict[str, Any]) -> Rendered:
    """Built-in message, plain Python on purpose: it must not fail where a template did."""
    fr = language == "fr"
    alarm = context.get("alarm")
    what = str(_get(context, "alarm", "label") or _get(context, "alarm", "kind", "value") or "alarm")
    site = str(context.get("site_name") or _get(context, "alarm", "site") or "")
    address = _get(context, "site", "address") or ""
    zone = context.get("zone_name") or _get(context, "alarm", "zone") or ""
    when = ""
    occurred = getattr(alarm, "occurred_at", None)
    if isinstance(occurred, datetime):
        try:
            when = _localtime(occurred, str(context.get("timezone") or "UTC"))
        except Exception:  # noqa: BLE001 - an unknown zone must not cost the message
            when = occurred.isoformat(timespec="seconds")
    labels = (("Alarme", "Site", "Adresse", "Zone", "Heure", "Réunion de crise", "Je m'en occupe", "Fin d'alerte",
               "Incident") if fr else
              ("Alarm", "Site", "Address", "Zone", "Time", "Crisis meeting", "I'm on it", "Stand down", "Incident"))
    values = (what, site, address, zone, when, context.get("join_url"), context.get("ack_url"),
              context.get("stand_down_url"), _get(context, "incident", "id"))
    lines = [f"{label} : {clean_text(str(value))}" if fr else f"{label}: {clean_text(str(value))}"
             for label, value in zip(labels, values) if value]
    if not context.get("join_url"):
        lines.append("La réunion en ligne n'a pas pu être ouverte : appelez le poste de sécurité." if fr
                     else "The online meeting could not be opened: call the security desk.")
    note = ("(Message de secours : le modèle habituel n'a pas pu être utilisé.)" if fr
            else "(Fallback message: the usual template could not be used.)")
    tag = ("[EXERCICE] " if fr else "[DRILL] ") if context.get("drill") else ""
    subject = f"{tag}{'[CRISE]' if fr else '[CRISIS]'} {clean_text(what)} — {clean_text(site)}" + (f" — {when}" if when else "")
    return Rendered(subject=subject, text="\n".join(lines + ["", note]) + "\n", html="")


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
