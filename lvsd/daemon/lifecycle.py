"""``lvsd run``: the one owner of the event loop.

:class:`Daemon` wires the pieces together and runs them as tasks until it is told to
stop: the check :class:`~lvsd.checks.scheduler.CheckScheduler`, the loops of
``lvsd.daemon.loops`` (the batcher, the one-second timer, drift repair, the systemd
watchdog), the heap's tending, the control socket and the API (``lvsd.daemon.admin``).
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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from lvsd import control
from lvsd.checks.base import ProbeFactory
from lvsd.checks.scheduler import CheckScheduler, CheckSchedulerStats, checks_from_config
from lvsd.config.model import Config, DaemonConfig
from lvsd.config.web import load_web
from lvsd.daemon import heap, loops
from lvsd.daemon.admin import Admin, ApiSource
from lvsd.daemon.systemd import Notifier, NullNotifier
from lvsd.engine.drains import DrainStore
from lvsd.engine.reconcile import Engine, ReloadResult
from lvsd.engine.routes import Route, RoutesFile, desired_routes, prefixes, quiesce
from lvsd.engine.serving import ServingFile, cannot_serve
from lvsd.engine.sync import SyncCheck, SyncKeeper
from lvsd.errors import LvsdError
from lvsd.ipvs.base import Backend, SyncDaemons
from lvsd.observe import api, status
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import SyncLine
from lvsd.preflight import Severity, audit

log = structlog.get_logger("lvsd.daemon.lifecycle")


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
        self.timer_interval = timer_interval
        self._load = load
        self.proc = proc
        self.modules_dir = modules_dir
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.started = asyncio.Event()
        self.ready = False
        self._batcher = loops.Batcher(batch_window)
        self._status = loops.StatusLine(self.notifier)
        self._reload_lock = asyncio.Lock()
        self.engine: Engine | None = None
        self.scheduler: CheckScheduler | None = None
        self.metrics: Metrics | None = None
        self.backend: Backend | None = None
        #: Keeps the kernel's sync daemons as ``[sync]`` asks (None: a backend without).
        self.sync: SyncKeeper | None = None
        #: ``daemon.serving_file``, for keepalived's track_file (None: not configured).
        self.serving: ServingFile | None = None
        self._serving_changes = -1  # the engine's change count it was last written at
        #: ``[bgp]``'s routes file, for the BGP speaker (None: not configured).
        self.routes: RoutesFile | None = None
        self._withdrawing = False  # a graceful stop owns the routes file
        #: The metrics endpoint's port once it listens (tests use port 0).
        self.api_port: int | None = None
        self._server: control.Server | None = None
        self._runner: api.Runner | None = None
        self._tasks: list[asyncio.Task[None]] = []

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

    def _metrics(self) -> Metrics:
        from prometheus_client import CollectorRegistry

        self.metrics = Metrics(CollectorRegistry(), process=True)
        self.metrics.watch(self._scheduler_stats)
        return self.metrics

    def _scheduler_stats(self) -> CheckSchedulerStats | None:
        """The scheduler's stats (its lag) for status and metrics; None before it starts."""
        return None if self.scheduler is None else self.scheduler.stats()

    def _scheduler(self, config: Config) -> CheckScheduler:
        if self._probe_factory is not None:
            factory = self._probe_factory
        else:
            from lvsd.checks.registry import make_probe

            factory = make_probe
        self.scheduler = CheckScheduler(
            factory,
            self._batcher.add,
            clock=self.clock,
            sleep=asyncio.sleep,
            max_concurrent=config.daemon.max_concurrent_probes,
            max_exec=config.daemon.max_exec_probes,
            rng=random.Random(),
        )
        return self.scheduler

    async def _start_api(self, config: Config, engine: Engine) -> None:
        listen = config.daemon.metrics_listen
        if not listen or self.metrics is None:
            return
        source = ApiSource(
            engine,
            lambda: self.ready,
            self.clock,
            sync=self._sync_lines,
            load=self._scheduler_stats,
        )
        path = config.daemon.web_config_file
        try:
            web = load_web(path) if path else None  # ConfigError: changed since the load
            runner = await api.start(listen, source, self.metrics, web)
        except (OSError, ValueError) as exc:
            raise LvsdError(f"cannot serve metrics on {listen}: {exc}") from exc
        self._runner = runner
        self.api_port = int(api.bound_port(runner))
        log.info("api.listening", listen=listen, port=self.api_port)

    def _freeze(self, config: Config) -> None:
        """The config's objects are built (with the label sets the scrapes will show,
        when they are served): keep the collector off them (``lvsd.daemon.heap``)."""
        if self.metrics is not None and config.daemon.metrics_listen:
            self.metrics.prepare(config)
            status.prepare(config)
        heap.freeze()

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
        backend = self.backend = self._backend()
        drains = DrainStore.in_dir(config.daemon.state_dir)
        engine = Engine(config, backend, clock=self.clock, drains=drains, hooks=self._metrics())
        self.engine = engine
        if isinstance(backend, SyncDaemons):
            self.sync = SyncKeeper(backend, self._sync_metrics)
        try:
            await self._start(config, engine)
            await self._main()
        finally:
            await self._stop(config, engine, backend)
        return 0

    def _update_serving(self, force: bool = False) -> None:
        """Write ``daemon.serving_file`` when health changed (or ``force``)."""
        engine = self.engine
        if engine is None or (not force and engine.changes == self._serving_changes):
            return
        self._serving_changes = engine.changes
        self._update_routes(engine)
        path = engine.config.daemon.serving_file
        if not path:
            self.serving = None
            return
        if self.serving is None or str(self.serving.path) != path:
            self.serving = ServingFile(path)
        self.serving.set(cannot_serve(engine.config, engine.health, self.clock()))

    def _update_routes(self, engine: Engine) -> None:
        """Write ``[bgp]``'s routes file (a VIP dropped from it, or the whole section,
        is withdrawn first)."""
        bgp = engine.config.bgp
        if self._withdrawing:
            return
        routes = desired_routes(engine.config, engine.health, self.clock())
        if self.routes is not None and (bgp is None or str(self.routes.path) != bgp.routes_file):
            self.routes.set(dict.fromkeys(self.routes.routes or {}, Route.WITHDRAW), "reload")
            self.routes = None
        if bgp is None:
            return
        if self.routes is None:
            self.routes = RoutesFile(bgp.routes_file)
        self.routes.set(routes)

    async def _withdraw(self, engine: Engine) -> None:
        """A graceful stop of ``[bgp]``: every VIP de-preferred, then withdrawn once no
        new connection came for ``stop_quiet`` seconds or after ``stop_deadline``."""
        bgp, routes = engine.config.bgp, self.routes
        if bgp is None or routes is None:
            return
        self._withdrawing = True
        vips = {p.split("/")[0] for p in prefixes(engine.config)}

        async def connections() -> int:
            snapshot = await engine.counters()
            return sum(
                stats.connections
                for key, stats in snapshot.service_stats.items()
                if key.address in vips
            )

        routes.set(dict.fromkeys(routes.routes or {}, Route.DEPREF), "stopping")
        try:
            quiet = await quiesce(
                connections, quiet=bgp.stop_quiet, deadline=bgp.stop_deadline, clock=self.clock
            )
        except LvsdError as exc:  # the counters cannot be read: withdraw now
            log.error("route.quiesce_failed", error=str(exc))
            quiet = False
        log.info("route.quiesced", quiet=quiet)
        routes.set(dict.fromkeys(routes.routes or {}, Route.WITHDRAW), "stopping")

    def _sync_metrics(self, checks: tuple[SyncCheck, ...]) -> None:
        if self.metrics is not None:
            self.metrics.sync_daemons({str(c.daemon.state): c.up for c in checks})

    def _sync_lines(self) -> tuple[SyncLine, ...]:
        checks = self.sync.checks if self.sync is not None else ()
        return tuple(SyncLine(str(c.daemon.state), c.up, str(c)) for c in checks)

    async def _start(self, config: Config, engine: Engine) -> None:
        """The sockets (so a second instance, or a port in use, stops here before any
        kernel write), the first apply, the host audit, the checks, the loops; then
        ``READY=1``. What has started is stopped by :meth:`_stop`, even on failure."""
        admin = Admin(
            engine,
            self.reload,
            self.clock,
            lambda: self.ready,
            sync=self._sync_lines,
            load=self._scheduler_stats,
        )
        self._server = await control.serve(
            config.daemon.control_socket, admin.handle, group=config.daemon.control_group
        )
        await self._start_api(config, engine)
        await engine.start()
        if self.sync is not None:
            await self.sync.keep(config.sync)
        if self.metrics is not None:
            self.metrics.loaded(time.time())
        # after the first dump, which loads ip_vs
        await preflight(config, self.proc, self.modules_dir, self.metrics)
        scheduler = self._scheduler(config)
        await scheduler.update(checks_from_config(config))
        self._tasks = [
            asyncio.create_task(scheduler.run(), name="scheduler"),
            asyncio.create_task(
                loops.batches(self._batcher, engine, self._status, self._update_serving),
                name="batches",
            ),
            asyncio.create_task(loops.timer(engine, self.timer_interval, self.clock), name="timer"),
            asyncio.create_task(loops.drift(engine, self.sync), name="drift"),
            asyncio.create_task(
                loops.watchdog(self.notifier, engine, scheduler, self.clock), name="watchdog"
            ),
            asyncio.create_task(heap.tend(), name="gc"),
        ]
        self._freeze(config)
        self.ready = True
        self._update_serving(force=True)
        summary = self._status.ready(engine)
        log.info("daemon.ready", status=summary, dry_run=self.dry_run)
        self.started.set()

    async def _main(self) -> None:
        """Wait for a reload or a stop; a task that dies (a bug) stops the daemon."""
        tasks = self._tasks
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

    async def _stop(self, config: Config, engine: Engine, backend: Backend) -> None:
        """``STOPPING=1``, then stop what :meth:`_start` started (the loops first); with
        ``remove_on_stop``, delete the managed services."""
        self.ready = False
        if self.serving is not None:  # first: keepalived hands the VIPs over at once
            self.serving.set(["lvsd is stopping"])
        self.notifier.stopping()
        log.info("daemon.stopping")
        await self._withdraw(engine)  # while the checks and the table keep serving
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.scheduler is not None:
            await self.scheduler.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            control.remove_socket(config.daemon.control_socket)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        if engine.config.daemon.remove_on_stop and engine.table is not None:
            await engine.remove_all()
        await engine.close()
        await backend.close()
        log.info("daemon.stopped")

    def request_stop(self) -> None:
        """What SIGTERM does (tests, which run without signal handlers)."""
        self.stop_requested.set()

    async def reload(self, force: bool = False) -> ReloadResult:
        """Reload the config file (SIGHUP and the control command); the reload guard
        (``daemon.reload_max_removed``) applies unless ``force``. Whatever goes wrong,
        the daemon keeps running and tells systemd it is ready again."""
        async with self._reload_lock:
            assert self.engine is not None, "daemon not started"
            engine = self.engine
            self.notifier.reloading()
            log.info("reload.start", path=self.config_path)
            guard = None if force else engine.config.daemon.reload_max_removed
            before = engine.config.daemon
            try:
                result = await engine.reload(self.load, max_removed=guard)
                if result.ok and (later := restart_needed(before, engine.config.daemon)):
                    log.warning("reload.restart_needed", settings=list(later))
                    result = replace(result, restart_needed=later)
                if result.ok and self.scheduler is not None:
                    await self.scheduler.update(checks_from_config(engine.config))
                    self._freeze(engine.config)
                if result.ok and self.sync is not None:
                    await self.sync.keep(engine.config.sync)
                if result.ok:
                    self._update_serving(force=True)
                    # the new config may need other settings
                    await preflight(engine.config, self.proc, self.modules_dir, self.metrics)
            except Exception as exc:  # a bug: logged, the daemon keeps serving
                log.exception("reload.error")
                result = ReloadResult(ok=False, errors=(f"{type(exc).__name__}: {exc}",))
            finally:
                self._status.ready(engine)
            return result


#: ``[daemon]`` settings used only at start (sockets, the state file, the probe pools):
#: a reload that changes them says so, and they take effect at the next restart.
START_ONLY = (
    "state_dir",
    "control_socket",
    "control_group",
    "metrics_listen",
    "web_config_file",
    "max_concurrent_probes",
    "max_exec_probes",
)


def restart_needed(old: DaemonConfig, new: DaemonConfig) -> tuple[str, ...]:
    """The ``daemon.`` keys among :data:`START_ONLY` whose value differs."""
    return tuple(f"daemon.{k}" for k in START_ONLY if getattr(old, k) != getattr(new, k))


async def preflight(config: Config, proc: Path, modules_dir: Path, metrics: Metrics | None) -> None:
    """Audit the host for ``config`` (only reads ``proc`` and ``modules_dir``; in a
    thread, as the module lists can be large): log each warning or error, or one
    line when all is well, and set ``lvsd_preflight_problems``."""
    findings = await asyncio.to_thread(audit, config, proc, modules_dir)
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
    if metrics is not None:
        metrics.preflight(findings)


def run(config_path: str, *, dry_run: bool = False) -> int:
    """``lvsd run``: the only ``asyncio.run`` of lvsd."""
    daemon = Daemon(config_path, dry_run=dry_run, notifier=Notifier.from_env())
    return asyncio.run(daemon.serve())


__all__ = ["Daemon", "run"]
