"""`crisisbot web-worker`: the web console's process, started and supervised by the daemon
(crisisbot/web/process.py explains why it exists).

It lowers its own CPU priority first (nice 19, SCHED_IDLE), dies with the daemon (a signal from the
kernel when the daemon goes, and a check of its parent every second: an orphan holding
the port would keep a restarted daemon from binding it), loads the configuration as the
daemon did, and serves the same Starlette app (crisisbot/web/server.py) on the listening
socket the daemon lent it. It reads the store but never writes it: every change
(acknowledge, stand down, revoke, audit entries) goes to the daemon as a command over
its control socket.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from crisisbot import logs
from crisisbot.clock import Clock, SystemClock
from crisisbot.config.bundle import Bundle, load_bundle
from crisisbot.errors import CrisisbotError
from crisisbot.executors import Executors
from crisisbot.health import HealthChecks, Status
from crisisbot.links import Signer
from crisisbot.listeners import throttle_accept_errors
from crisisbot.store import open_store
from crisisbot.store.images import ImageStore
from crisisbot.web.access import Revocations
from crisisbot.web.remote import RemoteAudit, RemoteBus, daemon_health_check

log = logging.getLogger("crisisbot.web.worker")

NICE = 19
PARENT_POLL = 1.0  # seconds between two checks that the daemon is still there
ORPHAN_EXIT = 10.0  # seconds a graceful stop may take once the daemon is gone, then exit anyway
PR_SET_PDEATHSIG = 1


def lower_priority() -> tuple[int, str]:
    """nice 19, relative to the daemon (same session, so the same autogroup), and on Linux
    the SCHED_IDLE policy; returns the niceness and the policy now, for the log.

    Why both: at nice 19 alone, a woken alarm thread still waited for the web process to
    finish its time slice when both were on one core (Linux's EEVDF scheduler lets the
    running task reach its slice), and under a login flood the alarms' 50 emails took 3-5 %
    longer (p50 1.03-1.05 of no load in each of 6 runs of benchmarks/bench_alarm_isolation.py;
    p99 1.06-1.27). A SCHED_IDLE task is preempted at once by any normal task that wakes,
    and the flood then made no difference (p50 0.97-1.06, p99 0.91-1.11, 5 runs, 3 of them
    interleaved with 3 of the others). It still gets CPU time whenever no normal
    task wants it, so a quiet machine serves the console as fast as before. Set before
    any thread starts: threads inherit both."""
    try:
        niceness = os.nice(NICE)
    except OSError:  # already at the bottom, or not allowed to change it: serve anyway
        niceness = os.nice(0)
    policy = "normal"
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        try:
            os.sched_setscheduler(0, idle, os.sched_param(0))
            policy = "SCHED_IDLE"
        except OSError as exc:  # a container may forbid it: nice 19 still applies
            policy = f"normal (SCHED_IDLE refused: {exc.strerror})"
    return niceness, policy


def die_with_parent(parent: int) -> str | None:
    """SIGTERM from the kernel when the daemon's thread that started us ends (Linux);
    returns why not, for the log (the parent poll still applies)."""
    if not sys.platform.startswith("linux"):
        return "no PR_SET_PDEATHSIG on this system; relying on the parent poll"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return f"prctl unavailable ({exc}); relying on the parent poll"
    if os.getppid() != parent:  # the daemon went before the prctl took effect
        raise SystemExit(f"crisisbot web-worker: the daemon (process {parent}) is gone; not starting")
    return None


def read_key(data_dir: Path, name: str) -> bytes:
    """A key the daemon created; the web process never creates one (a second key would
    make the daemon's links and images unreadable here)."""
    path = data_dir / name
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CrisisbotError(f"the web process cannot read {path} ({exc.strerror}); the daemon creates it at "
                             "start: is this data directory the daemon's?") from None


class WebStore:
    """The reader store, with `audit` sent to the daemon: what crisisbot/web/* call
    `runtime.store` (reads here, audit entries there)."""

    def __init__(self, reader: Any, audit: RemoteAudit) -> None:
        self._reader = reader
        self.audit = audit
        self.audit_many = audit.many

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    async def close(self) -> None:
        await self._reader.close()


class WebHealth(HealthChecks):
    """The web process's checks, reported as the daemon's own /health was: the daemon's
    checks at the top level (`supervision`, `inputs`, `web`…; its pools as `daemon_pools`),
    this process's pools as `pools` (the console's hashing and web pools, as before).
    While the daemon does not answer, its check stays `daemon`, "down" with the reason."""

    async def gather(self) -> tuple[Status, dict[str, dict[str, Any]]]:
        status, report = await super().gather()
        daemon = report.get("daemon")
        inner = daemon.get("checks") if daemon is not None else None
        if isinstance(inner, dict):
            del report["daemon"]
            report = {**{("daemon_pools" if name == "pools" else name): check for name, check in inner.items()},
                      **report}
        return status, report


@dataclass
class WebRuntime:
    """Exactly what crisisbot/web/* use of the daemon's Runtime."""

    bundle: Bundle
    clock: Clock
    store: WebStore
    signer: Signer
    image_store: ImageStore  # opened, never started: retention sweeps are the daemon's
    revocations: Revocations
    executors: Executors
    health: WebHealth

    @classmethod
    async def build(cls, bundle: Bundle, bus: RemoteBus) -> "WebRuntime":
        clock = SystemClock()
        data_dir = bundle.data_dir
        signer = Signer(read_key(data_dir, "secret.key"), clock.now)
        images = ImageStore(data_dir / "images", read_key(data_dir, "images.key"),
                            bundle.config.incidents.image_retention, clock=clock.now)
        reader = open_store(bundle.config.store.url, data_dir, now=clock.now, reader=True)
        await reader.open()
        try:
            # the daemon's list, re-read when it saves; revoking goes to the daemon (RevokeLinks)
            revocations = await Revocations.from_file(data_dir / "revoked-links.json", clock=clock.now,
                                                      read_only=True)
        except BaseException:
            await reader.close()
            raise
        health = WebHealth()
        health.add("daemon", daemon_health_check(bus))  # the daemon's verdict, in place of "supervision"
        # refusal counts (RemoteAudit's HELD_KINDS) wait in the daemon while an alarm is dispatched
        return cls(bundle, clock, WebStore(reader, RemoteAudit(bus)), signer, images, revocations, Executors(),
                   health)

    async def close(self) -> None:
        try:
            await self.store.close()
        finally:
            self.executors.shutdown()




def _watch_parent(parent: int, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A thread, so it works even while the event loop is stuck: the daemon gone, stop;
    still here ORPHAN_EXIT s later, exit anyway (never hold the port as an orphan)."""
    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(PARENT_POLL)
        log.warning("the daemon (process %d) is gone; the web process stops", parent)
        loop.call_soon_threadsafe(stop.set)
        threading.Event().wait(ORPHAN_EXIT)
        log.error("the web process did not stop within %.0f s of the daemon's end; exiting now", ORPHAN_EXIT)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="crisisbot-web-parent", daemon=True).start()


async def serve(bundle: Bundle, sock: socket.socket, control: Path, ready_fd: int, parent: int) -> int:
    from crisisbot.web.server import WebServer

    loop = asyncio.get_running_loop()
    throttle_accept_errors(loop)  # EMFILE under a flood: one summary a minute, not a traceback each
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.debug("SIGHUP ignored: the daemon reloads"))
    _watch_parent(parent, loop, stop)
    bus = RemoteBus(control)
    runtime = await WebRuntime.build(bundle, bus)
    server = WebServer(cast(Any, runtime), cast(Any, bus), sock=sock)
    try:
        await server.start()
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
        log.info("web process %d serving on %s (niceness %d)", os.getpid(), sock.getsockname(), os.nice(0))
        await stop.wait()
        log.info("web process %d stopping", os.getpid())
    finally:
        try:
            await server.stop()
        finally:
            await runtime.close()
    return 0


def main(config_path: Path, *, fd: int, control: Path, ready_fd: int, parent: int,
         log_format: str | None, verbose: bool) -> int:
    niceness, policy = lower_priority()
    problem = die_with_parent(parent)
    bundle = load_bundle(config_path)
    logs.setup("DEBUG" if verbose else bundle.config.logging.level, log_format or bundle.config.logging.format,
               origin="web")
    log.debug("web process %d at niceness %d, scheduling policy %s, session %d (the daemon's)", os.getpid(),
              niceness, policy, os.getsid(0))
    if problem:
        log.warning("%s", problem)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise CrisisbotError(f"web-worker: descriptor {fd} is not the listening socket ({exc}); "
                             "this command is started by the daemon, not by hand") from None
    return asyncio.run(serve(bundle, sock, control, ready_fd, parent))
