"""Check the queue's message files against its rows (after a crash, or any time).

*Errors* are states the queue never produces on its own: a row whose message file is
missing or has the wrong size, a damaged database. *Notes* are leftovers of interrupted,
never-acknowledged operations: files in ``queue/tmp/``, message files no row refers to
(an ``add`` killed before COMMIT, or a removal killed between COMMIT and unlink). They are
safe to remove with ``fix=True``. Only reads the database (it may be in use by a server).
"""

import os
import re
import sqlite3
from dataclasses import dataclass

from moxtw.db.findings import Findings
from moxtw.queue import db as qdb
from moxtw.queue import schema

_NUMERIC = re.compile(r"^[1-9][0-9]*$")


@dataclass
class Report(Findings):
    entries: int = 0


def open_readonly(path):
    """Open ``queue.db`` read-only; a running server may keep writing (WAL)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def verify_queue(data_dir, fix=False):
    """Verify the queue of a data directory. Blocking: run off the reactor thread.

    With a server running, findings are checked against a fresh read so completed
    deliveries are not reported; run ``fix`` with the server stopped all the same."""
    report = Report()
    path = qdb.db_path(data_dir)
    qdir = qdb.queue_dir(data_dir)
    # Files are listed before rows are read: an add renames its file before its COMMIT, so
    # this order sees its row whenever it sees its file as of a committed add.
    files = [f for f in _listdir(qdir) if f != "tmp"]
    tmp = qdb.tmp_dir(data_dir)
    tmp_files = _listdir(tmp)
    base_ids = set()
    if os.path.exists(path):
        conn = open_readonly(path)
        try:
            if not _verify_rows(conn, data_dir, report, base_ids):
                return report
        finally:
            conn.close()
    elif files:
        report.notes.append(f"{path}: no queue database; all files below are leftovers")

    for fname in files:
        fpath = os.path.join(qdir, fname)
        if not _NUMERIC.match(fname) or int(fname) not in base_ids:
            report.notes.append(f"{fpath}: file without queue entry (unacknowledged add or interrupted removal)")
            if fix and os.path.isfile(fpath):
                _unlink(fpath)
                report.fixed.append(f"removed {fpath}")
    for fname in tmp_files:
        fpath = os.path.join(tmp, fname)
        report.notes.append(f"{fpath}: temporary file of an unacknowledged add")
        if fix:
            _unlink(fpath)
            report.fixed.append(f"removed {fpath}")
    return report


def _verify_rows(conn, data_dir, report, base_ids):
    check = conn.execute("PRAGMA integrity_check").fetchall()
    if [tuple(r) for r in check] != [("ok",)]:
        report.errors.append("queue database integrity check: " + "; ".join(r[0] for r in check))
        return False
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > schema.LATEST:
        report.errors.append(f"queue schema version {version} is newer than this moxtw ({schema.LATEST})")
        return False
    if version < schema.LATEST:
        report.notes.append(f"queue schema version {version}, current is {schema.LATEST}; opening upgrades it")
        if version < 1:
            return True
    rows = conn.execute("SELECT id, base_id, size, length(msg_prefix) AS prefix FROM msg").fetchall()
    report.entries = len(rows)
    sizes = {}
    for r in rows:
        base_ids.add(r["base_id"])
        where = f"queue entry {r['id']} (base {r['base_id']})"
        fpath = qdb.message_file(data_dir, r["base_id"])
        if r["base_id"] not in sizes:
            try:
                sizes[r["base_id"]] = os.stat(fpath).st_size
            except FileNotFoundError:
                sizes[r["base_id"]] = None
        size = sizes[r["base_id"]]
        if size is None and _still_queued(conn, r["id"]):
            report.errors.append(f"{where}: message file {fpath} missing")
        elif size + r["prefix"] != r["size"]:
            report.errors.append(
                f"{where}: message file is {size} bytes plus {r['prefix']} prefix, entry says {r['size']}"
            )
    return True


def _still_queued(conn, entry_id):
    # The row may have been removed (and its file with it) since the rows were read.
    return conn.execute("SELECT 1 FROM msg WHERE id = ?", (entry_id,)).fetchone() is not None


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
