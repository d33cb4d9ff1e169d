"""The persistent outgoing queue: ``data/queue.db`` rows and ``data/queue/<base id>`` files.

A submission with several recipients becomes one row per recipient (each is delivered,
retried and failed on its own) and one message file shared by all of them, named by the
id of the first row (the base id). Durability follows the store (``moxtw.store.account``):
the message is written to ``queue/tmp/`` and fsynced off the reactor thread; in the
writer's transaction the rows are inserted and the file renamed to its final name; the
writer fsyncs the directory, then COMMITs (``synchronous=FULL``), and only then does the
Deferred of ``add`` fire. A file is removed after the COMMIT that deleted the last row
referring to it. A crash can therefore leave a file without rows (never a row without a
file); ``moxtw.queue.verify`` reports those as notes.
"""

import json
import os
import time
import uuid
from datetime import timezone

from twisted.internet import defer

from moxtw import durable
from moxtw.db import Database
from moxtw.queue import schema
from moxtw.queue.model import (
    DSN_NOTIFY_VALUES,
    DSN_RET_VALUES,
    EntryNotFound,
    QueueEntry,
    from_unix,
    select_entries,
    split_address,
    to_unix,
)

DB_NAME = "queue.db"
DIR_NAME = "queue"
STALE_TMP = 36 * 3600  # seconds after which an unacknowledged tmp file is removed at open
RESULTS_KEPT = 100  # attempt results kept per entry, newest last


def db_path(data_dir):
    return os.path.join(data_dir, DB_NAME)


def queue_dir(data_dir):
    return os.path.join(data_dir, DIR_NAME)


def tmp_dir(data_dir):
    return os.path.join(queue_dir(data_dir), "tmp")


def message_file(data_dir, base_id):
    return os.path.join(queue_dir(data_dir), str(base_id))


def prepare(data_dir, now=None):
    """Create directories and the database, upgrade its schema. Blocking; off the reactor."""
    for d in (data_dir, queue_dir(data_dir), tmp_dir(data_dir)):
        if not os.path.isdir(d):
            durable.make_dirs(d)
            schema.fsync_dir(os.path.dirname(os.path.abspath(d)))
    conn = schema.connect(db_path(data_dir))
    try:
        schema.upgrade(conn)
    finally:
        conn.close()
    # Only old tmp files go: another process (a CLI command) may be adding right now.
    cutoff = (now or time.time()) - STALE_TMP
    for entry in os.scandir(tmp_dir(data_dir)):
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass


def write_tmp(directory, data):
    """Write ``data`` to a new file in ``directory``, fsynced; return its path."""
    path = os.path.join(directory, f"{time.time_ns()}.{uuid.uuid4().hex}")
    durable.write_new(path, data)
    return path


class Queue(Database):
    """The outgoing queue of one data directory. All methods return Deferreds.

    ``clock`` (an ``IReactorTime``, default the reactor) gives "now" for queued and
    attempt times, so tests can share a ``task.Clock`` with ``QueueService``.
    """

    db_name = DB_NAME
    schema = schema
    thread_name = "queue"

    def __init__(self, data_dir, reactor=None, clock=None):
        super().__init__(data_dir, reactor=reactor, clock=clock)
        self.dir = queue_dir(data_dir)

    def _prepare(self):
        prepare(self.data_dir)

    def message_path(self, entry):
        """Path of an entry's message file (without ``msg_prefix``); files are immutable."""
        base_id = entry.base_id if isinstance(entry, QueueEntry) else int(entry)
        return message_file(self.data_dir, base_id)

    def open_message(self, entry):
        """Open an entry's message file for reading (binary). Prepend ``entry.msg_prefix``
        when sending."""
        return open(self.message_path(entry), "rb")

    # -- adding

    def add(self, msg, mailfrom, recipients, *, sender_account, smtputf8=False, has_8bit=False,
            requiretls=None, hold_until=None, message_id="", dsn_ret=None, dsn_envid=None,
            rcpt_dsn=None, is_dsn=False, transport="", subject="", msg_prefix=b"",
            dsn_utf8=None, is_dmarc_report=False, is_tls_report=False, max_attempts=0, hold=False):
        """Queue ``msg`` (bytes) from ``mailfrom`` ("" is the null reverse-path) to each of
        ``recipients`` (``localpart@domain``). Deferred[list[int]]: the new entry ids, one
        per recipient in order, fired once the file and the rows are durable.

        ``hold_until`` (aware datetime) is RFC 4865 FUTURERELEASE: no attempt before it.
        ``hold``: True to put all recipients on hold, or a function of a recipient
        address returning whether that one is held (hold rules).
        ``dsn_ret``/``dsn_envid`` are RFC 3461 RET and ENVID; ``rcpt_dsn`` maps a recipient
        to ``{"notify": [...] or "A,B", "orcpt": "rfc822;..."}`` (RFC 3461 NOTIFY, ORCPT).
        """
        try:
            rows = self._rows(msg, mailfrom, recipients, sender_account, smtputf8, has_8bit,
                              requiretls, hold_until, message_id, dsn_ret, dsn_envid, rcpt_dsn,
                              is_dsn, transport, subject, msg_prefix, dsn_utf8,
                              is_dmarc_report, is_tls_report, max_attempts, hold)
        except Exception:
            return defer.fail()
        return defer.Deferred.fromCoroutine(self._add(bytes(msg), rows))

    async def _add(self, msg, rows):
        tmp_path = await self._in_thread(self._write_tmp, tmp_dir(self.data_dir), msg)
        try:
            return await self._write_op(lambda conn, ctx: self._insert(conn, ctx, tmp_path, rows))
        finally:
            # After a successful COMMIT the file was renamed away; otherwise it is removed.
            _unlink(tmp_path)

    _write_tmp = staticmethod(write_tmp)

    def _rows(self, msg, mailfrom, recipients, sender_account, smtputf8, has_8bit, requiretls,
              hold_until, message_id, dsn_ret, dsn_envid, rcpt_dsn, is_dsn, transport, subject,
              msg_prefix, dsn_utf8, is_dmarc_report, is_tls_report, max_attempts, hold=False):
        """Validate the arguments and build the column values of each row."""
        if not recipients:
            raise ValueError("no recipients")
        s_lp, s_dom = split_address(mailfrom)
        now = to_unix(self.now())
        futurerelease = ""
        next_attempt = now
        if hold_until is not None:
            # RFC 4865 3: the message is held until the release time, then sent as usual.
            next_attempt = max(now, to_unix(hold_until))
            futurerelease = "until;" + hold_until.astimezone(timezone.utc).isoformat()
        if dsn_ret is not None and dsn_ret.upper() not in DSN_RET_VALUES:
            raise ValueError(f"invalid DSN RET {dsn_ret!r}")  # RFC 3461 4.3
        rcpt_dsn = rcpt_dsn or {}
        common = {
            "queued": now,
            "sender_account": sender_account or "",
            "sender_localpart": s_lp,
            "sender_domain": s_dom,
            "next_attempt": next_attempt,
            "size": len(msg_prefix) + len(msg),
            "message_id": message_id,
            "subject": subject,
            "msg_prefix": bytes(msg_prefix),
            "dsn_utf8": bytes(dsn_utf8) if dsn_utf8 is not None else None,
            "has_8bit": int(has_8bit),
            "smtputf8": int(smtputf8),
            "is_dmarc_report": int(is_dmarc_report),
            "is_tls_report": int(is_tls_report),
            "is_dsn": int(is_dsn),
            "require_tls": None if requiretls is None else int(bool(requiretls)),
            "futurerelease_request": futurerelease,
            "dsn_ret": (dsn_ret or "").upper(),
            "dsn_envid": dsn_envid or "",
            "transport": transport,
            "max_attempts": int(max_attempts),
        }
        rows = []
        for rcpt in recipients:
            r_lp, r_dom = split_address(rcpt)
            if not r_dom:
                raise ValueError("empty recipient")
            notify, orcpt = _rcpt_dsn(rcpt_dsn.get(rcpt))
            held = hold(rcpt) if callable(hold) else bool(hold)
            rows.append(dict(common, recipient_localpart=r_lp, recipient_domain=r_dom,
                             dsn_notify=notify, dsn_orcpt=orcpt, hold=int(held)))
        return rows

    def _insert(self, conn, ctx, tmp_path, rows):
        ids = []
        names = ", ".join(rows[0]) + ", base_id"
        marks = ", ".join("?" for _ in rows[0]) + ", ?"
        for row in rows:
            values = list(row.values()) + [ids[0] if ids else 0]
            ids.append(conn.execute(f"INSERT INTO msg ({names}) VALUES ({marks})", values).lastrowid)
        conn.execute("UPDATE msg SET base_id = ? WHERE id = ?", (ids[0], ids[0]))
        self._place_file(ctx, tmp_path, ids[0])
        return ids

    def _place_file(self, ctx, tmp_path, base_id):
        # Inside the transaction: the file gets its final name before COMMIT and the worker
        # fsyncs the directory before COMMIT too. A crash in between leaves a file without
        # rows; a file left by such a crash under the same (never committed) id is replaced.
        final = message_file(self.data_dir, base_id)
        os.rename(tmp_path, final)
        ctx.sync_dirs.add(self.dir)
        ctx.on_rollback.append(lambda: _unlink(final))

    # -- reading

    def list(self, account=None, sender=None, recipient=None, hold=None, next_before=None,
             next_after=None):
        """Deferred[list[QueueEntry]] matching all given filters, by id; see
        ``moxtw.queue.model.select_entries``."""
        return self._read(lambda conn: select_entries(
            conn, account=account, sender=sender, recipient=recipient, hold=hold,
            next_before=next_before, next_after=next_after))

    def get(self, id):
        """Deferred[QueueEntry]; fails with EntryNotFound."""
        return self._read(lambda conn: _get(conn, id))

    def due(self, now, limit=100):
        """Deferred[list[QueueEntry]]: entries not held whose next attempt is at or before
        ``now``, earliest first."""
        def q(conn):
            rows = conn.execute(
                "SELECT * FROM msg WHERE hold = 0 AND next_attempt <= ?"
                " ORDER BY next_attempt, id LIMIT ?",
                (to_unix(now), int(limit)),
            )
            return [QueueEntry.from_row(r) for r in rows]

        return self._read(q)

    def stats(self):
        """Deferred[(count, oldest queued datetime or None)] over all entries."""
        def q(conn):
            n, oldest = conn.execute("SELECT COUNT(*), MIN(queued) FROM msg").fetchone()
            return n, (from_unix(oldest) if oldest is not None else None)

        return self._read(q)

    # -- changing

    def hold(self, ids):
        """Stop delivery attempts for ``ids``; Deferred[int]: entries changed."""
        return self._update(ids, "hold = 1", ())

    def unhold(self, ids):
        """Resume delivery attempts (at their next_attempt); Deferred[int]."""
        return self._update(ids, "hold = 0", ())

    def schedule(self, ids, when):
        """Set the next attempt of ``ids`` to ``when`` (aware datetime); Deferred[int]."""
        try:
            ts = to_unix(when)
        except ValueError:
            return defer.fail()
        return self._update(ids, "next_attempt = ?", (ts,))

    def _update(self, ids, assignment, args):
        ids = [int(i) for i in ids]

        def op(conn, ctx):
            n = 0
            for i in ids:
                n += conn.execute(f"UPDATE msg SET {assignment} WHERE id = ?", (*args, i)).rowcount
            return n

        return self._write_op(op)

    def drop(self, ids):
        """Remove entries without delivering them; Deferred[int]: entries removed."""
        ids = [int(i) for i in ids]
        return self._write_op(lambda conn, ctx: self._remove(conn, ctx, ids))

    def _remove(self, conn, ctx, ids):
        removed = 0
        for i in ids:
            row = conn.execute("DELETE FROM msg WHERE id = ? RETURNING base_id", (i,)).fetchone()
            if row is None:
                continue
            removed += 1
            base_id = row[0]
            if conn.execute("SELECT 1 FROM msg WHERE base_id = ? LIMIT 1", (base_id,)).fetchone() is None:
                path = message_file(self.data_dir, base_id)
                ctx.after_commit.append(lambda path=path: _unlink(path))
        return removed

    def record_attempt(self, id, *, ok, permanent, error, next_attempt=None, code=0, secode=""):
        """Record a delivery attempt of entry ``id``.

        Delivered (``ok``) or failed permanently: the entry is removed (its file once no
        entry uses it) and the Deferred fires with None. Temporary failure: attempts is
        incremented, the error and the attempt appended to the results, the next attempt
        set to ``next_attempt`` (default: now); fires with the updated QueueEntry.
        """
        now = self.now()
        result = {
            "start": now.isoformat(),
            "success": bool(ok),
            "permanent": bool(permanent),
            "code": int(code),
            "secode": secode,
            "error": error,
        }

        def op(conn, ctx):
            nxt = to_unix(next_attempt if next_attempt is not None else now)
            row = conn.execute("SELECT results FROM msg WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise EntryNotFound(id)
            if ok or permanent:
                self._remove(conn, ctx, [id])
                return None
            results = (json.loads(row["results"]) + [result])[-RESULTS_KEPT:]
            conn.execute(
                "UPDATE msg SET attempts = attempts + 1, last_attempt = ?, next_attempt = ?,"
                " last_error = ?, results = ? WHERE id = ?",
                (to_unix(now), nxt, error, json.dumps(results), id),
            )
            return _get(conn, id)

        return self._write_op(op)


def _get(conn, id):
    row = conn.execute("SELECT * FROM msg WHERE id = ?", (int(id),)).fetchone()
    if row is None:
        raise EntryNotFound(id)
    return QueueEntry.from_row(row)


def _rcpt_dsn(params):
    """(notify, orcpt) column values from one recipient's DSN parameters (RFC 3461 4.1, 4.2)."""
    if not params:
        return "", ""
    notify = params.get("notify") or ()
    if isinstance(notify, str):
        notify = notify.split(",")
    notify = [v.strip().upper() for v in notify if v.strip()]
    bad = [v for v in notify if v not in DSN_NOTIFY_VALUES]
    if bad:
        raise ValueError(f"invalid DSN NOTIFY value {bad[0]!r}")
    if "NEVER" in notify and len(notify) > 1:
        raise ValueError("DSN NOTIFY=NEVER cannot be combined")  # RFC 3461 4.1
    return ",".join(notify), params.get("orcpt") or ""


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
