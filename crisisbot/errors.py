"""Typed errors: 'try again later' is kept apart from 'the configuration is wrong'.

Like aiosmtplib's, each class also inherits the builtin it resembles so callers can
catch either.
"""

from __future__ import annotations

from dataclasses import dataclass


class CrisisbotError(Exception):
    """Base of every error this project raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation finding, printed as `file:line:column: field.path: message`."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(CrisisbotError, ValueError):
    """The files a security manager wrote are wrong; retrying will not help."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConnectorError(CrisisbotError):
    """A connector failed; `retryable` says whether another attempt may succeed."""

    retryable = False


class TransientError(ConnectorError, ConnectionError):
    """Peer unreachable, throttled or timing out: retry within the step deadline."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError, RuntimeError):
    """The peer refused for a reason retrying cannot fix (permission, unknown mailbox)."""


class InputRejected(CrisisbotError, ValueError):
    """An alarm input was malformed, unauthenticated or replayed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
