"""INPROGRESS (RFC 9585): a command that runs for a while gets untagged
``OK [INPROGRESS ("tag" done total)]`` responses until it completes; quick commands and
commands waiting for the client (IDLE) get none."""

from twisted.internet import defer

from moxtw.imapserver import search as searchmod
from moxtw.imapserver import session as imapsession
from moxtw.test.imaphelper import IMAPSessionTest, untagged


def progress_lines(lines):
    return [x for x in untagged(lines, "OK") if "[INPROGRESS" in x]


class InProgressTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)

    def hold(self, obj, name, calls_before=0):
        """Make ``obj.name`` hang after ``calls_before`` calls went through: (reached,
        release), Deferreds: ``reached`` fires when a call is held, firing ``release``
        lets it go on."""
        reached, release = defer.Deferred(), defer.Deferred()
        real = getattr(obj, name)
        count = [0]

        def held(*args, **kw):
            count[0] += 1
            if count[0] <= calls_before:
                return real(*args, **kw)
            d = defer.Deferred()
            release.addCallback(lambda _: real(*args, **kw).chainDeferred(d))
            if not reached.called:
                reached.callback(None)
            return d

        self.patch(obj, name, held)
        return reached, release

    @defer.inlineCallbacks
    def test_long_search_gets_progress_until_done(self):
        c = yield self.logged_in(select="INBOX")
        self.assertIn("INPROGRESS", c.greeting.decode() + "".join(
            x for x in untagged((yield c.cmd("CAPABILITY")))))
        reached, release = self.hold(self.acc, "search")
        done = c.wait_tagged("S1")
        start = len(c.out)
        c.send(b"S1 SEARCH SUBJECT msg\r\n")
        yield reached
        self.clock.advance(imapsession.INPROGRESS_FIRST - 0.1)
        self.assertNotIn(b"INPROGRESS", c.out[start:])
        self.clock.advance(0.1)
        # Nothing known about the amount of work yet: NIL NIL (RFC 9585 4).
        self.assertIn(b'* OK [INPROGRESS ("S1" NIL NIL)]', c.out[start:])
        self.clock.advance(imapsession.INPROGRESS_EVERY)
        self.assertEqual(c.out[start:].count(b"[INPROGRESS"), 2)
        release.callback(None)
        lines = yield done
        self.assertOK(lines)
        self.assertIn("SEARCH 1 2 3 4 5", untagged(lines))
        # Done: no more progress responses.
        after = len(c.out)
        self.clock.advance(imapsession.INPROGRESS_EVERY * 3)
        self.assertNotIn(b"INPROGRESS", c.out[after:])

    @defer.inlineCallbacks
    def test_counts_from_search_slices(self):
        # A FROM search is checked in slices (address matching on the rows); the count says how far it got.
        self.patch(searchmod, "EVAL_SLICE", 2)
        c = yield self.logged_in(select="INBOX")
        reached, release = self.hold(self.acc, "rows", calls_before=1)
        done = c.wait_tagged("B1")
        start = len(c.out)
        c.send(b"B1 SEARCH FROM bob\r\n")
        yield reached
        self.clock.advance(imapsession.INPROGRESS_FIRST)
        text = c.out[start:].decode()
        self.assertRegex(text, r'\* OK \[INPROGRESS \("B1" 2 5\)\]')
        release.callback(None)
        lines = yield done
        self.assertIn("SEARCH 1 2 3 4 5", untagged(lines))

    @defer.inlineCallbacks
    def test_quick_commands_and_idle_get_none(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("NOOP")
        self.clock.advance(60)
        self.assertEqual(progress_lines(lines), [])
        start = len(c.out)
        c.send(b"I1 IDLE\r\n")
        self.clock.advance(imapsession.INPROGRESS_FIRST * 10)
        self.assertNotIn(b"INPROGRESS", c.out[start:])
        lines = yield c.raw(b"DONE\r\n", "I1")
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_client_gone_mid_command(self):
        c = yield self.logged_in(select="INBOX")
        reached, release = self.hold(self.acc, "search")
        start = len(c.out)
        c.send(b"S1 SEARCH SUBJECT msg\r\n")
        yield reached
        c.proto.connectionLost(None)
        self.clock.advance(imapsession.INPROGRESS_FIRST + imapsession.INPROGRESS_EVERY * 2)
        release.callback(None)
        self.assertNotIn(b"INPROGRESS", c.out[start:])
