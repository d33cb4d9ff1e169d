"""Offline queue commands (``moxtw queue ...``), reading ``queue.db`` directly.

They open the database read-only, so they work whether or not a server is running (WAL
lets readers and the server's writer proceed together).
"""

import os
from datetime import timezone

from moxtw.queue import db as qdb
from moxtw.queue import schema
from moxtw.queue.model import select_entries
from moxtw.queue.verify import open_readonly

COLUMNS = ("id", "queued", "from", "to", "attempts", "next attempt", "hold", "last error")


def list_command(data_dir, out, **filters):
    """Print the queue entries matching ``filters`` (those of ``Queue.list``) as a table
    to ``out``. Returns the exit status."""
    path = qdb.db_path(data_dir)
    if not os.path.exists(path):
        out.write("queue is empty\n")
        return 0
    conn = open_readonly(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != schema.LATEST:
            out.write(f"queue database schema version {version}, this moxtw reads {schema.LATEST}"
                      " (start the server once to upgrade)\n")
            return 1
        entries = select_entries(conn, **filters)
    finally:
        conn.close()
    if not entries:
        out.write("queue is empty\n" if not filters else "no matching queue entries\n")
        return 0
    rows = [
        (
            str(e.id),
            _time(e.queued),
            e.sender or "<>",
            e.recipient,
            str(e.attempts),
            _time(e.next_attempt),
            "yes" if e.hold else "no",
            " ".join(e.last_error.split()),  # one line per entry
        )
        for e in entries
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    for r in [COLUMNS, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
    return 0


def _time(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
