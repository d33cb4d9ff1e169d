"""Received SMTP TLS reports (RFC 8460), kept in ``data/tlsrpt.db`` (see
``moxtw.reportdb``).

A report received again (same ``organization-name``, ``report-id`` and domain) is stored
once.
"""

import os

from moxtw.reportdb import ReportDB as _ReportDB, StoredReport
from moxtw.tlsrpt import schema
from moxtw.tlsrpt.parse import Report

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
