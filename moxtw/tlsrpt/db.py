"""Received SMTP TLS reports (RFC 8460), kept in ``data/tlsrpt.db``.

Like the queue (``moxtw.queue.db``), SQLite runs off the reactor thread: one writer
thread and one reader thread (``moxtw.store.worker``), WAL with ``synchronous=FULL``, so
the Deferred of ``add`` fires only once the report is on disk. A report received again
(same ``organization-name``, ``report-id`` and domain) is stored once.
"""

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet import defer, threads

from moxtw.store.worker import Worker
from moxtw.tlsrpt import schema
from moxtw.tlsrpt.parse import Report

DB_NAME = "tlsrpt.db"


def db_path(data_dir):
    return os.path.join(data_dir, DB_NAME)


def _unix(t):
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime; use an aware one (UTC)")
        return t.timestamp()
    return float(t)


def _from_unix(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc)


@dataclass(frozen=True)
class StoredReport:
    """A received report as stored. Times are aware datetimes in UTC."""

    id: int
    domain: str
    from_address: str
    org_name: str
    report_id: str
    begin: datetime
    end: datetime
    received: datetime
    report: Report


class ReportDB:
    """The received TLS reports of a data directory (``data/tlsrpt.db``). All methods
    return Deferreds; ``open()`` before use, ``close()`` at the end. ``clock`` (an
    ``IReactorTime``) gives the default received time."""

    def __init__(self, data_dir, reactor=None, clock=None):
        if reactor is None:
            from twisted.internet import reactor
        self.data_dir = data_dir
        self.path = db_path(data_dir)
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._writer = None
        self._reader = None

    def open(self):
        """Create or upgrade the database and start its threads. Deferred[self]."""
        if self._writer is not None:
            return defer.succeed(self)

        def opened(_):
            self._writer = Worker(self.path, self._reactor, "tlsrpt-w", writer=True)
            self._reader = Worker(self.path, self._reactor, "tlsrpt-r", writer=False)
            return self

        return threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._prepare).addCallback(opened)

    def _prepare(self):
        if not os.path.isdir(self.data_dir):
            os.makedirs(self.data_dir, exist_ok=True)
            schema.fsync_dir(os.path.dirname(os.path.abspath(self.data_dir)))
        conn = schema.connect(self.path)
        try:
            schema.upgrade(conn)
        finally:
            conn.close()

    def close(self):
        """Finish pending work and close the database. Deferred[None]."""
        if self._writer is None:
            return defer.succeed(None)
        workers = [self._writer.stop(), self._reader.stop()]
        self._writer = self._reader = None
        return defer.gatherResults(workers).addCallback(lambda _: None)

    def now(self):
        return datetime.fromtimestamp(self._clock.seconds(), timezone.utc)

    def _write(self, fn):
        if self._writer is None:
            return defer.fail(RuntimeError("tlsrpt.db is not open"))
        return self._writer.submit(lambda conn, ctx: fn(conn))

    def _read(self, fn):
        if self._reader is None:
            return defer.fail(RuntimeError("tlsrpt.db is not open"))
        return self._reader.submit(lambda conn, ctx: fn(conn))

    def add(self, report, from_address, domain, received=None):
        """Store a parsed report (:class:`Report`) received from ``from_address`` for
        ``domain``, at ``received`` (aware datetime; default now). Deferred[int]: the
        report's id, fired when it is durable; for a report already stored, the id of
        the stored copy."""
        try:
            row = (
                domain.strip().lower().rstrip("."),
                str(from_address),
                report.organization_name,
                report.report_id,
                int(_unix(report.date_range.start)),
                int(_unix(report.date_range.end)),
                _unix(received if received is not None else self.now()),
                json.dumps(report.to_json(), separators=(",", ":")),
            )
        except Exception:
            return defer.fail()

        def insert(conn):
            cur = conn.execute(
                "INSERT OR IGNORE INTO report (domain, from_address, org_name, report_id,"
                " range_begin, range_end, received, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            if cur.rowcount:
                return cur.lastrowid
            return conn.execute(
                "SELECT id FROM report WHERE org_name = ? AND report_id = ? AND domain = ?",
                (row[2], row[3], row[0])).fetchone()[0]

        return self._write(insert)

    def list(self, domain=None, start=None, end=None, limit=1000):
        """Reports whose date range overlaps [``start``, ``end``) (aware datetimes, either
        may be None), for ``domain`` if given, newest first, at most ``limit``.
        Deferred[list[StoredReport]]."""
        where, args = [], []
        if domain is not None:
            where.append("domain = ?")
            args.append(domain.strip().lower().rstrip("."))
        if start is not None:
            where.append("range_end >= ?")
            args.append(int(_unix(start)))
        if end is not None:
            where.append("range_begin < ?")
            args.append(int(_unix(end)))
        sql = "SELECT * FROM report"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY range_end DESC, id DESC LIMIT ?"
        args.append(int(limit))
        return self._read(lambda conn: [_stored(r) for r in conn.execute(sql, args)])

    def get(self, id):
        """The report with this id, or None. Deferred[StoredReport | None]."""
        def get(conn):
            r = conn.execute("SELECT * FROM report WHERE id = ?", (int(id),)).fetchone()
            return _stored(r) if r is not None else None

        return self._read(get)

    def remove(self, id):
        """Remove a report. Deferred[bool]: whether it existed."""
        return self._write(
            lambda conn: conn.execute("DELETE FROM report WHERE id = ?", (int(id),)).rowcount > 0)


def _stored(r):
    return StoredReport(
        id=r["id"], domain=r["domain"], from_address=r["from_address"],
        org_name=r["org_name"], report_id=r["report_id"],
        begin=_from_unix(r["range_begin"]), end=_from_unix(r["range_end"]),
        received=_from_unix(r["received"]), report=Report.from_json(json.loads(r["report"])),
    )
