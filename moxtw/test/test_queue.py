"""Tests for moxtw.queue's persistent part: Queue, the schema, verify and the list command."""

import io
import os
import sqlite3
from datetime import datetime, timedelta, timezone

from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw.queue import EntryNotFound, Queue, QueueEntry
from moxtw.queue import cli as qcli
from moxtw.queue import db as qdb
from moxtw.queue import schema
from moxtw.queue.verify import verify_queue
from moxtw.smtp.address import AddressError

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z; the tests' clock starts here
NOW = datetime.fromtimestamp(T0, timezone.utc)


def make_message(subject="Hello", body="Hi there.\r\n"):
    return (
        "From: Mjl <mjl@example.org>\r\n"
        "To: Bob <bob@example.com>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{os.urandom(6).hex()}@example.org>\r\n"
        f"\r\n{body}"
    ).encode()


def queue_files(data_dir):
    qdir = qdb.queue_dir(data_dir)
    return sorted(f for f in os.listdir(qdir) if f != "tmp"), sorted(os.listdir(qdb.tmp_dir(data_dir)))


class QueueTestBase(unittest.TestCase):
    queue_class = Queue

    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.queue = self.queue_class(self.data_dir, clock=self.clock)
        yield self.queue.open()
        self.addCleanup(self.queue.close)

    def add(self, recipients=("bob@example.com",), mailfrom="mjl@example.org", msg=None, **kw):
        kw.setdefault("sender_account", "mjl")
        return self.queue.add(msg or make_message(), mailfrom, list(recipients), **kw)


class AddTests(QueueTestBase):
    @defer.inlineCallbacks
    def test_add_get(self):
        msg = make_message()
        ids = yield self.add(
            ["bob@example.com", "Alice@EXAMPLE.net", "user@xn--bcher-kva.example"],
            msg=msg,
            message_id="<x@example.org>",
            subject="Hello",
            msg_prefix=b"DKIM-Signature: v=1\r\n",
            has_8bit=True,
            smtputf8=True,
        )
        self.assertEqual(len(ids), 3)
        self.assertEqual(ids, sorted(ids))
        entries = yield defer.gatherResults([self.queue.get(i) for i in ids])
        e = entries[0]
        self.assertIsInstance(e, QueueEntry)
        self.assertEqual(e.id, ids[0])
        self.assertEqual({x.base_id for x in entries}, {ids[0]})
        self.assertEqual([x.recipient for x in entries],
                         ["bob@example.com", "Alice@example.net", "user@bücher.example"])
        self.assertEqual(entries[2].recipient_domain, "bücher.example")
        self.assertEqual(e.sender, "mjl@example.org")
        self.assertEqual(e.sender_account, "mjl")
        self.assertEqual(e.queued, NOW)
        self.assertEqual(e.next_attempt, NOW)
        self.assertEqual(e.next_attempt.tzinfo, timezone.utc)
        self.assertIsNone(e.last_attempt)
        self.assertEqual((e.attempts, e.last_error, e.hold, e.results), (0, "", False, []))
        self.assertEqual(e.size, len(msg) + len(b"DKIM-Signature: v=1\r\n"))
        self.assertEqual(e.msg_prefix, b"DKIM-Signature: v=1\r\n")
        self.assertEqual((e.message_id, e.subject), ("<x@example.org>", "Hello"))
        self.assertTrue(e.has_8bit and e.smtputf8)
        self.assertIsNone(e.require_tls)
        self.assertEqual(e.futurerelease_request, "")
        with self.queue.open_message(e) as f:
            self.assertEqual(f.read(), msg)
        self.assertEqual(self.queue.message_path(entries[1]), qdb.message_file(self.data_dir, ids[0]))
        # One file for all recipients, nothing left in tmp/.
        self.assertEqual(queue_files(self.data_dir), ([str(ids[0])], []))

    @defer.inlineCallbacks
    def test_null_sender_dsn(self):
        # RFC 5321 4.5.5: DSNs are sent with the null reverse-path.
        [i] = yield self.add(mailfrom="", sender_account=None, is_dsn=True,
                             dsn_utf8=b"Subject: =?utf-8?q?x?=\r\n\r\n")
        e = yield self.queue.get(i)
        self.assertEqual((e.sender, e.sender_localpart, e.sender_domain), ("", "", ""))
        self.assertEqual(e.sender_account, "")
        self.assertTrue(e.is_dsn)
        self.assertEqual(e.dsn_utf8, b"Subject: =?utf-8?q?x?=\r\n\r\n")

    @defer.inlineCallbacks
    def test_dsn_parameters(self):
        # RFC 3461: RET and ENVID per message, NOTIFY and ORCPT per recipient.
        ids = yield self.add(
            ["a@example.com", "b@example.com", "c@example.com"],
            dsn_ret="hdrs",
            dsn_envid="env123",
            rcpt_dsn={
                "a@example.com": {"notify": ["success", "FAILURE"], "orcpt": "rfc822;a@example.com"},
                "b@example.com": {"notify": "NEVER"},
            },
            requiretls=True,
        )
        a, b, c = yield defer.gatherResults([self.queue.get(i) for i in ids])
        self.assertEqual((a.dsn_ret, a.dsn_envid), ("HDRS", "env123"))
        self.assertEqual(a.dsn_notify, ("SUCCESS", "FAILURE"))
        self.assertEqual(a.dsn_orcpt, "rfc822;a@example.com")
        self.assertEqual(b.dsn_notify, ("NEVER",))
        self.assertEqual((c.dsn_notify, c.dsn_orcpt), ((), ""))
        self.assertIs(a.require_tls, True)
        [i] = yield self.add(requiretls=False)
        self.assertIs((yield self.queue.get(i)).require_tls, False)

    @defer.inlineCallbacks
    def test_invalid_arguments(self):
        yield self.assertFailure(self.add([]), ValueError)
        yield self.assertFailure(self.add(["no-at-sign"]), AddressError)
        yield self.assertFailure(self.add(mailfrom="bad@@x"), AddressError)
        yield self.assertFailure(self.add(dsn_ret="ALL"), ValueError)
        yield self.assertFailure(
            self.add(rcpt_dsn={"bob@example.com": {"notify": "NEVER,DELAY"}}), ValueError)
        yield self.assertFailure(
            self.add(rcpt_dsn={"bob@example.com": {"notify": "SOMETIMES"}}), ValueError)
        yield self.assertFailure(self.add(hold_until=datetime(2030, 1, 1)), ValueError)
        self.assertEqual((yield self.queue.list()), [])
        self.assertEqual(queue_files(self.data_dir), ([], []))

    @defer.inlineCallbacks
    def test_get_missing(self):
        yield self.assertFailure(self.queue.get(42), EntryNotFound)

    @defer.inlineCallbacks
    def test_reopen_and_ids_not_reused(self):
        ids = yield self.add(["a@example.com", "b@example.com"])
        yield self.queue.drop(ids)
        yield self.queue.close()
        q = Queue(self.data_dir, clock=self.clock)
        yield q.open()
        self.queue = q
        [i] = yield self.add()
        # AUTOINCREMENT: an id (and message file name) is never used twice.
        self.assertEqual(i, ids[-1] + 1)
        self.assertEqual([e.id for e in (yield q.list())], [i])


class ListTests(QueueTestBase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.a = yield self.add(["bob@example.com", "carol@example.net"], sender_account="mjl")
        self.b = yield self.add(["bob@example.com"], mailfrom="other@example.org",
                                sender_account="other")
        self.c = yield self.add(["dave@example.net"], mailfrom="", sender_account=None)
        yield self.queue.hold([self.b[0]])
        yield self.queue.schedule([self.c[0]], NOW + timedelta(hours=1))

    @defer.inlineCallbacks
    def ids(self, **filters):
        return [e.id for e in (yield self.queue.list(**filters))]

    @defer.inlineCallbacks
    def test_filters(self):
        a, b, c = self.a, self.b, self.c
        self.assertEqual((yield self.ids()), a + b + c)
        self.assertEqual((yield self.ids(account="mjl")), a)
        self.assertEqual((yield self.ids(account="")), c)
        self.assertEqual((yield self.ids(sender="other@EXAMPLE.org")), b)
        self.assertEqual((yield self.ids(sender="example.org")), a + b)
        self.assertEqual((yield self.ids(sender="")), c)
        self.assertEqual((yield self.ids(recipient="bob@example.com")), [a[0], b[0]])
        self.assertEqual((yield self.ids(recipient="example.net")), [a[1], c[0]])
        self.assertEqual((yield self.ids(hold=True)), b)
        self.assertEqual((yield self.ids(hold=False)), a + c)
        self.assertEqual((yield self.ids(next_before=NOW)), a + b)
        self.assertEqual((yield self.ids(next_after=NOW)), c)
        self.assertEqual((yield self.ids(next_after=NOW + timedelta(hours=1))), [])
        self.assertEqual((yield self.ids(account="mjl", recipient="example.net", hold=False)), [a[1]])


class ChangeTests(QueueTestBase):
    @defer.inlineCallbacks
    def test_hold_unhold_schedule_due(self):
        ids = yield self.add(["a@example.com", "b@example.com", "c@example.com"])
        self.assertEqual([e.id for e in (yield self.queue.due(NOW))], ids)
        self.assertEqual((yield self.queue.hold(ids[:2] + [999])), 2)
        self.assertEqual([e.id for e in (yield self.queue.due(NOW))], ids[2:])
        self.assertTrue((yield self.queue.get(ids[0])).hold)
        self.assertEqual((yield self.queue.unhold([ids[0]])), 1)
        self.assertEqual([e.id for e in (yield self.queue.due(NOW))], [ids[0], ids[2]])
        later = NOW + timedelta(minutes=10)
        self.assertEqual((yield self.queue.schedule([ids[0]], later)), 1)
        self.assertEqual((yield self.queue.get(ids[0])).next_attempt, later)
        self.assertEqual([e.id for e in (yield self.queue.due(NOW))], [ids[2]])
        # Earliest first; limit.
        due = yield self.queue.due(later)
        self.assertEqual([e.id for e in due], [ids[2], ids[0]])
        self.assertEqual(len((yield self.queue.due(later, limit=1))), 1)
        yield self.assertFailure(self.queue.schedule(ids, datetime(2030, 1, 1)), ValueError)

    @defer.inlineCallbacks
    def test_futurerelease(self):
        # RFC 4865: a message submitted with FUTURERELEASE is not sent before the release time.
        release = NOW + timedelta(hours=2)
        [i] = yield self.add(hold_until=release)
        e = yield self.queue.get(i)
        self.assertEqual(e.next_attempt, release)
        self.assertEqual(e.futurerelease_request, "until;" + release.isoformat())
        self.assertFalse(e.hold)
        self.assertEqual((yield self.queue.due(NOW)), [])
        self.assertEqual((yield self.queue.due(release - timedelta(seconds=1))), [])
        self.assertEqual([x.id for x in (yield self.queue.due(release))], [i])
        # A release time in the past means now.
        [j] = yield self.add(hold_until=NOW - timedelta(hours=1))
        self.assertEqual((yield self.queue.get(j)).next_attempt, NOW)

    @defer.inlineCallbacks
    def test_record_temporary(self):
        [i] = yield self.add()
        self.clock.advance(5)
        nxt = NOW + timedelta(minutes=7.5)
        e = yield self.queue.record_attempt(i, ok=False, permanent=False, error="451 try later",
                                            next_attempt=nxt)
        self.assertEqual(e.attempts, 1)
        self.assertEqual(e.last_error, "451 try later")
        self.assertEqual(e.next_attempt, nxt)
        self.assertEqual(e.last_attempt, NOW + timedelta(seconds=5))
        self.assertEqual(len(e.results), 1)
        self.assertEqual(e.results[0]["error"], "451 try later")
        self.assertFalse(e.results[0]["success"])
        e = yield self.queue.record_attempt(i, ok=False, permanent=False, error="again",
                                            next_attempt=nxt)
        self.assertEqual((e.attempts, len(e.results)), (2, 2))
        self.assertEqual(e, (yield self.queue.get(i)))

    @defer.inlineCallbacks
    def test_record_missing(self):
        yield self.assertFailure(
            self.queue.record_attempt(7, ok=True, permanent=False, error=""), EntryNotFound)

    @defer.inlineCallbacks
    def test_shared_file_released_after_last(self):
        ids = yield self.add(["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
        path = qdb.message_file(self.data_dir, ids[0])
        self.assertEqual((yield self.queue.drop([ids[0]])), 1)
        self.assertTrue(os.path.exists(path))
        self.assertIsNone((yield self.queue.record_attempt(ids[1], ok=True, permanent=False, error="")))
        self.assertTrue(os.path.exists(path))
        yield self.queue.record_attempt(ids[2], ok=False, permanent=False, error="later")
        self.assertTrue(os.path.exists(path))
        self.assertIsNone((yield self.queue.record_attempt(
            ids[2], ok=False, permanent=True, error="550 no such user")))
        self.assertTrue(os.path.exists(path))
        # The base entry is gone but the file stays until its last recipient is done.
        with self.queue.open_message((yield self.queue.get(ids[3]))) as f:
            self.assertTrue(f.read().startswith(b"From: "))
        self.assertEqual((yield self.queue.drop([ids[3], ids[3]])), 1)
        self.assertFalse(os.path.exists(path))
        self.assertEqual((yield self.queue.list()), [])
        self.assertEqual(queue_files(self.data_dir), ([], []))

    @defer.inlineCallbacks
    def test_concurrent_removals_share_commit(self):
        # Removals of all recipients in one group commit: the last one releases the file.
        ids = yield self.add(["a@example.com", "b@example.com", "c@example.com"])
        yield defer.gatherResults([self.queue.drop([i]) for i in ids])
        self.assertEqual(queue_files(self.data_dir), ([], []))


class _FailingTmpWrite(Queue):
    @staticmethod
    def _write_tmp(directory, data):
        path = qdb.write_tmp(directory, data[:10])
        os.unlink(path)  # as durable.write_new does when the write fails
        raise OSError(28, "No space left on device")


class _FailAfterRename(Queue):
    def _place_file(self, ctx, tmp_path, base_id):
        super()._place_file(ctx, tmp_path, base_id)
        self.placed = qdb.message_file(self.data_dir, base_id)
        assert os.path.exists(self.placed)
        raise RuntimeError("injected failure after rename")


class _FailBeforeCommit(Queue):
    def _place_file(self, ctx, tmp_path, base_id):
        super()._place_file(ctx, tmp_path, base_id)
        # The worker fsyncs this before COMMIT; failing there fails the whole batch.
        ctx.sync_dirs.add(os.path.join(self.data_dir, "does-not-exist"))


class _OrderCheck(Queue):
    """Records what is on disk and in the database when each step runs."""

    events = []

    def _write_tmp(self, directory, data):
        path = qdb.write_tmp(directory, data)
        self.events.append(("tmp written", self._committed_rows()))
        return path

    def _place_file(self, ctx, tmp_path, base_id):
        with open(tmp_path, "rb") as f:
            self.events.append(("placing", len(f.read()), self._committed_rows()))
        super()._place_file(ctx, tmp_path, base_id)
        ctx.after_commit.append(lambda: self.events.append(
            ("committed", os.path.exists(qdb.message_file(self.data_dir, base_id)),
             self._committed_rows())))

    def _committed_rows(self):
        conn = sqlite3.connect(qdb.db_path(self.data_dir))
        try:
            return conn.execute("SELECT count(*) FROM msg").fetchone()[0]
        finally:
            conn.close()


class DurabilityTests(unittest.TestCase):
    @defer.inlineCallbacks
    def open(self, cls):
        self.data_dir = self.mktemp()
        q = cls(self.data_dir, clock=task.Clock())
        yield q.open()
        self.addCleanup(q.close)
        return q

    @defer.inlineCallbacks
    def assert_nothing_left(self, q):
        self.assertEqual((yield q.list()), [])
        self.assertEqual(queue_files(self.data_dir), ([], []))
        report = verify_queue(self.data_dir)
        self.assertEqual((report.errors, report.notes), ([], []))

    @defer.inlineCallbacks
    def test_file_before_rows(self):
        q = yield self.open(_OrderCheck)
        msg = make_message()
        yield q.add(msg, "mjl@example.org", ["a@example.com", "b@example.com"], sender_account="mjl")
        # The file is complete before the rows are inserted, and both exist at COMMIT.
        self.assertEqual(q.events, [("tmp written", 0), ("placing", len(msg), 0), ("committed", True, 2)])

    @defer.inlineCallbacks
    def test_failed_file_write(self):
        q = yield self.open(_FailingTmpWrite)
        yield self.assertFailure(
            q.add(make_message(), "mjl@example.org", ["a@example.com"], sender_account="mjl"), OSError)
        yield self.assert_nothing_left(q)

    @defer.inlineCallbacks
    def test_failure_after_rename(self):
        q = yield self.open(_FailAfterRename)
        yield self.assertFailure(
            q.add(make_message(), "mjl@example.org", ["a@example.com", "b@example.com"],
                  sender_account="mjl"),
            RuntimeError)
        self.assertFalse(os.path.exists(q.placed))
        yield self.assert_nothing_left(q)

    @defer.inlineCallbacks
    def test_failure_before_commit(self):
        q = yield self.open(_FailBeforeCommit)
        yield self.assertFailure(
            q.add(make_message(), "mjl@example.org", ["a@example.com"], sender_account="mjl"),
            FileNotFoundError)
        self.flushLoggedErrors(FileNotFoundError)  # the worker logs failed commits
        yield self.assert_nothing_left(q)


class SchemaTests(unittest.TestCase):
    def test_upgrade_and_newer(self):
        data_dir = self.mktemp()
        qdb.prepare(data_dir)
        conn = schema.connect(qdb.db_path(data_dir))
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.LATEST)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
        self.assertRaises(schema.SchemaError, qdb.prepare, data_dir)

    def test_stale_tmp_removed_at_open(self):
        data_dir = self.mktemp()
        qdb.prepare(data_dir)
        old = os.path.join(qdb.tmp_dir(data_dir), "old")
        new = os.path.join(qdb.tmp_dir(data_dir), "new")
        for p in (old, new):
            with open(p, "wb") as f:
                f.write(b"x")
        os.utime(old, (T0, T0))
        qdb.prepare(data_dir, now=T0 + qdb.STALE_TMP + 1)
        self.assertEqual(os.listdir(qdb.tmp_dir(data_dir)), ["new"])


class VerifyTests(QueueTestBase):
    @defer.inlineCallbacks
    def test_clean(self):
        yield self.add(["a@example.com", "b@example.com"], msg_prefix=b"X-A: b\r\n")
        report = verify_queue(self.data_dir)
        self.assertEqual((report.errors, report.notes, report.entries), ([], [], 2))
        self.assertTrue(report.ok)

    def test_no_queue(self):
        report = verify_queue(self.mktemp())
        self.assertEqual((report.errors, report.notes, report.entries), ([], [], 0))

    @defer.inlineCallbacks
    def test_findings_and_fix(self):
        ids = yield self.add(["a@example.com", "b@example.com"])
        [j] = yield self.add()
        [k] = yield self.add()
        qdir = qdb.queue_dir(self.data_dir)
        os.unlink(qdb.message_file(self.data_dir, ids[0]))  # rows without file: error
        with open(qdb.message_file(self.data_dir, j), "ab") as f:  # wrong size: error
            f.write(b"more")
        for name in ("9999", "junk"):  # files without rows: notes
            with open(os.path.join(qdir, name), "wb") as f:
                f.write(b"x")
        with open(os.path.join(qdb.tmp_dir(self.data_dir), "123.abc"), "wb") as f:
            f.write(b"x")
        report = verify_queue(self.data_dir)
        self.assertEqual(len(report.errors), 3, report.errors)
        self.assertIn(f"queue entry {ids[0]} (base {ids[0]}): message file", report.errors[0])
        self.assertIn("missing", report.errors[0])
        self.assertIn(f"queue entry {ids[1]}", report.errors[1])
        self.assertIn(f"queue entry {j}", report.errors[2])
        self.assertIn("bytes", report.errors[2])
        self.assertEqual(len(report.notes), 3, report.notes)
        self.assertFalse(report.ok)
        self.assertEqual(report.fixed, [])

        report = verify_queue(self.data_dir, fix=True)
        self.assertEqual(len(report.fixed), 3)
        self.assertEqual(queue_files(self.data_dir), (sorted([str(j), str(k)]), []))
        report = verify_queue(self.data_dir)
        self.assertEqual((len(report.errors), report.notes), (3, []))


class ListCommandTests(QueueTestBase):
    def run_list(self, **filters):
        out = io.StringIO()
        code = qcli.list_command(self.data_dir, out, **filters)
        return code, out.getvalue()

    def test_no_database(self):
        out = io.StringIO()
        self.assertEqual(qcli.list_command(self.mktemp(), out), 0)
        self.assertEqual(out.getvalue(), "queue is empty\n")

    @defer.inlineCallbacks
    def test_table(self):
        ids = yield self.add(["bob@example.com", "carol@example.net"])
        [d] = yield self.add(["dave@example.net"], mailfrom="", sender_account=None)
        yield self.queue.hold([d])
        self.clock.advance(60)
        yield self.queue.record_attempt(ids[1], ok=False, permanent=False,
                                        error="remote delivery\nnot available",
                                        next_attempt=NOW + timedelta(minutes=7.5, seconds=60))
        code, out = self.run_list()
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines(), [
            "id  queued                from             to                 attempts  next attempt          hold  last error",
            f"{ids[0]}   2026-09-21 14:13:20Z  mjl@example.org  bob@example.com    0         2026-09-21 14:13:20Z  no",
            f"{ids[1]}   2026-09-21 14:13:20Z  mjl@example.org  carol@example.net  1         2026-09-21 14:21:50Z  no    remote delivery not available",
            f"{d}   2026-09-21 14:13:20Z  <>               dave@example.net   0         2026-09-21 14:13:20Z  yes",
        ])
        code, out = self.run_list(hold=True)
        self.assertEqual((code, len(out.splitlines())), (0, 2))
        self.assertIn("dave@example.net", out)
        code, out = self.run_list(recipient="nobody@example.com")
        self.assertEqual((code, out), (0, "no matching queue entries\n"))

    @defer.inlineCallbacks
    def test_reads_while_open_and_readonly(self):
        [i] = yield self.add()
        code, out = self.run_list(account="mjl")
        self.assertEqual(code, 0)
        self.assertIn("bob@example.com", out)
        # The command never writes: the database is unchanged and still usable.
        yield self.queue.drop([i])
        self.assertEqual(self.run_list(), (0, "queue is empty\n"))

    def test_newer_schema(self):
        conn = schema.connect(qdb.db_path(self.data_dir))
        conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
        conn.close()
        code, out = self.run_list()
        self.assertEqual(code, 1)
        self.assertIn("schema version", out)
