"""Reuse of outgoing SMTP connections: messages for the same destination go over one
connection in sequence (RSET between, RFC 5321 4.1.1.5), so bulk sending is not
throttled by the receiver's limits on new connections per IP.

A destination is a key chosen by the caller (``moxtw.queue.outbound``: the MX host, IP,
port, TLS policy and transport); connections of different keys are never shared. At most
``per_key`` connections per key are open at once (further deliveries wait for one to
become free), a connection carries at most ``max_messages`` messages and lives at most
``max_age`` seconds, and an idle one is closed after ``idle_timeout`` seconds.
"""

from collections import deque

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.smtpclient.client import SMTPClientError, send_next

log = Logger(namespace="moxtw.smtpclient")

IDLE_TIMEOUT = 10.0
MAX_MESSAGES = 50
MAX_AGE = 300.0
PER_KEY = 3


class _Idle:
    def __init__(self, connection, opened, timer):
        self.connection, self.opened, self.timer = connection, opened, timer


class ConnectionPool:
    def __init__(self, reactor=None, idle_timeout=None, max_messages=None, max_age=None, per_key=None):
        # Defaults read here, not bound at import: bench/queue.py changes them.
        self.reactor = default_reactor(reactor)
        self.idle_timeout = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.max_messages = MAX_MESSAGES if max_messages is None else max_messages
        self.max_age = MAX_AGE if max_age is None else max_age
        self.per_key = PER_KEY if per_key is None else per_key
        self._idle = {}  # key -> [_Idle]
        self._opened = {}  # connection -> time opened
        self._active = {}  # key -> connections in use or being made
        self._waiters = {}  # key -> deque of Deferreds waiting for a slot
        self.connections_opened = 0
        self.closed = False

    async def _slot(self, key):
        while self._active.get(key, 0) >= self.per_key:
            d = defer.Deferred()
            self._waiters.setdefault(key, deque()).append(d)
            await d
        self._active[key] = self._active.get(key, 0) + 1

    def _release(self, key):
        self._active[key] -= 1
        if not self._active[key]:
            del self._active[key]
        waiters = self._waiters.get(key)
        while waiters:
            d = waiters.popleft()
            if not waiters:
                del self._waiters[key]  # before the callback, which may run other deliveries
            if not d.called:  # a cancelled waiter does not use up the wake-up
                d.callback(None)
                break

    def _take(self, key):
        idle = self._idle.get(key)
        while idle:
            entry = idle.pop()
            if entry.timer.active():
                entry.timer.cancel()
            if not idle:
                del self._idle[key]
            if not entry.connection._lost and entry.connection.idle:
                return entry.connection
            self._forget(entry.connection)  # closed by the server while idle
            idle = self._idle.get(key)
        return None

    def _keep(self, key, connection):
        """Put a connection back as idle, or close it when it has done its share."""
        opened = self._opened.get(connection, self.reactor.seconds())
        if (self.closed or connection is None or connection.messages >= self.max_messages
                or self.reactor.seconds() - opened >= self.max_age):
            self._forget(connection)
            if connection is not None:
                connection.close()
            return
        entry = _Idle(connection, opened, None)
        entry.timer = self.reactor.callLater(self.idle_timeout, self._expire, key, entry)
        self._idle.setdefault(key, []).append(entry)

    def _expire(self, key, entry):
        idle = self._idle.get(key, [])
        if entry in idle:
            idle.remove(entry)
            if not idle:
                del self._idle[key]
        self._forget(entry.connection)
        entry.connection.close()

    def _forget(self, connection):
        self._opened.pop(connection, None)

    async def deliver(self, key, fresh, message):
        """Deliver ``message`` (the keyword arguments of
        :func:`moxtw.smtpclient.client.send_next`) on an idle connection of ``key``, or
        with ``fresh()`` (a Deferred of a ``deliver(..., reuse=True)`` Result) on a new
        one. Returns ``(Result, reused)``."""
        await self._slot(key)
        try:
            while True:
                connection = self._take(key)
                if connection is None:
                    break
                try:
                    result = await send_next(connection, **message)
                except SMTPClientError as e:
                    if connection.idle and not connection._lost:
                        # Refused before anything was sent (the message's own checks):
                        # the connection is still good.
                        self._keep(key, connection)
                        raise
                    self._forget(connection)
                    if e.stage == "reuse" or (e.stage == "mail" and (e.code is None or e.code == 421)):
                        # Closed meanwhile, or the server ends the connection (421, RFC
                        # 5321 3.8) before the message's data: a new connection.
                        continue
                    raise
                except Exception:
                    if connection.idle and not connection._lost:
                        self._keep(key, connection)
                    else:
                        self._forget(connection)
                    raise
                self._keep(key, connection)
                return result, True
            result = await fresh()
            self.connections_opened += 1
            if result.connection is not None:
                self._opened[result.connection] = self.reactor.seconds()
                self._keep(key, result.connection)
            return result, False
        finally:
            self._release(key)

    def close(self):
        """Close every idle connection; connections in use close after their message."""
        self.closed = True
        for key in list(self._idle):
            for entry in self._idle.pop(key):
                if entry.timer.active():
                    entry.timer.cancel()
                entry.connection.close()
        self._opened.clear()


__all__ = ["ConnectionPool", "PoolService"]


class PoolService(service.Service):
    """Closes the pool's idle connections when the server stops."""

    def __init__(self, pool):
        self.pool = pool

    def stopService(self):
        super().stopService()
        self.pool.close()
