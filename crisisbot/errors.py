"""Every error class of crisisbot, in one place, under `CrisisbotError`.

Typed errors keep 'try again later' apart from 'the configuration is wrong'. One module
so a caller (or a plugin author, through `crisisbot.sdk`) finds them all, and one base so
`except CrisisbotError` catches whatever the project raises on purpose. Like aiosmtplib's,
each class also inherits the builtin it resembles so callers can catch either. The old
modules re-export their classes, so existing imports keep working.

Private control-flow exceptions that never leave their module (`_TooBig`, `_Unmapped`,
`_StoreFailed`) stay beside the code that raises and catches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2.exceptions import TemplateRuntimeError

if TYPE_CHECKING:
    from crisisbot.links import Claims


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


# --- alarm inputs ----------------------------------------------------------------------------

class FrameError(InputRejected):
    """A DC-09 frame that is garbled in transit: no reply, the panel repeats it."""


class Undecodable(InputRejected):
    """A well-formed DC-09 frame the receiver cannot process: answered with DUH.

    `frame` is the envelope (a `triggers.dc09_codec.Frame`) when it could be read (the DUH
    echoes its sequence and account); without one there is nobody to address a DUH to,
    so no reply. Typed `Any` here so the core does not import a trigger.
    """

    def __init__(self, message: str, frame: Any = None) -> None:
        super().__init__(message)
        self.frame = frame


# --- configuration and plugins ---------------------------------------------------------

class UnknownPlugin(CrisisbotError, LookupError):
    def __init__(self, group: str, name: str, known: list[str]):
        from crisisbot.plugins import CHECKS, TRIGGERS  # deferred: plugins imports this module

        self.known = known
        kind = {TRIGGERS: "trigger type", CHECKS: "check"}.get(group, "connector type")
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(known) or 'none'}")


class StepsNotInstalled(CrisisbotError, LookupError):
    """The installed metadata lists no `crisisbot.steps` entry point: an install older
    than the checkout (entry points come from the install, not from the source tree)."""

    def __init__(self) -> None:
        super().__init__(
            "no playbook step is registered: crisisbot's installed metadata predates the "
            "`crisisbot.steps` entry points; reinstall it (`./dev crisisbot --help`, or "
            "`pip install -e .` in its directory)")


class MissingExtra(CrisisbotError, ModuleNotFoundError):
    """An integration is used whose optional packages are not installed (pyproject's extras)."""

    def __init__(self, what: str, extra: str, module: str | None = None):
        self.what, self.extra = what, extra
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'crisisbot[{extra}]'", name=module)


class TemplateLimit(CrisisbotError, TemplateRuntimeError):
    """A template went over its output cap."""


class TemplateTimeout(CrisisbotError, TemplateRuntimeError):
    """A template went over its time budget."""


# --- daemon and control socket ------------------------------------------------------------

class StartFailed(CrisisbotError):
    """The daemon could not start; everything it had opened is closed again."""


class DaemonBusy(CrisisbotError, TimeoutError):
    """A daemon listens but does not take or answer the request in time.

    Never a reason to act in this process instead: the daemon may be handling
    the very alarm, and two processes would alert the committee twice.
    """


class CommandInvalid(CrisisbotError, ValueError):
    """A command (or control request) of an unknown name, another protocol version or bad fields."""


class DaemonRequired(CrisisbotError):
    """An operation only the running daemon can carry out (a cancel window, a drill, a reload)."""


class CommandRefused(CrisisbotError):
    """The daemon carried the command to its handler, which refused it; `kind` names the
    error class it raised there, so a client can tell refusals apart without a traceback."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class PoolFull(CrisisbotError, RuntimeError):
    """The pool's queue is full: refuse the request now (429/503), do not wait."""


# --- steps ---------------------------------------------------------------------------------

class StepFailed(CrisisbotError):
    """A step did not achieve its purpose; the message goes to the incident log."""


class NotReached(StepFailed):
    """A message reached fewer people than its `require` rule (the meta-alert has gone out)."""


# --- connectors ------------------------------------------------------------------------------

class VerdictUnknown(TransientError):
    """The sending POST reached Graph but its outcome is unknown (503/504, connection cut
    or no answer after the request went out): resending could deliver the message twice."""


class CertificatePinMismatch(PermanentError):
    """The peer presented another certificate than the pinned one."""


class CredentialRefused(PermanentError):
    """The directory refused the app's credential (an AADSTS error): retrying the same
    connector cannot help, the next one in the chain should take over at once."""


# --- store -----------------------------------------------------------------------------------

class StoreError(CrisisbotError):
    """The store cannot be used as it is (disk full, locked, damaged); the message says why."""


class StoreDamaged(StoreError):
    """The database file is damaged: only a restore helps."""


class Replayed(CrisisbotError, ValueError):
    """The alarm's nonce was already used by an alarm that was stored."""


class DataDirInUse(CrisisbotError, BlockingIOError):
    """Another crisisbot process holds the data directory."""


class ImageNotFound(CrisisbotError, LookupError):
    """No such image for this incident (never stored, purged, or tampered with)."""


# --- links and web ---------------------------------------------------------------------------

class LinkError(CrisisbotError, ValueError):
    """A token that is malformed, forged, for another purpose, or expired."""


class LinkExpired(LinkError):
    pass


class LoginThrottled(CrisisbotError):
    """Too many failed attempts from this client or for this account: wait `retry_after` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed attempts")
        self.retry_after = retry_after


class LinkRefused(CrisisbotError):
    """A live-view link refused with an HTTP status (throttled, invalid, revoked, expired)."""

    def __init__(self, status: int, message: str, claims: "Claims | None" = None) -> None:
        super().__init__(message)
        self.status = status
        self.claims = claims


# --- incident lifecycle ----------------------------------------------------------------------

class IncidentNotFound(CrisisbotError, LookupError):
    pass


class IncidentClosed(CrisisbotError, RuntimeError):
    """The incident already ended; acknowledging or escalating it makes no sense."""


class ReportError(CrisisbotError, RuntimeError):
    pass


class SilenceRefused(CrisisbotError, ValueError):
    pass


class StandDownRefused(CrisisbotError, ValueError):
    pass


class CancelRefused(CrisisbotError, ValueError):
    pass


class UnknownTimer(CrisisbotError, LookupError):
    """A timer of a kind no handler serves (a newer version scheduled it?)."""
