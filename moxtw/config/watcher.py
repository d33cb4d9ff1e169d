"""Reloading domains.toml while the server runs.

`DynamicConfigWatcher` is a Twisted service that polls the file's (mtime, size, inode) and
reloads it when they change. A valid new config replaces `current` (and `Config.dynamic`) and
is passed to subscribers; an invalid one is logged and the running config is kept.
"""

from typing import Callable, Optional

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.config.errors import ConfigError
from moxtw.config.load import Config, file_stamp, load_dynamic
from moxtw.config.notbuilt import not_built
from moxtw.config.schema import Dynamic

log = Logger(namespace="moxtw.config")

Subscriber = Callable[[Dynamic], object]


class DynamicConfigWatcher(service.Service):
    """Polls domains.toml every `interval` seconds on `clock` and reloads it on change."""

    name = "config-watcher"

    def __init__(self, config: Config, clock=None, interval: float = 2.0):
        clock = default_reactor(clock)
        self.config = config
        self.current: Dynamic = config.dynamic
        self.clock = clock
        self.interval = interval
        self._stamp = config.dynamic_stamp
        if self._stamp is None:
            self._stamp = file_stamp(config.dynamic_path)
        self._subscribers: list[Subscriber] = []
        self._loop: Optional[task.LoopingCall] = None
        self._stat_failed = False

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call callback(dynamic) after each successful reload; returns an unsubscribe
        function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.clock
        d = self._loop.start(self.interval, now=False)
        d.addErrback(lambda f: log.failure("config watcher stopped", f))

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()

    def check(self) -> bool:
        """Reload if the file changed; returns whether a new config was installed."""
        path = self.config.dynamic_path
        stamp = file_stamp(path)
        if stamp is None:
            if not self._stat_failed:
                log.error("cannot stat {path}, keeping the running configuration", path=path)
            self._stat_failed = True
            return False
        self._stat_failed = False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return self.reload()

    def reload(self) -> bool:
        """Load the file now; returns whether a new config was installed."""
        path = self.config.dynamic_path
        try:
            dynamic = load_dynamic(path, self.config.static)
        except ConfigError as exc:
            log.error(
                "reloading {path} failed, keeping the running configuration: {errors}",
                path=path,
                errors="; ".join(exc.errors),
                config_errors=exc.errors,
            )
            return False
        self.current = dynamic
        self.config.dynamic = dynamic
        log.info("reloaded {path}", path=path)
        for fname, key, why in not_built(None, dynamic):
            log.warn("{file}: {key} has no effect in this version: {why}", file=fname, key=key, why=why)
        for callback in list(self._subscribers):
            try:
                callback(dynamic)
            except Exception:
                log.failure("config subscriber {callback!r} failed", callback=callback)
        return True
