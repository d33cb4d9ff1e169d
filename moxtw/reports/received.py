"""SQLite databases of received reports (DMARC aggregate, TLS): the shared part.

Each is a ``moxtw.db.Database`` (a writer and a reader thread, WAL with
``synchronous=FULL``), so the Deferred of ``add`` fires only once the report is on disk. A report received again
(same submitter, report id and domain, as reporters resend) is stored once.
"""

import abc
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet import defer

from moxtw.db import Database


def to_unix(t):
    """Unix seconds of an aware datetime (or a number, returned as float)."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime; use an aware one (UTC)")
        return t.timestamp()
    return float(t)


def from_unix(seconds):
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
    report: object  # the parsed report (moxtw.reports.dmarc.parse.Feedback, moxtw.reports.tls.parse.Report)


class ReportDB(Database, abc.ABC):
    """Received reports of one kind. Subclasses set ``db_name``, ``schema``,
    ``thread_name`` and say how to read a report: :meth:`report_fields` and
    :meth:`load_report`. ``open()`` before use, ``close()`` at the end; ``clock`` (an
    ``IReactorTime``) gives the default received time."""

    @abc.abstractmethod
    def report_fields(self, report):
        """(submitter, report id, range begin, range end) of a parsed report; the range
        as Unix seconds or aware datetimes."""

    @abc.abstractmethod
    def load_report(self, data):
        """The parsed report from its stored JSON value."""

    def add(self, report, from_address, domain, received=None):
        """Store a parsed report received from ``from_address`` for
        ``domain``, at ``received`` (aware datetime; default now). Deferred[int]: the
        report's id, fired when it is durable; for a report already stored, the id of
        the stored copy."""
        try:
            org, report_id, begin, end = self.report_fields(report)
            row = (
                domain.strip().lower().rstrip("."),
                str(from_address),
                org,
                report_id,
                int(to_unix(begin)),
                int(to_unix(end)),
                to_unix(received if received is not None else self.now()),
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
            args.append(int(to_unix(start)))
        if end is not None:
            where.append("range_begin < ?")
            args.append(int(to_unix(end)))
        sql = "SELECT * FROM report"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY range_end DESC, id DESC LIMIT ?"
        args.append(int(limit))
        return self._read(lambda conn: [self._stored(r) for r in conn.execute(sql, args)])

    def domains(self):
        """Per domain the reports are for: ``(domain, reports, newest range end)``, by
        domain. Deferred[list[tuple[str, int, datetime]]]."""
        def q(conn):
            rows = conn.execute("SELECT domain, COUNT(*), MAX(range_end) FROM report GROUP BY domain"
                                " ORDER BY domain")
            return [(d, n, from_unix(end)) for d, n, end in rows]

        return self._read(q)

    def get(self, id):
        """The report with this id, or None. Deferred[StoredReport | None]."""
        def get(conn):
            r = conn.execute("SELECT * FROM report WHERE id = ?", (int(id),)).fetchone()
            return self._stored(r) if r is not None else None

        return self._read(get)

    def remove(self, id):
        """Remove a report. Deferred[bool]: whether it existed."""
        return self._write(
            lambda conn: conn.execute("DELETE FROM report WHERE id = ?", (int(id),)).rowcount > 0)

    def _stored(self, r):
        return StoredReport(
            id=r["id"], domain=r["domain"], from_address=r["from_address"],
            org_name=r["org_name"], report_id=r["report_id"],
            begin=from_unix(r["range_begin"]), end=from_unix(r["range_end"]),
            received=from_unix(r["received"]), report=self.load_report(json.loads(r["report"])),
        )
