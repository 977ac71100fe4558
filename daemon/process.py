"""The daemon's life: lock, reconcile, monitors -> dispatcher, scheduler, signals, shutdown."""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from stillroom.config import Config
from stillroom.daemon.bus import Dispatcher
from stillroom.daemon.children import Children
from stillroom.daemon.echo import EchoFilter
from stillroom.daemon.feedback import Feedback
from stillroom.daemon.lock import InstanceLock
from stillroom.daemon.notify import make_notifier
from stillroom.daemon.proposals import Proposal, review
from stillroom.daemon.scheduler import make_scheduler, retention_job
from stillroom.daemon.spool import Spool
from stillroom.errors import ConfigError
from stillroom.monitors.base import Monitor, monitor_classes
from stillroom.paths import Paths, private_file
from stillroom.service.gateway import (
    Answerer,
    GatewayThread,
    base_url,
    bind,
    create_app,
    freeze_heap,
    load_token,
)
from stillroom.service.hooks.deciders import deciders_from_config
from stillroom.service.hooks.executor import Executor
from stillroom.service.hooks.learned import task_deciders
from stillroom.service.students import StudentClient
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")
# The daemon waits this long for another process's database lock; past it, the dispatcher
# keeps events aside and retries, so a long lock shows as a stuck store, not a silent wait.
STORE_BUSY_SECONDS = 5.0


class Daemon:
    """`stillroom daemon`: runs in the foreground until SIGTERM or SIGINT."""

    def __init__(self, config: Config, config_path: Path, *, dry_run: bool = False) -> None:
        self.config = config
        self.config_path = config_path
        self.dry_run = dry_run
        self.paths = Paths.resolve().ensure()
        self.monitors: list[Monitor] = []
        self._wake = threading.Event()
        self._stopping = False
        self._reload = False
        self._refresh = False
        self._learned: set[str] = set()
        self.gateway: GatewayThread | None = None

    def run(self) -> None:
        with InstanceLock(self.paths.lock_file):
            setup_logging(self.paths)
            with Store(self.paths.database, busy_timeout=STORE_BUSY_SECONDS) as store:
                self._serve(store)

    def _serve(self, store: Store) -> None:
        echo = EchoFilter()
        executor = Executor(store, on_effect=echo.expect)
        for record in executor.reconcile():
            log.warning("action %d was interrupted; now %s", record.id, record.state)
        retention_job(store, lambda: self.config)
        self.notifier = make_notifier(self.config, self.paths.database, on_answered=self._answered)
        self.students = StudentClient()
        feedback = Feedback(
            store, self.notifier, Path.home(), settle_days=self.config.feedback.settle_days
        )
        dispatcher = Dispatcher(
            store,
            executor,
            echo,
            [],
            dry_run=self.dry_run,
            feedback=feedback,
            spool=Spool(self.paths.spool_file),
            health_file=self.paths.bus_state,
        )
        self._refresh_deciders(store, dispatcher)
        children = Children(self.paths.logs_dir, self.config_path)
        scheduler = make_scheduler(store, lambda: self.config, children)
        scheduler.add_job(
            self._learned_job,
            "interval",
            seconds=self.config.detector.review_seconds,
            args=(store, dispatcher, feedback),
            id="learned",
            coalesce=True,
            max_instances=1,
        )
        self._install_signals()
        dispatcher.start()
        scheduler.start()
        try:
            self._start_monitors(dispatcher)
            self._start_gateway(store, dispatcher)
            log.info(
                "stillroom daemon ready (pid %d, config %s%s)",
                os.getpid(),
                self.config_path,
                ", dry run" if self.dry_run else "",
            )
            while not self._stopping:
                # Signals set _wake (a handler runs even while the main thread waits).
                self._wake.wait(60.0)
                self._wake.clear()
                if self._reload and not self._stopping:
                    self._reload = False
                    self._reload_config(dispatcher)
                if self._refresh and not self._stopping:
                    self._refresh = False
                    scheduler.modify_job("learned", next_run_time=datetime.now(UTC))
        finally:
            log.info("stopping")
            self._stop_gateway()
            self._stop_monitors()
            children.stop()
            scheduler.shutdown(wait=True)
            dispatcher.stop()
            self.paths.bus_state.unlink(missing_ok=True)
            self.notifier.close()
            self.students.close()
            log.info("stopped; %d events recorded this run", dispatcher.stored)

    def _answered(self, proposal: Proposal) -> None:
        """A notification button answered a proposal: pick up task changes now."""
        self._refresh = True
        self._wake.set()

    def _refresh_deciders(self, store: Store, dispatcher: Dispatcher) -> None:
        """Shadow students first (silent), then the user's rules, then accepted tasks."""
        shadows, actives = task_deciders(
            store, self.students, Path.home(), self.config.destinations
        )
        learned = {d.name + (" (shadow)" if d in shadows else "") for d in shadows + actives}
        if learned != self._learned:
            log.info("learned tasks now: %s", ", ".join(sorted(learned)) or "none")
            self._learned = learned
        dispatcher.deciders = shadows + deciders_from_config(self.config) + actives

    def _learned_job(self, store: Store, dispatcher: Dispatcher, feedback: Feedback) -> None:
        """Every minute: settle undos and pauses, review shadows, pick up accepted tasks."""
        feedback.check_all()
        review(store, self.notifier)
        self._refresh_deciders(store, dispatcher)
        self.students.close_if_idle()

    def _start_monitors(self, dispatcher: Dispatcher) -> None:
        for name, cls in monitor_classes().items():
            if not cls.enabled(self.config):
                log.info("monitor %s is off in the config", name)
                continue
            monitor = cls(self.config, dispatcher.put)
            monitor.start()
            self.monitors.append(monitor)
            log.info("monitor %s started", name)

    def _stop_monitors(self) -> None:
        for monitor in self.monitors:
            monitor.stop()
        self.monitors = []

    def _start_gateway(self, store: Store, dispatcher: Dispatcher) -> None:
        """The gateway on server.host:port; a port that is taken is logged, and the daemon
        carries on without it."""
        if not self.config.gateway.enabled:
            return
        host, port = self.config.server.host, self.config.server.port
        try:
            sock = bind(host, port)
        except OSError as exc:
            log.error("gateway not started: cannot listen on %s:%d (%s)", host, port, exc)
            return
        app = create_app(
            self.config,
            sink=dispatcher.put,
            token=load_token(self.paths.token_file),
            answerer=self._answerer(store),
            store=store,
            allowed_origins=self.config.gateway.allowed_origins,
        )
        gateway = GatewayThread(app, sock)
        freeze_heap()
        try:
            gateway.start()
        except TimeoutError as exc:
            log.error("gateway not started: %s", exc)
            return
        self.gateway = gateway
        log.info("gateway on %s", base_url(host, port))

    def _answerer(self, store: Store) -> Answerer | None:
        """What answers chat calls locally: learned prompt tasks whose students are sure."""
        from stillroom.daemon.notify import Notice
        from stillroom.service.local import TaskAnswerer

        def paused(task: str, text: str) -> None:
            self.notifier.notify(Notice("paused", task, text))

        return TaskAnswerer(store, self.students, self.config, on_pause=paused)

    def _stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def _reload_config(self, dispatcher: Dispatcher) -> None:
        """SIGHUP: read the config again; a bad file is logged and the old one kept."""
        try:
            config = Config.from_path(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded, keeping the running one: %s", exc)
            return
        self._stop_monitors()
        self.config = config
        self._refresh_deciders(dispatcher.store, dispatcher)
        self._start_monitors(dispatcher)
        log.info("config reloaded from %s", self.config_path)

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stopping = True
            self._wake.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload = True
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def refresh(signum: int, frame: FrameType | None) -> None:
            self._refresh = True
            self._wake.set()

        signal.signal(signal.SIGHUP, reload)
        signal.signal(signal.SIGUSR1, refresh)


def setup_logging(paths: Paths) -> None:
    """Log to stderr (the journal, under systemd) and to a private rotating file."""
    logger = logging.getLogger("stillroom")
    if logger.handlers:
        return
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    private_file(paths.log_file)
    handler = logging.handlers.RotatingFileHandler(
        paths.log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(fmt)
    logger.addHandler(handler)
    # A job that raises is reported by APScheduler's own logger: keep it in the same places.
    jobs = logging.getLogger("apscheduler")
    jobs.setLevel(logging.WARNING)
    jobs.addHandler(stream)
    jobs.addHandler(handler)
