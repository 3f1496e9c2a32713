"""The web console in a child process of the daemon, at the lowest CPU priority.

Why: a login flood on the console (1,500 concurrent bad logins) competed for the CPU
with the alarm path at the daemon's own priority, and slowed the panic alarm's emails.
The whole web app (console, JSON API, personal links, live view, /health) now runs in
`crisisbot web-worker` (crisisbot/web/worker.py) at nice 19 and SCHED_IDLE
(worker.lower_priority says why both). It stays in the daemon's
session: Linux groups CPU time by session (autogroups), and a niceness only counts
against processes of the same group, so a child in a session of its own would get as
much CPU as the daemon again. Never setsid it.

The daemon binds the listening socket itself and lends it to the child (`pass_fds`):
the port is known and checked at start as before, a reload starts the new child on
the same socket before the old one stops (no connection refused in between), and a
child that crashed is restarted on it. The child reads the store and sends every
change to the daemon as a command over the control socket; it never writes the store
(its write lock, held at nice 19, would stall the alarm's commits).

Supervision: the child's start and any unexpected exit are logged (ERROR, with the
exit code or signal), the daemon's health check "web" is degraded while no child
serves, and the child is restarted with a backoff (0.5 s doubling to 30 s, back to
0.5 s once a child has served for a minute). None of it ever blocks the alarm path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from crisisbot.health import Check
from crisisbot.listeners import ACCEPT_BACKLOG

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # seconds a child may take to import, load the configuration and serve (at nice 19)
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a child up this long resets the backoff
READY = b"ready"


class _StartFailed(Exception):
    """A child did not get to serving (it exited, or said nothing within READY_TIMEOUT)."""


def bind_listener(host: str, port: int, backlog: int = ACCEPT_BACKLOG) -> socket.socket:
    """The console's listening socket, bound by the daemon (the same clear error as the
    in-process server when the port is taken)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"web console: cannot listen on {host}:{port} (unknown host: {exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(f"web console: cannot listen on {host}:{port} (port in use?): {exc.strerror or exc}") from None
    return sock


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    """One `crisisbot web-worker` process."""

    def __init__(self, proc: asyncio.subprocess.Process, generation: int = 0) -> None:
        self.proc = proc
        self.generation = generation  # the configuration it was started for (WebProcess._generation)
        self.pid = proc.pid
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.watch: asyncio.Task[None] | None = None

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; always reaped (no zombie)."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
            except TimeoutError:
                log.warning("web console process %d did not stop within %.0f s of SIGTERM; killing it",
                            self.pid, timeout)
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
                await self.proc.wait()
        return self.proc.returncode


class WebProcess:
    """Same interface as crisisbot.web.server.WebServer (`start`, `stop`, `port`), plus
    `reload` (a new child on the new configuration) — chosen by `web.isolation: process`."""

    def __init__(self, runtime: "Runtime", config_path: Path, control_path: Path,
                 options: Sequence[str] = ()) -> None:
        """`options`: the daemon's global command-line options (log format, verbosity)."""
        self.runtime = runtime
        self.config_path = Path(config_path).resolve()
        self.control_path = Path(control_path)
        self.options = list(options)
        self.port: int | None = None
        self.restarts = 0  # children started after an unexpected exit or a failed start
        self._sock: socket.socket | None = None
        self._child: _Child | None = None
        self._stopping = False
        self._backoff = BACKOFF_FIRST
        self._restarter: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._problem: str | None = None  # why no child serves (health and logs)
        self._swap = asyncio.Lock()  # one start/replace at a time
        self._stop_requested = asyncio.Event()  # ends a wait for a starting child at once
        self._generation = 0  # counts reloads: a child started before the last one is replaced
        self._serving = asyncio.Event()  # set once a child serves

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    # -- start / reload / stop -------------------------------------------------------------
    async def start(self) -> None:
        """Bind (a port in use fails the daemon's start, as before), then start the child in
        the background: the daemon is ready without waiting for it. At the lowest CPU
        priority a child's start-up only gets the CPU the daemon leaves (about 0.7 s on a
        quiet machine, but a daemon busy resuming incidents would have waited as long as
        it stayed busy); meanwhile the port already listens, and a request waits in the
        kernel's queue until the child takes it. A child that fails to start is logged,
        shows in health and is retried: the daemon and its alarm path run without it."""
        web = self.runtime.bundle.config.web
        self._sock = bind_listener(web.host, web.port)
        self.port = self._sock.getsockname()[1]
        self.runtime.health.add("web", self.check)
        self._down_since = time.monotonic()
        self._problem = "starting"
        self._restarter = asyncio.create_task(self._keep_serving(first=True), name="crisisbot-web-start")

    async def serving(self, timeout: float | None = None) -> int:
        """Wait until a child serves (tests, tools); its process id."""
        await asyncio.wait_for(self._serving.wait(), timeout)
        assert self._child is not None
        return self._child.pid

    async def reload(self) -> None:
        """A new child on the new configuration, ready before the old one stops (the
        socket stays open here, so no connection is refused in between). If it fails to
        start, the old one keeps serving."""
        if self._stopping or self._sock is None:
            return
        self._generation += 1
        if self._child is None or (self._restarter is not None and not self._restarter.done()):
            return  # a child is being started: once it serves, it is replaced if it predates this reload
        try:
            await self._replace()
        except _StartFailed as exc:
            if self._stopping:
                log.info("web console: %s", exc)
                return
            log.error("web console: the new process for the reloaded configuration did not start (%s); "
                      "the previous one keeps serving", exc)
            return
        log.info("web console process %d serves the reloaded configuration", self.pid)

    async def stop(self) -> None:
        self._stopping = True
        self._stop_requested.set()
        if self._restarter is not None:
            self._restarter.cancel()
            await asyncio.gather(self._restarter, return_exceptions=True)
        async with self._swap:
            child, self._child = self._child, None
        if child is not None:
            code = await child.stop()
            log.info("web console process %d stopped (%s)", child.pid, describe_exit(code))
            if child.watch is not None:
                await asyncio.gather(child.watch, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.runtime.health.remove("web")

    # -- health --------------------------------------------------------------------------
    async def check(self) -> Check:
        if self._child is not None and self._child.ready_at is not None:
            return Check("up", {"pid": self._child.pid, "port": self.port, "restarts": self.restarts})
        down = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        return Check("degraded", {"web": f"the web console process is not serving: {self._problem}",
                                  "down_for_s": round(down, 1), "restarts": self.restarts})

    # -- children ---------------------------------------------------------------------------
    async def _replace(self) -> None:
        """Start a child; once it serves, it becomes the current one and the previous one stops."""
        async with self._swap:
            if self._stopping:
                raise _StartFailed("the daemon is stopping")
            child = await self._spawn()
            old, self._child = self._child, child
            self._down_since = None
            self._problem = None
            self._serving.set()
            child.watch = asyncio.create_task(self._watch(child), name=f"crisisbot-web-watch-{child.pid}")
        if old is not None:
            code = await old.stop()
            log.info("web console process %d replaced by %d (%s)", old.pid, child.pid, describe_exit(code))

    async def _spawn(self) -> _Child:
        assert self._sock is not None
        fd = self._sock.fileno()
        generation = self._generation  # taken before the child reads the configuration
        ready_read, ready_write = os.pipe()
        argv = [sys.executable, "-m", "crisisbot", "-c", str(self.config_path), *self.options, "web-worker",
                "--fd", str(fd), "--control", str(self.control_path), "--ready-fd", str(ready_write),
                "--parent", str(os.getpid())]
        try:
            # same environment (secrets given as ${ENV} resolve the same way), same stdout/stderr,
            # same session: never start_new_session (see the module docstring)
            proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(fd, ready_write), env=_child_env(),
                                                        stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            os.close(ready_read)
            raise _StartFailed(f"cannot start {sys.executable}: {exc}") from None
        finally:
            os.close(ready_write)
        child = _Child(proc, generation)
        try:
            await self._wait_ready(child, ready_read)
        except BaseException:
            await child.stop(timeout=1.0)
            raise
        child.ready_at = time.monotonic()
        log.debug("web console process %d ready after %.1f s", child.pid, child.ready_at - child.started)
        return child

    async def _wait_ready(self, child: _Child, fd: int) -> None:
        """The child writes "ready" on its end of the pipe once it serves."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        reading = asyncio.ensure_future(reader.readline())
        stopping = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({reading, stopping}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not reading.done():
                reading.cancel()
            transport.close()
        if self._stopping:
            raise _StartFailed(f"the daemon is stopping; process {child.pid} stopped before serving")
        if not reading.done() or reading.cancelled():
            raise _StartFailed(f"process {child.pid} was not serving after {READY_TIMEOUT:.0f} s")
        line = b"" if reading.exception() is not None else reading.result()
        if line.strip() != READY:
            try:  # it closed the pipe: it exited (its log says why)
                code = await asyncio.wait_for(child.proc.wait(), 5.0)
            except TimeoutError:
                code = None
            raise _StartFailed(f"process {child.pid} stopped before serving ({describe_exit(code)}; "
                                 "its log lines above say why)")

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if self._stopping or child is not self._child:
            return  # stopped or replaced on purpose
        self._child = None
        uptime = time.monotonic() - (child.ready_at or child.started)
        if uptime >= STABLE_AFTER:
            self._backoff = BACKOFF_FIRST
        self._failed(f"process {child.pid} exited unexpectedly ({describe_exit(code)}) after {uptime:.0f} s")
        self._schedule_restart()

    def _failed(self, why: str) -> None:
        self._problem = why
        if self._down_since is None:
            self._down_since = time.monotonic()
        log.error("web console: %s; the console, links and /health are unavailable until it is restarted "
                  "(in %.1f s); alarms are not affected", why, self._backoff)

    def _schedule_restart(self) -> None:
        if self._stopping or (self._restarter is not None and not self._restarter.done()):
            return
        self._restarter = asyncio.create_task(self._keep_serving(), name="crisisbot-web-restart")

    async def _keep_serving(self, first: bool = False) -> None:
        """Start a child (after the backoff, unless it is the first), until one serves the
        configuration in force: one started before a reload is replaced at once."""
        while not self._stopping:
            if not first:
                delay, self._backoff = self._backoff, min(self._backoff * 2, BACKOFF_MAX)
                await asyncio.sleep(delay)
                self.restarts += 1
            try:
                await self._replace()
            except _StartFailed as exc:
                if self._stopping:
                    return
                self._failed(str(exc))
                first = False
                continue
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive anything
                log.exception("web console: starting its process failed")
                self._failed(f"start failed: {type(exc).__name__}: {exc}")
                first = False
                continue
            child = self._child
            if child is None:  # it died already: its watch scheduled nothing (this task runs)
                first = False
                continue
            if child.generation != self._generation:
                log.info("web console process %d started before the last reload: replacing it", child.pid)
                first = True  # at once, no backoff: nothing failed
                continue
            web = self.runtime.bundle.config.web
            if self.restarts:
                log.warning("web console process restarted (process %d, restart %d)", child.pid, self.restarts)
            log.info("web console on http://%s:%s/console (process %d, lowest CPU priority)", web.host,
                     self.port, child.pid)
            return


def _child_env() -> dict[str, str]:
    """The daemon's environment; the child imports the same crisisbot as the daemon even
    when it runs from a source tree that is not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
