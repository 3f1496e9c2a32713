"""The daemon: build the runtime, start inputs, serve the control socket, reload, stop.

Refuses to start on invalid configuration; a reload that fails validation keeps
the last good configuration running and logs every problem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
import os
import signal
from pathlib import Path
from typing import Any, Awaitable, Callable

from crisisbot import gc_policy
from crisisbot.command_bus import CommandBus
from crisisbot.gc_policy import Moment
from crisisbot.config.bundle import Bundle, load_bundle
from crisisbot.control import answer
from crisisbot.engine import Engine
from crisisbot.inputs_status import inputs_check
from crisisbot.clock import Clock
from crisisbot.lifecycle.service import Lifecycle
from crisisbot.errors import ConfigError, CrisisbotError, StartFailed
from crisisbot.listeners import raise_open_files_limit, throttle_accept_errors
from crisisbot.runtime import Runtime, same_plugin
from crisisbot.warmup import deferred_imports, warm_up
from crisisbot.web.health import pools_check, supervision_check
from triggers.base import Trigger
from triggers.state import TriggerState

log = logging.getLogger(__name__)
STOP_PART_TIMEOUT = 15.0  # seconds each part (inputs, engine…) gets to stop before we go on


class Daemon:
    def __init__(self, config_path: Path, bundle: Bundle, *, clock: Clock | None = None, demo: bool = False,
                 settle: Callable[[Moment], None] | None = None, options: list[str] | None = None) -> None:
        self.config_path = config_path
        self.options = options or []  # global command-line options, for the web process
        # called once started, after each reload and once the deferred imports are done:
        # the process's garbage collector policy (crisisbot/gc_policy.py), set by `serve`;
        # tests embedding a Daemon leave their own process's collector alone
        self.settle = settle
        self.demo = demo  # `crisisbot demo`: the only mode that starts demo-only triggers
        self.clock = clock  # the runtime's one clock (None: the system's); tests pass a ManualClock
        self.lifecycle: Lifecycle | None = None
        self.bundle = bundle
        self.runtime: Runtime | None = None
        self.engine: Engine | None = None
        self.commands: CommandBus | None = None  # every operation of the control socket and the web
        self._control: asyncio.AbstractServer | None = None
        # web.enabled: crisisbot.web.process.WebProcess (web.isolation: process) or
        # crisisbot.web.server.WebServer (inline, in this process)
        self.web: Any = None
        self._stop = asyncio.Event()
        self._stopped = False
        self._states: dict[str, TriggerState] = {}  # per input, handed to its next incarnation
        self._warming: asyncio.Task[None] | None = None  # deferred imports, right after ready

    async def start(self) -> None:
        """Start everything, or — on any failure, cancellation included — stop what did
        start and raise, so the process exits and a supervisor can restart it."""
        try:
            raise_open_files_limit()  # before any listener: an idle-connection flood needs descriptors
            throttle_accept_errors(asyncio.get_running_loop())
            self.runtime = await Runtime.build(self.bundle, clock=self.clock)
            self.runtime.executors.install(asyncio.get_running_loop())
            lock = self.runtime.instance_lock  # which process wrote what, in the audit chain itself
            log.info("%s claimed the data directory %s", lock.instance.describe() if lock else "this process",
                     self.bundle.data_dir)
            await self.runtime.store.audit("config.loaded", None, {
                "digest": self.bundle.digest, "files": self.bundle.files,
                "instance": dataclasses.asdict(lock.instance) if lock else None})
            if self.demo:
                from crisisbot.demo import close_earlier_demos  # each demo run shows its own incident

                await close_earlier_demos(self.runtime.store, self.bundle)
            self.engine = Engine(self.runtime)
            self.lifecycle = Lifecycle(self.runtime, self.engine)
            self.commands = CommandBus(self.runtime, self.engine, self.lifecycle, reload=self.reload)
            await self.lifecycle.start()
            await self.engine.start()
            await self.runtime.notify.start()  # messages left undelivered before a restart
            await self._start_triggers()
            self.runtime.health.add("inputs", inputs_check(self.runtime))
            # the daemon's own verdict, whichever process serves /health (the web process asks for it)
            self.runtime.health.add("supervision", supervision_check(self.lifecycle))
            self.runtime.health.add("pools", pools_check(self.runtime))
            web = self.bundle.config.web
            if web.enabled and web.isolation == "inline":
                from crisisbot.web.server import WebServer

                self.web = WebServer(self.runtime, self.commands)
                self.commands.sessions = self.web.console.sessions  # the console's, not a second copy
            elif web.enabled:  # the bus opens the sessions file the web process shares
                from crisisbot.web.process import WebProcess

                self.web = WebProcess(self.runtime, self.config_path, self.bundle.control_socket, self.options)
            await self._start_control()
            if self.web is not None:
                await self.web.start()
        except BaseException:
            await self.stop()
            raise
        # From now on a write that meets a lock or a full disk waits for it to pass
        # (visible in /health and the log) instead of failing a playbook step.
        self.runtime.store.retry_transient_for = math.inf
        if self.settle is not None:
            self.settle("started")
        log.info("crisisbot ready: %d playbook(s), %d trigger(s), %d connector(s)",
                 len(self.bundle.playbooks), len(self.runtime.triggers), len(self.runtime.connectors))
        self._warm_up()

    def _warm_up(self) -> None:
        """Import in the background what the configured plugins defer (crisisbot/warmup.py)."""
        if self._warming is None or self._warming.done():
            self._warming = asyncio.create_task(self._warm_then_settle(deferred_imports(self.bundle)),
                                                name="crisisbot-warm-up")

    async def _warm_then_settle(self, modules: list[str]) -> None:
        await warm_up(modules)
        if modules and self.settle is not None:  # imported after the start-up heap was frozen
            self.settle("warmed")

    async def _start_triggers(self) -> None:
        assert self.runtime
        for name, pc in self.runtime.bundle.triggers.items():
            await self._start_trigger(name, pc)

    async def _start_trigger(self, name: str, pc: Any) -> None:
        """Start one input with what it remembered (kept across reloads, loaded from the store)."""
        assert self.runtime and self.engine
        if issubclass(pc.cls, Trigger) and pc.cls.demo_only and not self.demo:
            log.info("trigger %s presses a demo button only under `crisisbot demo`; not started", name)
            return
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = await TriggerState.load(self.runtime.store, name)
        if _accepts_state(pc.cls):
            trigger = pc.cls(name, pc.config, self.engine, state=state)
        else:  # a third-party trigger written before `state` existed: lend it afterwards
            trigger = pc.cls(name, pc.config, self.engine)
            trigger.state = state
        trigger.hubs = self.runtime.hubs  # one connection per device, shared with connectors
        try:
            await trigger.start()
        except BaseException:
            try:  # release what it opened before failing (a port bound for TCP but not UDP)
                await trigger.stop()
            except Exception:  # noqa: BLE001 - the start failure is the error to report
                log.debug("stopping trigger %s after its failed start", name, exc_info=True)
            raise
        self.runtime.triggers[name] = trigger

    async def _stop_triggers(self, runtime: Runtime | None = None, names: list[str] | None = None) -> None:
        """Stop the inputs named (default: all), saving what each remembers."""
        runtime = runtime or self.runtime
        assert runtime
        for name in list(runtime.triggers) if names is None else names:
            trigger = runtime.triggers.pop(name)
            try:
                await trigger.close()
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stopping trigger %s failed", trigger.name)

    async def stop(self) -> None:
        """Stop in order; each part is bounded and a failing part does not keep the
        store from closing (its thread would keep the process alive)."""
        if self._stopped:
            return
        self._stopped = True
        runtime = self.runtime
        if runtime is not None:
            runtime.store.retry_transient_for = 0.0  # stopping must not wait for disk space
        if self._warming is not None:
            self._warming.cancel()  # an import under way in its thread ends by itself
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if self.web is not None:  # first: the web process sends its last audit entries over the control socket
            parts.append(("web server", self.web.stop))
        if self._control is not None:
            control, self._control = self._control, None
            parts.append(("control socket", _closer(control)))
        if runtime is not None:
            parts.append(("inputs", lambda: self._stop_triggers(runtime)))
        if self.lifecycle is not None:
            parts.append(("lifecycle", self.lifecycle.stop))
        if self.engine is not None:
            parts.append(("engine", self.engine.stop))
        for name, stop in parts:
            try:
                await asyncio.wait_for(stop(), STOP_PART_TIMEOUT)
            except Exception:  # noqa: BLE001 - keep stopping; the store must still close
                log.exception("stopping the %s failed; going on", name)
        if runtime is not None:
            await runtime.close()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    # -- reload ------------------------------------------------------------
    async def reload(self) -> bool:
        """Validate the files again; swap in the new configuration only if all is well."""
        assert self.runtime
        try:
            bundle = await asyncio.to_thread(load_bundle, self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the last good configuration:\n%s", exc)
            await self.runtime.store.audit("config.rejected", None, {"problems": [str(p) for p in exc.problems]})
            return False
        if bundle.digest == self.bundle.digest:
            return True
        previous = self.bundle
        try:
            changed = await self._apply_plugins(bundle)
        except Exception as exc:  # noqa: BLE001 - e.g. a port in use: go back to what worked
            log.error("reload failed while starting inputs/outputs (%s); restoring the previous configuration", exc)
            await self.runtime.store.audit("config.rejected", None, {"problems": [f"start failed: {exc}"]})
            await self._apply_plugins(previous)
            return False
        self.bundle = self.runtime.bundle = bundle
        _warn_web_restart_needed(previous, bundle)
        await self.runtime.store.audit("config.loaded", None, {"digest": bundle.digest, "files": bundle.files,
                                                               "restarted": changed})
        if self.lifecycle is not None:
            await self.lifecycle.reloaded()
        if self.web is not None:  # a web process is replaced by one that reads the new files
            await self.web.reload()
        if self.settle is not None:
            self.settle("reloaded")
        log.info("configuration reloaded (%s); restarted: %s", bundle.digest[:12], ", ".join(changed) or "nothing")
        self._warm_up()  # what new plugins defer
        return True

    async def _apply_plugins(self, bundle: Bundle) -> list[str]:
        """Restart only the inputs and outputs whose class or validated configuration changed
        (a held button, a panel's silence timer, an open connection are left alone).

        Outputs: the new ones start before the old ones stop (running steps always find
        one). Inputs: the old ones stop first, since the new ones may listen on their ports.
        Returns what was (re)started, stopped or added, as `triggers.x` / `connectors.y`."""
        assert self.runtime
        outputs = await self.runtime.replace_connectors(bundle)
        running = self.runtime.triggers
        stale = [n for n, t in running.items() if not same_plugin(bundle.triggers.get(n), type(t), t.config)]
        await self._stop_triggers(names=stale)
        for name in set(self._states) - set(bundle.triggers):
            del self._states[name]  # a removed input; its saved state stays until it comes back
        started = [n for n in bundle.triggers if n not in running]
        for name in started:
            await self._start_trigger(name, bundle.triggers[name])
        inputs = sorted(set(stale) | set(started))
        return [f"triggers.{n}" for n in inputs] + [f"connectors.{n}" for n in outputs]

    async def reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:  # noqa: BLE001 - a signal handler has nobody to report to
            log.exception("reload failed")

    async def watch(self, interval: float = 2.0) -> None:
        """Reload when a file changes (cheap mtime poll: portable, no extra dependency)."""
        last = _mtimes(self.bundle)
        while True:
            await asyncio.sleep(interval)
            try:
                now = _mtimes(self.bundle)
                if now != last:
                    last = now
                    await self.reload()
            except Exception:  # noqa: BLE001 - the watcher must survive anything a reload meets
                log.exception("configuration watch failed; will look again")

    # -- control socket ----------------------------------------------------
    async def _start_control(self) -> None:
        path = self.bundle.control_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        old = os.umask(0o177)  # socket created 0600: only this user may fire alarms through it
        try:
            self._control = await asyncio.start_unix_server(self._serve_control, path=str(path))
        finally:
            os.umask(old)
        self.control_path = path

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One command per connection, through the bus (crisisbot/control.py speaks the wire)."""
        assert self.commands
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            reply = await answer(self.commands, line)
        except Exception as exc:  # noqa: BLE001 - answer the client, never crash the daemon
            reply = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
        writer.write(json.dumps(reply, default=str).encode() + b"\n")
        await writer.drain()
        writer.close()


WEB_AT_START = ("enabled", "host", "port", "isolation")  # web settings read only when the daemon starts


def _warn_web_restart_needed(old: Bundle, new: Bundle) -> None:
    """The console's socket and process mode are set up at start: say so rather than
    let a changed port look applied."""
    changed = [name for name in WEB_AT_START
               if getattr(old.config.web, name) != getattr(new.config.web, name)]
    if changed:
        log.warning("web.%s changed: takes effect when the daemon is restarted (the console keeps its "
                    "current settings until then)", ", web.".join(changed))


def _accepts_state(cls: type) -> bool:
    parameters = inspect.signature(cls).parameters.values()
    return any(p.name == "state" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _mtimes(bundle: Bundle) -> dict[str, float]:
    out = {}
    for directory in (bundle.root / bundle.config.paths.playbooks, bundle.root / bundle.config.paths.contacts,
                      bundle.root / bundle.config.paths.templates):
        if directory.is_dir():
            for file in directory.rglob("*"):
                try:
                    out[str(file)] = file.stat().st_mtime
                except FileNotFoundError:  # an editor's temporary file, already gone
                    continue
    for name in bundle.files:
        path = bundle.root / name
        if path.exists():
            out[str(path)] = path.stat().st_mtime
    return out


async def serve(config_path: Path, bundle: Bundle, options: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT.

    A stop requested while starting cancels the start; a start that fails raises
    `StartFailed` (or the `CrisisbotError` that says why) once all is closed."""
    daemon = Daemon(config_path, bundle, settle=gc_policy.settle, options=options)
    _handle_signals(daemon)
    starting = asyncio.create_task(daemon.start(), name="crisisbot-start")
    stopping = asyncio.create_task(daemon.wait(), name="crisisbot-stop-request")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        log.warning("stop requested while starting; stopping")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return 0
    if (error := starting.exception()) is not None:
        if isinstance(error, CrisisbotError):
            raise error
        log.debug("start failed", exc_info=error)
        raise StartFailed(f"could not start: {type(error).__name__}: {error}") from error
    watcher = asyncio.create_task(daemon.watch())
    try:
        await daemon.wait()
    finally:
        watcher.cancel()
        await daemon.stop()
    return 0


def _closer(server: asyncio.AbstractServer) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        server.close()
    return close


def _handle_signals(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload_logged()))
