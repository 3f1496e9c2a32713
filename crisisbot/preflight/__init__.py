"""`crisisbot check <service>`: read-only diagnostics that say what is missing and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One finding; `fix` tells the administrator what to do when `ok` is false."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
