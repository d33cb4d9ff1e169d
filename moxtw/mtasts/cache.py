"""The MTA-STS policies of recipient domains, cached in ``data/mtasts.db`` (RFC 8461 5.1).

:meth:`PolicyCache.get` gives the policy to apply to a delivery attempt: the cached one
while its ``max_age`` lasts and the ``_mta-sts`` record's id is unchanged, else a fresh
fetch; when the record is missing or the fetch fails, an unexpired cached policy is used
(RFC 8461 5.1, 3.3), so an attacker blocking DNS or HTTPS cannot downgrade a domain we
have seen a policy for. :class:`RefreshService` refetches, once a day, the policies used
in the last 180 days (RFC 8461 10.2: refreshed ahead of expiry), and forgets policies
expired and unused.
"""

import json
from dataclasses import dataclass

from twisted.application import internet
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.logger import Logger

from moxtw import dns
from moxtw.db import Database
from moxtw.mtasts import schema
from moxtw.mtasts.client import FetchedPolicy, PolicyError, RecordError, fetch_policy, lookup_record

log = Logger(namespace="moxtw.mtasts")

DB_NAME = "mtasts.db"
REFRESH_INTERVAL = 24 * 3600.0
REFRESH_USED_WITHIN = 180 * 24 * 3600.0
FORGET_AFTER = 7 * 24 * 3600.0  # expired this long and unused: removed


@dataclass(frozen=True)
class Lookup:
    """The outcome for one delivery attempt: ``policy`` to apply (None: no policy, or
    mode none), ``policy_id``, ``cached`` when it came from the cache, and ``error`` (a
    RecordError or PolicyError) for TLS reports when the record or fetch failed."""

    policy: FetchedPolicy | None
    policy_id: str = ""
    cached: bool = False
    error: Exception | None = None


class PolicyCache(Database):
    """``fetch(domain) -> Deferred[FetchedPolicy]`` and ``resolver`` do the network
    steps (:func:`moxtw.mtasts.client.fetch_policy` by default)."""

    db_name = DB_NAME
    schema = schema
    thread_name = "mtasts"

    def __init__(self, data_dir, resolver, reactor=None, clock=None, trust=None, https_port=None):
        super().__init__(data_dir, reactor=reactor, clock=clock)
        self.resolver = resolver
        self.trust = trust
        self.https_port = https_port

    def open(self):
        """Open once; concurrent callers share the opening (delivery may ask before the
        service's start finished)."""
        if self._writer is not None:
            return defer.succeed(self)
        if getattr(self, "_opening", None) is None:
            self._opening = super().open()

            def done(result):
                self._opening = None
                return result

            self._opening.addBoth(done)
        d = defer.Deferred()
        self._opening.addBoth(lambda r: (d.callback(r) if not isinstance(r, Failure) else d.errback(r), r)[1])
        return d

    def fetch(self, domain):
        return fetch_policy(self._reactor, self.resolver, domain, trust=self.trust, port=self.https_port)

    def _row(self, domain):
        def read(conn):
            return conn.execute("SELECT * FROM policy WHERE domain = ?", (domain,)).fetchone()

        return self._read(read)

    @staticmethod
    def _policy(row):
        return FetchedPolicy(row["mode"], tuple(json.loads(row["mx"])), row["max_age"], row["text"])

    def _store(self, domain, policy_id, policy, now):
        def write(conn):
            conn.execute(
                "INSERT INTO policy (domain, policy_id, mode, mx, max_age, text, inserted, valid_end,"
                " last_update, last_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode,"
                " mx = excluded.mx, max_age = excluded.max_age, text = excluded.text,"
                " valid_end = excluded.valid_end, last_update = excluded.last_update",
                (domain, policy_id, policy.mode, json.dumps(list(policy.mx)), policy.max_age, policy.text,
                 now, now + policy.max_age, now, now))

        return self._write(write)

    def _touch(self, domain, now):
        return self._write(lambda conn: conn.execute(
            "UPDATE policy SET last_use = ? WHERE domain = ?", (now, domain)))

    async def get(self, domain):
        """The :class:`Lookup` for a delivery attempt to ``domain``. Never raises for
        network or policy errors: they come back in ``error``."""
        domain = dns.normalize(domain)
        await self.open()
        now = self._clock.seconds()
        row = await self._row(domain)
        cached = self._policy(row) if row is not None and row["valid_end"] > now else None
        try:
            policy_id = await lookup_record(self.resolver, domain)
        except RecordError as e:
            if cached is not None:
                # RFC 8461 5.1: without a valid record, a cached policy is used until it
                # expires.
                await self._touch(domain, now)
                return Lookup(cached, row["policy_id"], True, e if e.temporary else None)
            return Lookup(None, error=e if e.temporary else None)
        if cached is not None and row["policy_id"] == policy_id:
            await self._touch(domain, now)
            return Lookup(cached, policy_id, True)
        try:
            policy = await self.fetch(domain)
        except PolicyError as e:
            log.info("fetching MTA-STS policy of {domain} failed: {error}", domain=domain, error=str(e))
            if cached is not None:
                # RFC 8461 3.3: a failed fetch keeps the cached policy in force.
                await self._touch(domain, now)
                return Lookup(cached, row["policy_id"], True, e)
            return Lookup(None, policy_id, error=e)
        await self._store(domain, policy_id, policy, now)
        log.info("fetched MTA-STS policy of {domain}: mode {mode}, id {id}", domain=domain,
                 mode=policy.mode, id=policy_id)
        return Lookup(policy, policy_id, False)

    def list(self):
        return self._read(lambda conn: conn.execute("SELECT * FROM policy ORDER BY domain").fetchall())

    async def refresh(self):
        """Refetch the policies used recently whose last fetch is older than a day, and
        remove long-expired unused ones. Returns the number refreshed."""
        now = self._clock.seconds()

        def due(conn):
            return conn.execute(
                "SELECT domain, policy_id FROM policy WHERE last_use > ? AND last_update < ?",
                (now - REFRESH_USED_WITHIN, now - REFRESH_INTERVAL / 2)).fetchall()

        refreshed = 0
        for row in await self._read(due):
            domain = row["domain"]
            try:
                policy_id = await lookup_record(self.resolver, domain)
                policy = await self.fetch(domain)
            except (RecordError, PolicyError) as e:
                log.info("refreshing MTA-STS policy of {domain} failed: {error}", domain=domain, error=str(e))
                continue
            await self._store(domain, policy_id, policy, now)
            refreshed += 1
        await self._write(lambda conn: conn.execute(
            "DELETE FROM policy WHERE valid_end < ? AND last_use < ?", (now - FORGET_AFTER, now - FORGET_AFTER)))
        return refreshed


class RefreshService(internet.TimerService):
    """Opens the cache, runs :meth:`PolicyCache.refresh` every ``interval`` seconds (a
    day, the first time at start), and closes the cache at stop."""

    def __init__(self, cache, interval=REFRESH_INTERVAL, clock=None):
        super().__init__(interval, self._refresh)
        self.cache = cache
        if clock is not None:
            self.clock = clock

    async def _run(self):
        await self.cache.open()
        await self.cache.refresh()

    def _refresh(self):
        d = defer.Deferred.fromCoroutine(self._run())
        d.addErrback(lambda f: log.failure("refreshing MTA-STS policies", f))
        return d

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.cache.close()


__all__ = ["DB_NAME", "Lookup", "PolicyCache", "RefreshService"]
