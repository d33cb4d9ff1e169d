"""Received SMTP TLS reports (RFC 8460), kept in ``data/tlsrpt.db`` (see
``moxtw.reports.received``).

A report received again (same ``organization-name``, ``report-id`` and domain) is stored
once.
"""

import os

from moxtw.reports.received import ReportDB as _ReportDB
from moxtw.reports.received import StoredReport
from moxtw.reports.tls import results as _results
from moxtw.reports.tls import schema
from moxtw.reports.tls.parse import Report

DB_NAME = "tlsrpt.db"

__all__ = ["DB_NAME", "ReportDB", "StoredReport", "db_path"]


def db_path(data_dir):
    return os.path.join(data_dir, DB_NAME)


class ReportDB(_ReportDB):
    """The received TLS reports of a data directory (``data/tlsrpt.db``)."""

    db_name = DB_NAME
    schema = schema
    thread_name = "tlsrpt"

    def report_fields(self, report):
        return report.organization_name, report.report_id, report.date_range.start, report.date_range.end

    def load_report(self, data):
        return Report.from_json(data)

    # -- results of our outgoing connections (moxtw.reports.tls.results)

    def add_results(self, results, now=None):
        """Count TLSResults of outgoing connections into their UTC day. Deferred."""
        from datetime import datetime, timezone

        now = self._clock.seconds() if now is None else now
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        results = list(results)
        return self._write(lambda conn: _results.add_results(conn, results, day, now))

    def results(self, before_day=None, policy_domain=None):
        """Result rows (dicts), of days before ``before_day`` (YYYY-MM-DD) when given."""
        sql, args = "SELECT * FROM result WHERE 1 = 1", []
        if before_day is not None:
            sql += " AND day < ?"
            args.append(before_day)
        if policy_domain is not None:
            sql += " AND policy_domain = ?"
            args.append(policy_domain)
        sql += " ORDER BY day, policy_domain, is_host, id"
        return self._read(lambda conn: [dict(r) for r in conn.execute(sql, args)])

    def remove_results(self, ids):
        ids = list(ids)

        def remove(conn):
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                conn.execute(f"DELETE FROM result WHERE id IN ({','.join('?' * len(chunk))})", chunk)

        return self._write(remove)
