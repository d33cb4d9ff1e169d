"""Received DMARC aggregate reports, kept in ``data/dmarc.db`` (see ``moxtw.reports.received``).

A report received again (same submitter ``org_name``, ``report_id`` and domain, as
reporters resend) is stored once.
"""

import os

from moxtw.reports.dmarc import schema
from moxtw.reports.dmarc.parse import Feedback
from moxtw.reports.received import Database
from moxtw.reports.received import ReportDB as _ReportDB
from moxtw.reports.received import StoredReport, from_unix, to_unix

DB_NAME = "dmarc.db"

__all__ = ["DB_NAME", "Database", "ReportDB", "StoredReport", "db_path", "from_unix", "to_unix"]


def db_path(data_dir):
    return os.path.join(data_dir, DB_NAME)


class ReportDB(_ReportDB):
    """The received DMARC aggregate reports of a data directory (``data/dmarc.db``)."""

    db_name = DB_NAME
    schema = schema
    thread_name = "dmarcrpt"

    def report_fields(self, report):
        md = report.report_metadata
        return md.org_name, md.report_id, md.date_range.begin, md.date_range.end

    def load_report(self, data):
        return Feedback.from_json(data)
