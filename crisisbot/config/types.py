"""Small value types shared by every YAML schema (durations, time zones, strict base)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class Strict(BaseModel):
    """Every user-facing model refuses unknown keys: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _seconds(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"'{value}' is not a duration; use e.g. 200ms, 30s, 5m, 1h")
        return float(match.group(1)) * _UNIT[match.group(2)]
    raise ValueError("expected a duration such as 30s, 5m or 1h")


Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(json_schema_extra={"examples": ["30s", "5m", "200ms"]}),
]


def _zone(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expected an IANA time zone such as Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}'; use an IANA name such as Europe/Paris")
    return value


TimeZoneName = Annotated[str, BeforeValidator(_zone)]

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]

Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]


_INVISIBLE = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"


def _one_line(value: str) -> str:
    """Names and addresses go into mail headers and reports: one visible line, nothing that
    reorders text or starts a new header (`"Alice\\r\\nBcc: …"`)."""
    for ch in value:
        if ch in _INVISIBLE or (ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0):
            what = "a line break" if ch in "\r\n\u2028\u2029" else (
                "a text-direction control" if ch in _INVISIBLE else "a control character")
            raise ValueError(f"contains {what} (U+{ord(ch):04X}); write it on one line, as people should read it")
    return value


PlainText = Annotated[str, AfterValidator(_one_line)]


@dataclass(frozen=True, slots=True)
class Templated:
    """Marks a step field holding a Jinja2 expression rendered at run time (a meeting
    subject, a card title): `validate` compiles it and renders it with sample alarms
    (config/templatecheck.py), e.g. `subject: Annotated[str, Templated()] = "{{ incident.title }}"`."""


@dataclass(frozen=True, slots=True)
class Reference:
    """Marks a field whose value names something defined elsewhere, so that cross-reference
    checking (config/crossref.py) finds every such field without a list of step fields:

        to: Annotated[list[Identifier], Reference("contacts")]
        via: Annotated[list[Identifier] | None, Reference("connectors", of="mail")] = None

    Trigger configurations declare their `site` fields the same way (`Reference("sites")`).
    `of` narrows what is named: a connector kind (`Connector.kind`: mail, meeting, camera…)
    or, for `steps`, the action of the earlier step. `keywords` are values of the field that
    are not names (`cameras: zone`). The marker goes on the whole field, `None` included."""

    what: Literal["contacts", "connectors", "templates", "cameras", "steps", "sites"]
    of: str | None = None
    keywords: tuple[str, ...] = ()
