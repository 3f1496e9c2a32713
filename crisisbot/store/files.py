"""Private files: incidents, outbox emails and keys are readable by the daemon's user only.

The data directory holds what a local attacker wants (stand-down and live-view links
in the outbox, camera images, the link-signing key). New files get mode 0600 through
the umask; directories 0700. Files left wider by an older version are reported at
start with the command that fixes them — not changed behind the operator's back.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
SCAN_LIMIT = 10_000  # entries looked at on start, so a huge outbox cannot delay it

log = logging.getLogger(__name__)


def restrict_umask() -> None:
    """Every file this process creates from now on is private (0600 / 0700)."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create the data directory 0700 (whatever the umask); return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def too_open(data_dir: Path) -> list[Path]:
    """Entries of `data_dir` (itself included) that group or others may read or enter."""
    found: list[Path] = []
    seen = 0
    for root, dirs, files in os.walk(data_dir):
        for name in [None, *files]:
            path = Path(root) if name is None else Path(root) / name
            seen += 1
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(mode) and not stat.S_ISSOCK(mode) and mode & 0o077:
                found.append(path)
            if seen >= SCAN_LIMIT:
                return found
        dirs.sort()
    return found


def warn_if_open(data_dir: Path) -> list[Path]:
    """Log one warning naming the fix when anything in `data_dir` is wider than private."""
    found = too_open(data_dir)
    if found:
        shown = ", ".join(f"{p} ({stat.filemode(p.lstat().st_mode)})" for p in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        log.warning("%d file(s) in the data directory are readable by other local users: %s%s. "
                    "Fix: chmod -R go-rwx %s", len(found), shown, more, data_dir)
    return found


def load_or_create_key(data_dir: Path, name: str = "secret.key") -> bytes:
    """A per-installation random key (mode 0600), so there is never a default secret."""
    path = data_dir / name
    if path.is_file():
        return path.read_bytes()
    private_dir(data_dir)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
