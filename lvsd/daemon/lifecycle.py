"""``lvsd run``: the one owner of the event loop.

:class:`Daemon` wires the pieces together and runs them as tasks until it is told to
stop: the check :class:`~lvsd.checks.scheduler.CheckScheduler`, a batcher that hands the
results gathered over a short window to :meth:`lvsd.engine.reconcile.Engine.results` (a burst
of changes becomes one apply), a one-second timer (slow-start ramps, lingering real
servers, a full reconcile after a failure), drift repair every
``daemon.reconcile_interval`` seconds, the systemd watchdog, and the control socket.
At start and after each successful reload it audits the host for the config
(:func:`lvsd.preflight.audit`, what ``lvsd check --host`` prints): each problem is
logged as ``preflight.finding`` and counted in ``lvsd_preflight_problems``.

Signal handlers only set events: SIGHUP asks for a reload, SIGTERM and SIGINT for a
stop. Only :func:`run` calls ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from lvsd import control
from lvsd.checks.base import ProbeFactory, ProbeResult
from lvsd.checks.scheduler import CheckScheduler, checks_from_config
from lvsd.config.model import Config
from lvsd.daemon import heap
from lvsd.daemon.systemd import Notifier, NullNotifier
from lvsd.engine.announce import Hooks
from lvsd.engine.drains import DrainStore
from lvsd.engine.reconcile import Engine, ReloadResult
from lvsd.errors import ControlError, LvsdError
from lvsd.health.state import CheckId
from lvsd.ipvs.base import Backend
from lvsd.model import DestKey, Table, parse_hostport
from lvsd.observe import api, metrics, status
from lvsd.preflight import Severity, audit

log = structlog.get_logger("lvsd.daemon.lifecycle")

#: Seconds an apply may run before the watchdog stops being fed.
APPLY_BOUND = 60.0


def parse_realserver(text: str) -> DestKey:
    """``10.0.0.2:80`` or ``[::1]:80`` as a key; ``LvsdError`` when malformed."""
    try:
        return DestKey.of(*parse_hostport(text))
    except ValueError as exc:
        raise LvsdError(f"bad real server: {exc}") from None


class Daemon:
    """Everything ``lvsd run`` does, from start-up to stop.

    ``backend_factory`` and ``probe_factory`` are the seams tests use (a
    ``MemoryBackend`` and fake probes); ``signals`` installs the signal handlers
    (off in tests that run several daemons in one process); ``proc`` and
    ``modules_dir`` are what the host audit reads (fake trees in tests).
    """

    def __init__(
        self,
        config_path: str,
        *,
        dry_run: bool = False,
        backend_factory: Callable[[], Backend] | None = None,
        probe_factory: ProbeFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
        signals: bool = True,
        batch_window: float = 0.02,
        timer_interval: float = 1.0,
        load: Callable[[str], Config] | None = None,
        proc: Path = Path("/proc"),
        modules_dir: Path = Path("/lib/modules"),
    ) -> None:
        self.config_path = config_path
        self.dry_run = dry_run
        self._backend_factory = backend_factory
        self._probe_factory = probe_factory
        self.clock = clock
        self.notifier = notifier if notifier is not None else NullNotifier()
        self._signals = signals
        self.batch_window = batch_window
        self.timer_interval = timer_interval
        self._load = load
        self.proc = proc
        self.modules_dir = modules_dir
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.started = asyncio.Event()
        self.ready = False
        self._batch: list[tuple[CheckId, ProbeResult]] = []
        self._batch_ready = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.engine: Engine | None = None
        self.scheduler: CheckScheduler | None = None
        self.metrics: Any = None
        self.backend: Backend | None = None
        #: The metrics endpoint's port once it listens (tests use port 0).
        self.api_port: int | None = None
        self._status = ""
        self._changes_seen = 0

    # -- wiring --------------------------------------------------------------------------

    def load(self) -> Config:
        if self._load is not None:
            return self._load(self.config_path)
        from lvsd.config import load

        return load(self.config_path)

    def _backend(self) -> Backend:
        if self._backend_factory is not None:
            return self._backend_factory()
        if self.dry_run:
            from lvsd.ipvs.memory import MemoryBackend

            return MemoryBackend()
        from lvsd.ipvs.netlink import NetlinkBackend

        return NetlinkBackend()

    def _hooks(self) -> Hooks:
        from prometheus_client import CollectorRegistry

        self.metrics = metrics.Metrics(CollectorRegistry())
        hooks: Hooks = self.metrics
        return hooks

    async def _preflight(self, config: Config) -> None:
        """Audit the host for ``config`` (only reads ``proc`` and ``modules_dir``; in a
        thread, as the module lists can be large): log each warning or error, or one
        line when all is well, and set ``lvsd_preflight_problems``."""
        findings = await asyncio.to_thread(audit, config, self.proc, self.modules_dir)
        problems = [f for f in findings if f.severity is not Severity.OK]
        for f in problems:
            say = log.error if f.severity is Severity.ERROR else log.warning
            say(
                "preflight.finding",
                severity=str(f.severity),
                setting=f.setting,
                value=f.value,
                consequence=f.consequence,
                fix=f.fix,
            )
        if not problems:
            log.info("preflight.ok", checked=len(findings))
        if self.metrics is not None:
            self.metrics.preflight(findings)

    def _on_result(self, cid: CheckId, result: ProbeResult, started: float) -> None:
        self._batch.append((cid, result))
        self._batch_ready.set()

    # -- running -------------------------------------------------------------------------

    async def serve(self) -> int:
        """Start, run until a stop is requested, stop. Raises ``ConfigError`` (and
        other ``LvsdError``) when start-up cannot complete."""
        loop = asyncio.get_running_loop()
        if self._signals:  # first: a SIGHUP during start-up must not kill the process
            loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
            loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)
        try:
            return await self._serve()
        finally:
            if self._signals:
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _serve(self) -> int:
        config = self.load()
        self.backend = self._backend()
        engine = Engine(
            config,
            self.backend,
            clock=self.clock,
            drains=DrainStore.in_dir(config.daemon.state_dir),
            hooks=self._hooks(),
        )
        self.engine = engine
        server: control.Server | None = None
        runner: Any = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            await engine.start()
            if self.metrics is not None and hasattr(self.metrics, "loaded"):
                self.metrics.loaded(time.time())
            await self._preflight(config)  # after the first dump, which loads ip_vs
            if self._probe_factory is not None:
                factory = self._probe_factory
            else:
                from lvsd.checks.registry import make_probe

                factory = make_probe
            self.scheduler = CheckScheduler(
                factory,
                self._on_result,
                clock=self.clock,
                sleep=asyncio.sleep,
                max_concurrent=config.daemon.max_concurrent_probes,
                max_exec=config.daemon.max_exec_probes,
                rng=random.Random(),
            )
            await self.scheduler.update(checks_from_config(config))
            server = await control.serve(
                config.daemon.control_socket, self.handle, group=config.daemon.control_group
            )
            runner = await self._start_api(config)
            tasks = [
                asyncio.create_task(self.scheduler.run(), name="scheduler"),
                asyncio.create_task(self._batches(), name="batches"),
                asyncio.create_task(self._timer(), name="timer"),
                asyncio.create_task(self._drift(), name="drift"),
                asyncio.create_task(self._watchdog(), name="watchdog"),
                asyncio.create_task(heap.tend(), name="gc"),
            ]
            self._freeze(config)
            self.ready = True
            summary = self._status = engine.summary()
            self.notifier.ready(summary)
            log.info("daemon.ready", status=summary, dry_run=self.dry_run)
            self.started.set()
            await self._main(tasks)
        finally:
            self.ready = False
            self.notifier.stopping()
            log.info("daemon.stopping")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.scheduler is not None:
                await self.scheduler.close()
            if server is not None:
                server.close()
                await server.wait_closed()
                control.remove_socket(config.daemon.control_socket)
            if runner is not None:
                with contextlib.suppress(Exception):
                    await runner.cleanup()
            if engine.config.daemon.remove_on_stop and engine.table is not None:
                await engine.remove_all()
            await engine.close()
            await self.backend.close()
            log.info("daemon.stopped")
        return 0

    async def _main(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for a reload or a stop; a task that dies (a bug) stops the daemon."""
        stop = asyncio.create_task(self.stop_requested.wait())
        try:
            while not self.stop_requested.is_set():
                reload = asyncio.create_task(self.reload_requested.wait())
                done, _ = await asyncio.wait(
                    {stop, reload, *tasks}, return_when=asyncio.FIRST_COMPLETED
                )
                if reload in done:
                    self.reload_requested.clear()
                    await self.reload()
                else:
                    reload.cancel()
                for task in tasks:
                    if task in done:
                        task.result()  # re-raises the bug
                        raise RuntimeError(f"task {task.get_name()} ended")
        finally:
            stop.cancel()

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def _start_api(self, config: Config) -> Any:
        listen = config.daemon.metrics_listen
        if not listen or self.metrics is None:
            return None
        try:
            runner = await api.start(listen, _Source(self), self.metrics)
        except (OSError, ValueError) as exc:
            raise LvsdError(f"cannot serve metrics on {listen}: {exc}") from exc
        self.api_port = int(api.bound_port(runner))
        log.info("api.listening", listen=listen, port=self.api_port)
        return runner

    def _freeze(self, config: Config) -> None:
        """The config's objects are built (with the label sets the scrapes will show,
        when they are served): keep the collector off them (``lvsd.daemon.heap``)."""
        if self.metrics is not None and config.daemon.metrics_listen:
            self.metrics.prepare(config)
            status.prepare(config)
        heap.freeze()

    async def _batches(self) -> None:
        """Hand the results of one short window to the engine as one round."""
        engine = self._engine
        while True:
            await self._batch_ready.wait()
            size = -1
            for _ in range(5):  # until the batch stops growing, at most 5 windows
                if len(self._batch) == size:
                    break
                size = len(self._batch)
                await asyncio.sleep(self.batch_window)
            batch, self._batch = self._batch, []
            self._batch_ready.clear()
            await engine.results(batch)
            self._say_status()

    def _say_status(self) -> None:
        """Tell systemd the summary line when health changed (it costs a walk of
        every real server, so not after every round)."""
        if self._engine.changes == self._changes_seen:
            return
        self._changes_seen = self._engine.changes
        summary = self._engine.summary()
        if summary != self._status:
            self._status = summary
            self.notifier.status(summary)

    async def _timer(self) -> None:
        """About every second: slow-start ramps, lingering servers, retry after failure."""
        engine = self._engine
        was_ramping = False
        while True:
            await asyncio.sleep(self.timer_interval)
            ramping = engine.ramping(self.clock())
            if ramping or was_ramping:  # one more tick writes the full weight
                await engine.tick()
            was_ramping = ramping
            if engine.lingering:
                await engine.check_lingering()
            if engine.stale:
                await engine.reconcile()

    async def _drift(self) -> None:
        engine = self._engine
        while True:
            await asyncio.sleep(engine.config.daemon.reconcile_interval)
            await engine.repair()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            await asyncio.Event().wait()  # never set: no watchdog asked for
            return
        engine = self._engine
        was_stalled = False
        while True:
            now = self.clock()
            scheduler = self.scheduler
            stalled = scheduler is not None and scheduler.stalled(now)
            since = engine.applying_since
            stuck = since is not None and now - since > APPLY_BOUND
            # The scheduler must be found stalled at two checks in a row: after the whole
            # host stalled (every task stops, this one too), this task may wake before the
            # scheduler has fired its overdue runs. Checking three times per ping interval
            # keeps one withheld ping from outlasting WatchdogSec.
            if stuck or (stalled and was_stalled):
                log.error("watchdog.withheld", scheduler_stalled=stalled, apply_stuck=stuck)
            else:
                self.notifier.watchdog()
            was_stalled = stalled
            await asyncio.sleep(interval / 3)

    @property
    def _engine(self) -> Engine:
        assert self.engine is not None, "daemon not started"
        return self.engine

    # -- commands ------------------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        """Reload the config file (SIGHUP and the control command)."""
        async with self._reload_lock:
            engine = self._engine
            self.notifier.reloading()
            log.info("reload.start", path=self.config_path)
            result = await engine.reload(self.load)
            if result.ok and self.scheduler is not None:
                await self.scheduler.update(checks_from_config(engine.config))
                self._freeze(engine.config)
            if result.ok:
                await self._preflight(engine.config)  # the new config may need other settings
            self._status = engine.summary()
            self.notifier.ready(self._status)
            return result

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's commands."""
        command = request.get("command")
        handler = self._commands.get(str(command))
        if handler is None:
            known = ", ".join(sorted(self._commands))
            raise ControlError(f"unknown command {command!r} (known: {known})")
        return await handler(self, request)

    async def _cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        result = await self.reload()
        if not result.ok:
            raise ControlError("reload failed, old config kept:\n" + "\n".join(result.errors))
        return result.to_json()

    async def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return status_reply(self._engine, self.clock())

    async def _drain(self, request: dict[str, Any], on: bool) -> dict[str, Any]:
        service = str(request.get("service", ""))
        realserver = parse_realserver(str(request.get("realserver", "")))
        result = await self._engine.set_drain(service, realserver, on)
        return {
            "service": service,
            "realserver": str(realserver),
            "drained": on,
            "ops": [str(op) for op in result.applied],
        }

    async def _cmd_drain(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._drain(request, True)

    async def _cmd_undrain(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._drain(request, False)

    async def _cmd_connections(self, request: dict[str, Any]) -> dict[str, Any]:
        """Active connections of one real server, from a fresh dump."""
        engine = self._engine
        service = str(request.get("service", ""))
        realserver = parse_realserver(str(request.get("realserver", "")))
        engine.find(service, realserver)
        await engine.refresh()
        return {
            "service": service,
            "realserver": str(realserver),
            "active": engine.active_connections(service, realserver),
        }

    _commands: dict[str, Callable[[Daemon, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
        "reload": _cmd_reload,
        "status": _cmd_status,
        "drain": _cmd_drain,
        "undrain": _cmd_undrain,
        "connections": _cmd_connections,
    }


class _Source:
    """What ``lvsd.observe.api`` reads: a fresh dump, the status report, readiness."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the daemon is up and every check has reported at least once."""
        daemon = self._daemon
        if not self._ready and daemon.ready and daemon.engine is not None:
            statuses = daemon.engine.health.status(daemon.clock())
            self._ready = all(cs.last_at is not None for s in statuses for _, cs in s.checks)
        return self._ready and daemon.ready

    async def snapshot(self) -> Any:
        return await self._daemon._engine.counters()

    def report(self, table: Table | None) -> Any:
        engine = self._daemon._engine
        return status.build(
            engine.config, engine.health, table, engine.drained, self._daemon.clock()
        )

    def report_steps(self, table: Table | None) -> Any:
        """:meth:`report` in steps (``lvsd.observe.status.build_steps``): ``lvsd.observe.api`` lets
        the probes start between them."""
        engine = self._daemon._engine
        return status.build_steps(
            engine.config, engine.health, table, engine.drained, self._daemon.clock()
        )


def status_reply(engine: Engine, now: float) -> dict[str, Any]:
    """The ``status`` command's answer: ``status`` (JSON) and ``text`` (for people)."""
    report = status.build(engine.config, engine.health, engine.table, engine.drained, now)
    return {"status": report.to_json(), "text": report.render()}


def run(config_path: str, *, dry_run: bool = False) -> int:
    """``lvsd run``: the only ``asyncio.run`` of lvsd."""
    daemon = Daemon(config_path, dry_run=dry_run, notifier=Notifier.from_env())
    return asyncio.run(daemon.serve())


__all__ = ["Daemon", "run", "status_reply"]
