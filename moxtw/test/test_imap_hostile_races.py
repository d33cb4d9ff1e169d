"""Hostile races (issue 10 item 5): a mailbox deleted by another session while a command
resolves it and uses it.

Each interleaving is forced: an Account method is wrapped so the mailbox is deleted
just before or just after the store operation the command depends on, as another
session's DELETE committing at that point would. The answers follow RFC 9051: a
missing destination of APPEND, COPY or MOVE is NO [TRYCREATE] (6.3.12, 6.4.7), any
other missing mailbox NO [NONEXISTENT] (7.1); a COPY or APPEND that committed before
the DELETE is OK with the COPYUID/APPENDUID of the mailbox as it was (RFC 4315 3). A
selected mailbox deleted by another session ends the session with an untagged BYE
(RFC 9051 7.1.5), or a FETCH of a message whose file went with it is NO
[EXPUNGEISSUED] (RFC 9051 7.1, RFC 2180 4.1). Never NO [SERVERBUG].

The last test runs the race for real: a server process, one client looping
CREATE/DELETE and another looping APPEND/COPY/MOVE into the mailbox, for RACE_SECONDS.
"""

import imaplib
import os
import threading
import time

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.imapserver import session as imapsession
from moxtw.test.imaphelper import IMAPSessionTest, message, tagged, untagged
from moxtw.test.test_localserve import free_offset, spawn_localserve

RACE_SECONDS = 10  # as the issue asks
LOCALSERVE_LOGIN = ("mox@localhost", "moxmoxmox")


class RaceTestBase(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)
        yield self.acc.create_mailbox("Doomed")
        self.doomed = yield self.acc.mailbox("Doomed")

    def delete_doomed(self):
        return self.acc.delete_mailbox("Doomed")

    def wrap(self, method, before=None, after=None):
        """Replace Account.<method> for this test: ``before()`` runs (and is waited
        for) before the real call, ``after()`` once it returned, before its caller
        continues; each runs once."""
        real = getattr(self.acc, method)
        state = {"done": False}

        @defer.inlineCallbacks
        def wrapped(*args, **kw):
            first = not state["done"]
            state["done"] = True
            if first and before is not None:
                yield before()
            result = yield real(*args, **kw)
            if first and after is not None:
                yield after()
            return result

        self.patch(self.acc, method, wrapped)

    def assertNoServerbug(self, lines):
        for line in lines:
            self.assertNotIn(b"SERVERBUG", line, lines)


class DestinationDeletedTests(RaceTestBase):
    """APPEND, MULTIAPPEND, COPY, MOVE and REPLACE into a mailbox deleted meanwhile."""

    @defer.inlineCallbacks
    def test_copy_deleted_before(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("copy", before=self.delete_doomed)
        lines = yield c.cmd("COPY 1:2 Doomed")
        self.assertNO(lines, "TRYCREATE")  # RFC 9051 6.4.7

    @defer.inlineCallbacks
    def test_copy_deleted_after(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("copy", after=self.delete_doomed)
        lines = yield c.cmd("COPY 1:2 Doomed")
        # The copy committed: OK, with the UIDVALIDITY the mailbox had (RFC 4315 3).
        self.assertOK(lines)
        self.assertIn(f"[COPYUID {self.doomed.uidvalidity} 1:2 1:2]", tagged(lines))
        self.assertIsNone((yield self.acc.mailbox("Doomed")))

    @defer.inlineCallbacks
    def test_uid_copy_deleted_after(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("copy", after=self.delete_doomed)
        lines = yield c.cmd("UID COPY 3 Doomed")
        self.assertIn(f"[COPYUID {self.doomed.uidvalidity} 3 1]", tagged(lines))

    @defer.inlineCallbacks
    def test_copy_recreated_after(self):
        """Deleted and created again before the reply: COPYUID still names the mailbox
        the messages went to, not the new one."""

        @defer.inlineCallbacks
        def recreate():
            yield self.delete_doomed()
            yield self.acc.create_mailbox("Doomed")

        c = yield self.logged_in(select="INBOX")
        self.wrap("copy", after=recreate)
        lines = yield c.cmd("COPY 1 Doomed")
        self.assertIn(f"[COPYUID {self.doomed.uidvalidity} 1 1]", tagged(lines))
        new = yield self.acc.mailbox("Doomed")
        self.assertNotEqual(new.uidvalidity, self.doomed.uidvalidity)

    @defer.inlineCallbacks
    def test_move_deleted_before(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("move", before=self.delete_doomed)
        lines = yield c.cmd("MOVE 1 Doomed")
        self.assertNO(lines, "TRYCREATE")
        self.assertEqual(untagged(lines, "EXPUNGE"), [])

    @defer.inlineCallbacks
    def test_move_deleted_after(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("move", after=self.delete_doomed)
        lines = yield c.cmd("UID MOVE 1:2 Doomed")
        self.assertOK(lines)
        u = untagged(lines)
        self.assertEqual(u[0], f"OK [COPYUID {self.doomed.uidvalidity} 1:2 1:2] moved")
        self.assertEqual(untagged(lines, "EXPUNGE"), ["2 EXPUNGE", "1 EXPUNGE"])

    @defer.inlineCallbacks
    def test_append_deleted_before(self):
        c = yield self.logged_in()
        self.wrap("append_many", before=self.delete_doomed)
        lines = yield c.cmd(b"APPEND Doomed {5+}\r\nhello")
        self.assertNO(lines, "TRYCREATE")  # RFC 9051 6.3.12

    @defer.inlineCallbacks
    def test_append_deleted_after(self):
        c = yield self.logged_in()
        self.wrap("append_many", after=self.delete_doomed)
        lines = yield c.cmd(b"APPEND Doomed {5+}\r\nhello")
        self.assertOK(lines)
        self.assertIn(f"[APPENDUID {self.doomed.uidvalidity} 1]", tagged(lines))

    @defer.inlineCallbacks
    def test_multiappend_deleted_before(self):
        c = yield self.logged_in()
        self.wrap("append_many", before=self.delete_doomed)
        lines = yield c.cmd(b"APPEND Doomed {1+}\r\na (\\Seen) {1+}\r\nb")
        self.assertNO(lines, "TRYCREATE")

    @defer.inlineCallbacks
    def test_multiappend_deleted_after(self):
        c = yield self.logged_in()
        self.wrap("append_many", after=self.delete_doomed)
        lines = yield c.cmd(b"APPEND Doomed {1+}\r\na (\\Seen) {1+}\r\nb")
        self.assertIn(f"[APPENDUID {self.doomed.uidvalidity} 1:2]", tagged(lines))

    @defer.inlineCallbacks
    def test_append_deleted_by_other_session(self):
        c = yield self.logged_in()
        other = yield self.logged_in()
        self.assertOK((yield other.cmd("DELETE Doomed")))
        self.assertNO((yield c.cmd(b"APPEND Doomed {5+}\r\nhello")), "TRYCREATE")

    @defer.inlineCallbacks
    def test_replace_deleted_before(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("append_many", before=self.delete_doomed)
        lines = yield c.cmd(b"REPLACE 1 Doomed {5+}\r\nhello")
        self.assertNO(lines, "TRYCREATE")
        self.assertEqual(untagged(lines, "EXPUNGE"), [])  # the original stays

    @defer.inlineCallbacks
    def test_replace_deleted_after(self):
        c = yield self.logged_in(select="INBOX")
        self.wrap("append_many", after=self.delete_doomed)
        lines = yield c.cmd(b"UID REPLACE 2 Doomed {5+}\r\nhello")
        self.assertOK(lines)
        self.assertIn(f"OK [APPENDUID {self.doomed.uidvalidity} 1] replacement appended", untagged(lines))
        self.assertEqual(untagged(lines, "EXPUNGE"), ["2 EXPUNGE"])


class MailboxDeletedTests(RaceTestBase):
    """Commands naming a mailbox deleted meanwhile: NO [NONEXISTENT]."""

    @defer.inlineCallbacks
    def check_select_deleted_after_lookup(self, command):
        c = yield self.logged_in(select="INBOX")
        self.wrap("uids", before=self.delete_doomed)
        lines = yield c.cmd(f"{command} Doomed")
        self.assertNO(lines, "NONEXISTENT")
        self.assertEqual(untagged(lines, "EXISTS"), [])
        # Nothing selected (RFC 9051 6.3.2): selected-state commands are refused, and
        # the session goes on.
        self.assertBAD((yield c.cmd("FETCH 1 FLAGS")))
        self.assertOK((yield c.cmd("NOOP")))
        self.assertOK((yield c.cmd("SELECT INBOX")))

    def test_select_deleted_after_lookup(self):
        return self.check_select_deleted_after_lookup("SELECT")

    def test_examine_deleted_after_lookup(self):
        return self.check_select_deleted_after_lookup("EXAMINE")

    @defer.inlineCallbacks
    def test_select_deleted_while_reading_unseen(self):
        yield self.deliver("in doomed", mailbox="Doomed")
        c = yield self.logged_in()  # IMAP4rev1: SELECT looks up the first unseen
        self.wrap("search", before=self.delete_doomed)
        self.assertNO((yield c.cmd("SELECT Doomed")), "NONEXISTENT")
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_select_other_mailbox_deleted(self):
        """A DELETE of another mailbox during SELECT changes nothing."""
        c = yield self.logged_in()

        def delete_other():
            return self.acc.delete_mailbox("Doomed")

        self.wrap("uids", before=delete_other)
        lines = yield c.cmd("SELECT INBOX")
        self.assertOK(lines)
        self.assertIn("3 EXISTS", untagged(lines))
        self.assertOK((yield c.cmd("FETCH 1:* FLAGS")))

    @defer.inlineCallbacks
    def test_status_getquotaroot_rename_delete(self):
        c = yield self.logged_in()
        other = yield self.logged_in()
        self.assertOK((yield other.cmd("DELETE Doomed")))
        self.assertNO((yield c.cmd("STATUS Doomed (MESSAGES)")), "NONEXISTENT")
        self.assertNO((yield c.cmd("GETQUOTAROOT Doomed")), "NONEXISTENT")
        self.assertNO((yield c.cmd("RENAME Doomed Other")), "NONEXISTENT")
        self.assertNO((yield c.cmd("DELETE Doomed")), "NONEXISTENT")
        self.assertOK((yield c.cmd("SUBSCRIBE Doomed")))  # RFC 9051 6.3.7: allowed

    @defer.inlineCallbacks
    def test_rename_source_deleted_before(self):
        c = yield self.logged_in()
        self.wrap("rename_mailbox", before=self.delete_doomed)
        self.assertNO((yield c.cmd("RENAME Doomed Other")), "NONEXISTENT")

    @defer.inlineCallbacks
    def test_delete_twice(self):
        c = yield self.logged_in()
        self.wrap("delete_mailbox", before=self.delete_doomed)
        self.assertNO((yield c.cmd("DELETE Doomed")), "NONEXISTENT")


class SelectedDeletedTests(RaceTestBase):
    """The selected mailbox deleted by another session."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        for i in range(3):
            yield self.deliver(f"doomed {i}", mailbox="Doomed")

    @defer.inlineCallbacks
    def test_commands_after_delete_get_bye(self):
        commands = [
            "NOOP", "FETCH 1:* (FLAGS BODY[])", "UID FETCH 1:* ENVELOPE", "STORE 1 +FLAGS (\\Seen)",
            "SEARCH BODY hello", "UID SEARCH ALL", "SORT (DATE) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL",
            "COPY 1 INBOX", "MOVE 1 INBOX", "EXPUNGE", "UID EXPUNGE 1", "CLOSE",
            "REPLACE 1 INBOX {5+}\r\nhello",
        ]
        for command in commands:
            c = yield self.logged_in(select="Doomed")
            other = yield self.logged_in()
            self.assertOK((yield other.cmd("DELETE Doomed")))
            lines = yield c.cmd(command)
            self.assertNoServerbug(lines)
            if not c.closed:
                # CLOSE deselects before the BYE would go out: the session goes on.
                self.assertEqual(command, "CLOSE")
                self.assertOK(lines)
            else:
                self.assertIn(b"* BYE selected mailbox was deleted", lines, command)
            yield self.acc.create_mailbox("Doomed")
            for i in range(3):
                yield self.deliver(f"doomed {i}", mailbox="Doomed")

    @defer.inlineCallbacks
    def test_fetch_body_file_gone(self):
        """Rows read, then the mailbox deleted and its files removed before the bodies
        are read: NO [EXPUNGEISSUED], then the BYE."""
        c = yield self.logged_in(select="Doomed")
        self.wrap("messages", after=self.delete_doomed)
        lines = yield c.cmd("FETCH 1:* (UID BODY.PEEK[])")
        self.assertNO(lines, "EXPUNGEISSUED")
        lines = yield c.cmd("NOOP")
        self.assertIn(b"* BYE selected mailbox was deleted", lines)

    @defer.inlineCallbacks
    def test_fetch_streamed_body_file_gone(self):
        """The same for a body large enough to be streamed from the file: nothing of
        its response is written, so the output stays valid IMAP."""
        big = message("big", body="x" * (imapsession.STREAM_THRESHOLD + 1000))
        yield self.acc.deliver("Doomed", big)
        c = yield self.logged_in(select="Doomed")
        self.wrap("messages", after=self.delete_doomed)
        lines = yield c.cmd("FETCH 4 BODY.PEEK[]")
        self.assertNO(lines, "EXPUNGEISSUED")
        self.assertEqual(untagged(lines, "FETCH"), [])

    @defer.inlineCallbacks
    def test_fetch_sets_seen_then_deleted(self):
        c = yield self.logged_in(select="Doomed")
        self.wrap("store_flags", before=self.delete_doomed)
        lines = yield c.cmd("FETCH 1 BODY[]")
        self.assertNoServerbug(lines)
        self.assertEqual(len(untagged(lines, "FETCH")), 1)


class LiveRaceTest(unittest.TestCase):
    """The COPY/DELETE race on a real server process, as in the issue."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.offset = free_offset()
        self.proc = spawn_localserve(self, self.dir, self.offset)
        yield self.proc.listening

    def connect(self):
        c = imaplib.IMAP4("127.0.0.1", 143 + self.offset, timeout=30)
        c.login(*LOCALSERVE_LOGIN)
        return c

    @defer.inlineCallbacks
    def test_copy_append_delete_race(self):
        stop = threading.Event()
        replies = []  # (command, type, response text) of every reply
        counts = {"create": 0, "copy": 0, "append": 0, "move": 0, "select": 0, "bye": 0}
        msg = message("race")

        def record(command, typ, data):
            replies.append((command, typ, b" ".join(d for d in data if isinstance(d, bytes))))
            return typ

        def churn():
            c = self.connect()
            try:
                while not stop.is_set():
                    record("CREATE", *c.create("Race"))
                    counts["create"] += 1
                    record("DELETE", *c.delete("Race"))
            finally:
                c.logout()

        def writer():
            c = self.connect()
            try:
                c.append("INBOX", None, None, msg)
                c.select("INBOX")
                while not stop.is_set():
                    record("COPY", *c.copy("1", "Race"))
                    counts["copy"] += 1
                    record("APPEND", *c.append("Race", "(\\Seen)", None, msg))
                    counts["append"] += 1
                    c.copy("1", "INBOX")  # message 2, moved (or expunged) again
                    if record("MOVE", *c._simple_command("MOVE", "2", "Race")) != "OK":
                        c.store("2:*", "+FLAGS", "(\\Deleted)")
                        c.expunge()
                    counts["move"] += 1
            finally:
                c.logout()

        def reader():
            """Selects the racing mailbox and reads it until it is deleted under it. A
            connection is kept while SELECT fails and replaced, after a pause, when the
            server closes it: the server allows 300 connections a minute from one IP."""
            c = None
            while not stop.is_set():
                if c is None:
                    c = self.connect()
                try:
                    if record("SELECT", *c.select("Race")) != "OK":
                        time.sleep(0.01)
                        continue
                    counts["select"] += 1
                    while not stop.is_set():
                        record("FETCH", *c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])"))
                        record("SEARCH", *c.uid("SEARCH", "BODY", "hello"))
                except imaplib.IMAP4.abort as e:
                    # The BYE for the deleted mailbox (RFC 9051 7.1.5), then EOF.
                    counts["bye"] += 1
                    record("BYE", "BYE", c.untagged_responses.get("BYE") or [str(e).encode()])
                    try:
                        c.shutdown()
                    except OSError:
                        pass
                    c = None
                    time.sleep(0.05)
            if c is not None:
                c.logout()

        errors = []

        def guarded(f):
            def run_one():
                try:
                    f()
                except Exception as e:  # reported by the test, not lost in a thread
                    errors.append((f.__name__, repr(e)))
                    stop.set()
            return run_one

        def run():
            workers = [threading.Thread(target=guarded(f)) for f in (churn, writer, reader)]
            for t in workers:
                t.start()
            time.sleep(RACE_SECONDS)
            stop.set()
            for t in workers:
                t.join(60)

        yield threads.deferToThread(run)
        self.assertEqual(errors, [])
        self.assertEqual([r for r in replies if b"SERVERBUG" in r[2]], [])
        for command, typ, text in replies:
            if typ == "OK":
                continue
            if command in ("COPY", "APPEND", "MOVE"):
                self.assertIn(b"[TRYCREATE]", text, (command, typ, text))
            elif command == "FETCH":
                # Its files went with the mailbox before they were read.
                self.assertIn(b"[EXPUNGEISSUED]", text, (command, typ, text))
            elif command == "SELECT":
                self.assertIn(b"[NONEXISTENT]", text, (command, typ, text))
            elif command == "BYE":
                self.assertIn("selected mailbox was deleted", text.decode(), (command, typ, text))
            else:
                self.fail((command, typ, text))
        self.assertGreater(counts["copy"], 10, counts)
        self.assertGreater(counts["create"], 10, counts)
        out = self.proc.out.decode(errors="replace")
        self.assertNotIn("level=critical", out)
        self.assertNotIn("Traceback", out)
