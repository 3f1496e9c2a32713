"""Structured logging with the incident id on every line.

The incident id travels in a context variable, so every log call made while
running an incident's playbook (connectors included) carries it without being
passed around. The JSON formatter is a few lines of stdlib code: adding a
dependency for it would buy nothing.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

current_incident: contextvars.ContextVar[str | None] = contextvars.ContextVar("incident", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "incident"}


class IncidentFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.incident = current_incident.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "incident": getattr(record, "incident", "-"),
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class OriginFilter(logging.Filter):
    """Marks every record with the process it comes from (`origin`), for a child process
    whose lines go to the daemon's log stream (the web console: "web")."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin

    def filter(self, record: logging.LogRecord) -> bool:
        record.origin = self.origin
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(incident)s] %(name)s: %(message)s"
ORIGIN_FORMAT = "%(asctime)s %(levelname)-7s [%(incident)s] (%(origin)s pid %(process)d) %(name)s: %(message)s"


def setup(level: str = "INFO", fmt: str = "text", stream=None, origin: str | None = None) -> None:
    """`origin`: this process is a helper of the daemon (e.g. "web"); each line says so."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(IncidentFilter())
    if origin is not None:
        handler.addFilter(OriginFilter(origin))
    text = logging.Formatter(ORIGIN_FORMAT if origin is not None else TEXT_FORMAT)
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiosqlite", "httpx", "httpcore", "mail.log", "azure", "pymodbus", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
