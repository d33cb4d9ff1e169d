"""Hostile literals (issue 10 item 1): memory before login, spooled message uploads.

Before authentication only small literals are taken: a synchronizing one over the limit
gets NO [TOOBIG] without a continuation, a non-synchronizing one closes the connection
(RFC 7888 4, LITERAL- semantics) instead of being read. After authentication an APPEND
literal over SPOOL_THRESHOLD goes to a spool file in the account's tmp/, never whole to
memory. The real-process memory figures are in test_imap_hostile_memory.
"""

import os

from twisted.internet import defer

from moxtw.imapserver import server as imapserver
from moxtw.test.imaphelper import LOGIN, PASSWORD, IMAPSessionTest, tagged, untagged

BIG = 3 * imapserver.SPOOL_THRESHOLD + 12345  # several spool slices, not a multiple


def big_message(size, subject="big", eol=b"\r\n"):
    head = (
        f"From: bob@example.net{eol.decode()}To: mjl@example.org{eol.decode()}"
        f"Subject: {subject}{eol.decode()}Message-ID: <{subject}@example.net>{eol.decode()}"
        f"{eol.decode()}"
    ).encode()
    line = b"x" * 70 + eol
    body = line * ((size - len(head)) // len(line))
    body += b"y" * (size - len(head) - len(body))
    return head + body


class PreauthLiteralTests(IMAPSessionTest):
    kind = "imap"  # plain port: login allowed without TLS here
    factory_kwargs = {"require_tls_for_login": False}

    @defer.inlineCallbacks
    def test_sync_literal_over_limit_refused_without_continuation(self):
        c = self.client()
        size = imapserver.MAX_PREAUTH_LITERAL + 1
        lines = yield c.raw(f"a LOGIN {{{size}}}\r\n".encode(), "a")
        self.assertNotIn(b"\r\n+ ", c.out)
        self.assertEqual(lines[-1][:len(b"a NO [TOOBIG]")], b"a NO [TOOBIG]")
        self.assertFalse(c.closed)
        # The connection goes on: a normal login works.
        yield c.login()

    def test_reading_pauses_early_before_login(self):
        """While a failed LOGIN waits out its delay, pipelined lines are not read past
        a line and a login literal (review of item 1: 2 MB per connection before login)."""
        c = self.client()
        c.send(b"a LOGIN nobody wrong\r\n")
        self.assertTrue(c.proto._busy)
        for _ in range(3):
            c.send(b"b NOOP " + b"x" * 60000 + b"\r\n")
        self.assertIn("backlog", c.proto._pauses)
        self.assertEqual(c.proto.max_backlog, imapserver.MAX_LINE + imapserver.MAX_PREAUTH_LITERAL)

    @defer.inlineCallbacks
    def test_append_before_login_is_small_limit(self):
        # APPEND's large limit applies only after login.
        c = self.client()
        lines = yield c.raw(b"a APPEND INBOX {104857600}\r\n", "a")
        self.assertIn(b"NO [TOOBIG]", lines[-1])
        self.assertIn(str(imapserver.MAX_PREAUTH_LITERAL).encode(), lines[-1])

    @defer.inlineCallbacks
    def test_nonsync_literal_over_limit_closes_and_keeps_nothing(self):
        c = self.client()
        d = c.wait_line(b"* BYE")
        c.send(b"a APPEND INBOX {104857600+}\r\n" + b"x" * 65536)
        lines = yield d
        self.assertIn(b"TOOBIG", lines[-1])
        self.assertTrue(c.closed)
        # What keeps arriving until the connection is gone is not kept.
        for _ in range(16):
            c.proto.dataReceived(b"x" * 65536)
        self.assertEqual(c.proto._buf, b"")
        self.assertEqual(c.proto._cmd, [])

    @defer.inlineCallbacks
    def test_small_literals_before_login_work(self):
        c = self.client()
        user, pw = LOGIN.encode(), PASSWORD.encode()
        d = c.wait_line(b"+ ")
        c.send(b"a LOGIN {%d}\r\n" % len(user))
        yield d
        lines = yield c.raw(user + b" {%d+}\r\n" % len(pw) + pw + b"\r\n", "a")
        self.assertEqual(tagged(lines)[:2], "OK")

    @defer.inlineCallbacks
    def test_preauth_nonsync_at_limit_accepted(self):
        # A literal of exactly the limit is an argument like any other.
        c = self.client()
        value = b"v" * imapserver.MAX_PREAUTH_LITERAL
        lines = yield c.raw(b'a ID ("name" {%d+}\r\n' % len(value) + value + b")\r\n", "a")
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        self.assertFalse(c.closed)


class SpoolTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.spools = []
        real = self.acc.spool

        def spool():
            s = real()
            self.spools.append(s)
            return s

        self.acc.spool = spool

    def tmp_files(self):
        return sorted(os.listdir(os.path.join(self.acc.maildir, "tmp")))

    @defer.inlineCallbacks
    def append_in_pieces(self, c, data, tag="a", mailbox="INBOX", piece=8192):
        """APPEND with a synchronizing literal, fed in pieces; returns (lines, the
        largest number of literal bytes the connection held at any point)."""
        d = c.wait_line(b"+ ")
        c.send(f"{tag} APPEND {mailbox} {{{len(data)}}}\r\n".encode())
        yield d
        held = 0
        for i in range(0, len(data), piece):
            c.send(data[i:i + piece])
            held = max(held, self.held(c))
            # Let spool writes run (they pause reading; a real transport would wait).
            while c.proto._spool_writing:
                yield c.proto._spool._last
        lines = yield c.raw(b"\r\n", tag)
        return lines, held

    @staticmethod
    def held(c):
        p = c.proto
        return len(p._buf) + sum(len(x) for x in p._cmd) + p._spool_pending_len

    @defer.inlineCallbacks
    def stored(self, uid=None):
        mb = yield self.acc.mailbox("Inbox")
        msgs = yield self.acc.messages(mb.id)
        out = []
        for m in msgs:
            with self.acc.open_message(m.id) as f:
                out.append(f.read())
        return out

    @defer.inlineCallbacks
    def test_large_append_spooled_and_stored_exactly(self):
        c = yield self.logged_in()
        data = big_message(BIG)
        lines, held = yield self.append_in_pieces(c, data)
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        self.assertIn("APPENDUID", tagged(lines))
        # Never more than a slice (plus one piece of input) in memory.
        self.assertLess(held, imapserver.SPOOL_SLICE + 2 * 8192)
        self.assertEqual((yield self.stored()), [data])
        self.assertEqual([f for f in self.tmp_files() if f.endswith(".spool")], [])

    @defer.inlineCallbacks
    def test_large_append_in_one_piece(self):
        # All of it at once in the buffer (a fast client): still stored whole.
        c = yield self.logged_in()
        data = big_message(BIG, subject="one")
        d = c.wait_line(b"+ ")
        c.send(f"a APPEND INBOX (\\Seen) {{{len(data)}}}\r\n".encode())
        yield d
        lines = yield c.raw(data + b"\r\n", "a")
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        self.assertEqual((yield self.stored()), [data])

    @defer.inlineCallbacks
    def test_bare_lf_repaired(self):
        c = yield self.logged_in()
        data = big_message(BIG, subject="lf", eol=b"\n")
        lines, _ = yield self.append_in_pieces(c, data)
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        [got] = yield self.stored()
        self.assertEqual(got, data.replace(b"\n", b"\r\n"))
        self.assertEqual([f for f in self.tmp_files() if f.endswith(".spool")], [])

    @defer.inlineCallbacks
    def test_multiappend_two_spools_and_small(self):
        c = yield self.logged_in()
        a, b, small = big_message(BIG, "m1"), big_message(BIG + 1, "m2"), big_message(500, "m3")
        d = c.wait_line(b"+ ")
        c.send(b"a APPEND INBOX {%d}\r\n" % len(a))
        yield d
        d = c.wait_line(b"+ ")
        c.send(a + b" (\\Flagged) {%d}\r\n" % len(b))
        yield d
        c.send(b)
        lines = yield c.raw(b" {%d+}\r\n" % len(small) + small + b"\r\n", "a")
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        self.assertEqual((yield self.stored()), [a, b, small])
        self.assertEqual([f for f in self.tmp_files() if f.endswith(".spool")], [])

    @defer.inlineCallbacks
    def test_multiappend_of_small_literals_spools_once_they_add_up(self):
        """Literals under the threshold each, but a MULTIAPPEND of many of them must not
        be held in memory together (review of issue 10 item 1: 200 x 128 KB stayed in
        memory)."""
        c = yield self.logged_in()
        n, size = 24, imapserver.SPOOL_THRESHOLD // 4
        msgs = [big_message(size, f"s{i}") for i in range(n)]
        c.send(b"a APPEND INBOX {%d+}\r\n" % len(msgs[0]))
        most = 0
        for i, m in enumerate(msgs):
            tail = b" {%d+}\r\n" % len(msgs[i + 1]) if i + 1 < n else b"\r\n"
            if i + 1 == n:
                lines = yield c.raw(m + tail, "a")
            else:
                c.send(m + tail)
                while c.proto._spool_writing:
                    yield c.proto._spool._last
            most = max(most, c.proto._cmd_len)
        self.assertEqual(tagged(lines)[:2], "OK", lines)
        self.assertLess(most, imapserver.SPOOL_THRESHOLD + 2 * imapserver.MAX_LINE)
        self.assertEqual((yield self.stored()), msgs)
        self.assertEqual([f for f in self.tmp_files() if f.endswith(".spool")], [])

    @defer.inlineCallbacks
    def pump(self, c, until):
        """Let spool writes finish and pipelined turns run until ``until()``."""
        from twisted.internet import reactor, task

        for _ in range(20000):
            if until():
                return
            if c.proto._spool_writing:
                yield c.proto._spool._last
            elif c.proto._turn_call is not None:
                self.clock.advance(0)
            else:
                yield task.deferLater(reactor, 0.001, lambda: None)
        self.fail("condition not reached")

    @defer.inlineCallbacks
    def test_multiappend_literal_count_limited(self):
        """Every literal past the in-memory bytes is a spool file: a MULTIAPPEND of
        thousands of tiny messages is refused (re-review of item 1)."""
        c = yield self.logged_in()
        msg = big_message(200, "t")
        data = b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg
        data += (b" {%d+}\r\n" % len(msg) + msg) * (imapserver.MAX_COMMAND_LITERALS + 5)
        c.send(data + b"\r\n")
        yield self.pump(c, lambda: b"* BYE" in c.out)
        self.assertIn(b"* BYE [LIMIT] at most", c.out)
        yield self.idle_spools()
        self.assertEqual([f for f in self.tmp_files() if f.endswith(".spool")], [])
        self.assertEqual((yield self.stored()), [])

    @defer.inlineCallbacks
    def test_multiappend_text_between_literals_bounded(self):
        """Flag lists between literals stay in memory: a command whose text passes
        MAX_COMMAND is refused."""
        c = yield self.logged_in()
        flags = b"(" + b" ".join(b"kw%d" % i for i in range(7000)) + b")"
        msg = big_message(300, "f")
        data = b"a APPEND INBOX " + flags + b" {%d+}\r\n" % len(msg) + msg
        data += (b" " + flags + b" {%d+}\r\n" % len(msg) + msg) * (imapserver.MAX_COMMAND // len(flags) + 3)
        most = 0
        c.send(data + b"\r\n")

        def done():
            nonlocal most
            most = max(most, c.proto._cmd_len)
            return b"* BYE" in c.out

        yield self.pump(c, done)
        self.assertIn(b"* BYE [TOOBIG] command over", c.out)
        self.assertLess(most, imapserver.MAX_COMMAND + imapserver.MAX_LINE)
        self.assertEqual((yield self.stored()), [])

    @defer.inlineCallbacks
    def test_failed_append_removes_spool(self):
        c = yield self.logged_in()
        data = big_message(BIG)
        lines, _ = yield self.append_in_pieces(c, data, mailbox="Nosuch")
        self.assertIn("TRYCREATE", tagged(lines))
        yield self.idle_spools()
        self.assertEqual(self.tmp_files(), [])

    @defer.inlineCallbacks
    def test_spooled_literal_outside_message_is_bad(self):
        # A mailbox name of 400 KB: the literal is spooled (it is an APPEND) but the
        # parser takes a spool only as the message.
        c = yield self.logged_in()
        name = b"n" * BIG
        d = c.wait_line(b"+ ")
        c.send(b"a APPEND {%d}\r\n" % len(name))
        yield d
        c.send(name)
        while c.proto._spool_writing:
            yield c.proto._spool._last
        lines = yield c.raw(b" {5+}\r\nhello\r\n", "a")
        self.assertEqual(tagged(lines)[:3], "BAD", lines)
        yield self.idle_spools()
        self.assertEqual(self.tmp_files(), [])
        lines = yield c.cmd("NOOP")
        self.assertEqual(tagged(lines)[:2], "OK")

    @defer.inlineCallbacks
    def test_disconnect_mid_literal_removes_spool(self):
        c = yield self.logged_in()
        data = big_message(BIG)
        d = c.wait_line(b"+ ")
        c.send(b"a APPEND INBOX {%d}\r\n" % len(data))
        yield d
        c.send(data[: 2 * imapserver.SPOOL_SLICE + 100])
        spool = c.proto._spool
        self.assertIsNotNone(spool)
        c.proto.connectionLost(None)
        c.closed = True
        yield spool.discard()  # runs after the discard connectionLost queued
        self.assertEqual(self.tmp_files(), [])
        mb = yield self.acc.mailbox("Inbox")
        self.assertEqual((yield self.acc.messages(mb.id)), [])

    @defer.inlineCallbacks
    def test_literal_under_threshold_not_spooled(self):
        c = yield self.logged_in()
        data = big_message(imapserver.SPOOL_THRESHOLD)
        d = c.wait_line(b"+ ")
        c.send(b"a APPEND INBOX {%d}\r\n" % len(data))
        yield d
        self.assertIsNone(c.proto._spool)
        lines = yield c.raw(data + b"\r\n", "a")
        self.assertEqual(tagged(lines)[:2], "OK")
        self.assertEqual(untagged(lines), [])

    @defer.inlineCallbacks
    def idle_spools(self):
        """Wait until the operations queued on every spool (a discard) are done: a
        discard runs after them and is harmless when repeated."""
        for s in self.spools:
            yield s.discard()
