"""A small JSON file two processes share: the daemon and its web child.

Why: console sessions and revoked links are changed in one process and checked in the
other on every request. Each change is a read-modify-write under `fcntl.flock` on a lock
file beside the data (`<file>.lock`, 0600), applied to the file's current content (no
lost update), and written atomically (temporary file, then rename): a reader never sees
half a file. A reader notices a change with one `stat` per lookup: the file's
(inode, mtime_ns, size) `Stamp` differs.

Renames reuse freed inode numbers, the kernel's file times are coarse (a few ms) and a
changed session can keep the file's size, so two versions written in a row could carry
the same stamp and a reader would miss the second. Writers, serialised by the lock,
therefore give each version an mtime strictly later than the previous version's.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple


class Stamp(NamedTuple):
    """What identifies one version of the file, from a single `stat`."""

    inode: int
    mtime_ns: int
    size: int


def _stamp_of(st: os.stat_result) -> Stamp:
    return Stamp(st.st_ino, st.st_mtime_ns, st.st_size)


def stamp(path: Path) -> Stamp | None:
    """The file's current stamp; None if it does not exist."""
    try:
        return _stamp_of(os.stat(path))
    except FileNotFoundError:
        return None


def read(path: Path) -> tuple[Stamp | None, str | None]:
    """The file's content and the stamp of exactly that version (fstat of the descriptor
    read: a rename in between cannot pair one version's stamp with another's text)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, None
    with os.fdopen(fd, "rb") as handle:
        found = _stamp_of(os.fstat(handle.fileno()))
        return found, handle.read().decode("utf-8", errors="replace")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of `path`, across processes and threads
    (each holder opens the lock file anew: flock excludes per open file description).
    Blocking: call it off the event loop when another process may hold it long."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write(path: Path, text: str, previous: Stamp | None, durable: bool = False) -> Stamp:
    """Replace the file atomically (mode 0600) with `text`; call under `locked(path)`.
    `previous`: the stamp of the version being replaced, so the new one's mtime is later.
    `durable`: on the disk before the rename (a power cut cannot bring back the old
    version); off for files whose loss is harmless, so no disk flush competes with the
    daemon's alarm commits."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
        if durable:
            os.fsync(fd)
        os.fchmod(fd, 0o600)  # an older version's temporary file may have been wider
        written = _stamp_of(os.fstat(fd))
        if previous is not None and written.mtime_ns <= previous.mtime_ns:
            later = previous.mtime_ns + 1
            os.utime(fd, ns=(later, later))
            written = _stamp_of(os.fstat(fd))
    finally:
        os.close(fd)
    os.replace(temp, path)
    return written
