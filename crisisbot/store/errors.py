"""Store failures an operator can act on, told apart from "try again in a moment".

SQLite reports a full disk, a lock held by another process and a damaged file as
`sqlite3.OperationalError`/`DatabaseError` with an error code; this module names them
so callers retry only what may pass (`transient`) and tell the operator what to do.
"""

from __future__ import annotations

import sqlite3

from crisisbot.errors import StoreError, StoreDamaged  # noqa: F401 - re-exported for existing importers

BACKUP_HINT = ("restore the last good copy made by `crisisbot backup` (see \"Backup and restore\" "
               "in docs/operations.md), or move the file aside to start with an empty store")

_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def code(exc: BaseException) -> int | None:
    """The primary SQLite result code of `exc` (extended codes folded), if it has one."""
    value = getattr(exc, "sqlite_errorcode", None)
    return value & 0xFF if isinstance(value, int) else None


def transient(exc: BaseException) -> bool:
    """Busy, locked or full: the same write may succeed later, unchanged."""
    return code(exc) in _TRANSIENT


def damaged(exc: BaseException) -> bool:
    return code(exc) in _DAMAGED


def explain(exc: BaseException, path: object) -> str:
    """One line for an operator: what is wrong with the store at `path` and what to do."""
    found = code(exc)
    if found == sqlite3.SQLITE_FULL:
        return f"the disk holding {path} is full ({exc}); free space there (a running daemon then resumes by itself)"
    if found in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"{path} is locked by another process ({exc}); find it with `fuser {path}`"
    if found in _DAMAGED:
        return f"{path} is damaged ({exc}); {BACKUP_HINT}"
    if found == sqlite3.SQLITE_READONLY or found == sqlite3.SQLITE_CANTOPEN or found == sqlite3.SQLITE_PERM:
        return f"cannot write {path} ({exc}); check the owner and permissions of the file and its directory"
    return f"store {path}: {type(exc).__name__}: {exc}"
