"""One daemon per data directory: an exclusive lock held for the life of the process.

Two daemons on the same store would resume each other's incidents and alert the
committee twice, so the second one must refuse to start, at once, naming the first.
The lock is `flock` on `<data>/crisisbot.lock` (not a pid file: the kernel releases
it when the process dies, even on kill -9, so a crash never leaves a stale lock).
The file holds the holder's identity, so the refusal can name it.

A shared store (PostgreSQL) cannot rely on a local file: it would take the same
`Instance` identity into a per-installation advisory lock instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from crisisbot.errors import DataDirInUse  # noqa: F401 - re-exported for existing importers

LOCK_NAME = "crisisbot.lock"


@dataclass(frozen=True, slots=True)
class Instance:
    """Who holds a data directory: enough for an operator to find the process."""

    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started_at}"


class InstanceLock:
    """The exclusive claim on a data directory; `release` (or process exit) ends it."""

    def __init__(self, data_dir: Path, instance: Instance | None = None) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.instance = instance or Instance()
        self._fd: int | None = None

    def acquire(self) -> "InstanceLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"another crisisbot ({holder}) already uses the data directory {self.path.parent}; "
                "stop it first, or give this one its own `paths.data`") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self.instance)).encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> str:
    """The holder's identity as it wrote it (it writes right after locking: may be empty)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return Instance(**{k: data[k] for k in ("pid", "host", "started_at", "id")}).describe()
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is still starting"
