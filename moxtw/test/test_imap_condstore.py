"""CONDSTORE (RFC 7162 3.1): MODSEQ, HIGHESTMODSEQ, UNCHANGEDSINCE/MODIFIED,
CHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ."""

import re

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


def modseq_of(line):
    return int(re.search(r"MODSEQ \((\d+)\)", line).group(1))


class CondstoreTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def highest(self, c, mailbox="INBOX"):
        lines = yield c.cmd(f"STATUS {mailbox} (HIGHESTMODSEQ)")
        return int(re.search(r"HIGHESTMODSEQ (\d+)", untagged(lines)[0]).group(1))

    @defer.inlineCallbacks
    def test_enable_and_highestmodseq(self):
        c = yield self.logged_in()
        lines = yield c.cmd("ENABLE CONDSTORE")
        self.assertEqual(untagged(lines), ["ENABLED CONDSTORE"])
        lines = yield c.cmd("ENABLE CONDSTORE")
        self.assertEqual(untagged(lines), ["ENABLED"])
        lines = yield c.cmd("SELECT INBOX")
        hms = [x for x in untagged(lines) if "HIGHESTMODSEQ" in x]
        self.assertEqual(len(hms), 1)
        h0 = int(re.search(r"\d+", hms[0]).group(0))
        lines = yield c.cmd("STORE 2 +FLAGS (\\Seen)")
        m = modseq_of(untagged(lines)[0])
        self.assertGreater(m, h0)
        # HIGHESTMODSEQ follows flag changes (RFC 7162 3.1.2.1).
        self.assertEqual((yield self.highest(c)), m)

    @defer.inlineCallbacks
    def test_highestmodseq_after_expunge(self):
        c = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        h0 = yield self.highest(c)
        yield c.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXPUNGE")
        h1 = yield self.highest(c)
        self.assertGreater(h1, h0)

    @defer.inlineCallbacks
    def test_unchangedsince_modified(self):
        c = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        lines = yield c.cmd("FETCH 1:3 MODSEQ")
        mods = [modseq_of(x) for x in untagged(lines, "FETCH")]
        yield c.cmd("STORE 2 +FLAGS.SILENT (\\Flagged)")
        lines = yield c.cmd(f"STORE 1:3 (UNCHANGEDSINCE {max(mods)}) +FLAGS (\\Seen)")
        # RFC 7162 3.1.3: message 2 changed since, it fails: MODIFIED 2.
        self.assertIn("[MODIFIED 2]", tagged(lines))
        self.assertTrue(tagged(lines).startswith("OK"))
        fetched = untagged(lines, "FETCH")
        self.assertEqual(len(fetched), 2, lines)
        self.assertTrue(all("MODSEQ" in x for x in fetched))
        lines = yield c.cmd(f"UID STORE 1:3 (UNCHANGEDSINCE {max(mods)}) +FLAGS (\\Answered)")
        self.assertIn("[MODIFIED 1:3]", tagged(lines))
        # UNCHANGEDSINCE 0 always fails (RFC 7162 3.1.3).
        lines = yield c.cmd("STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
        self.assertIn("[MODIFIED 1]", tagged(lines))

    @defer.inlineCallbacks
    def test_silent_with_unchangedsince_sends_modseq(self):
        """RFC 7162 3.1.3: with .SILENT the server still sends MODSEQ of changed messages."""
        c = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        lines = yield c.cmd("STORE 1 (UNCHANGEDSINCE 999999) +FLAGS.SILENT (\\Seen)")
        self.assertEqual(len(untagged(lines, "FETCH")), 1)
        self.assertIn("MODSEQ", untagged(lines, "FETCH")[0])

    @defer.inlineCallbacks
    def test_implicit_enable(self):
        """RFC 7162 3.1: CHANGEDSINCE, UNCHANGEDSINCE, FETCH MODSEQ, SEARCH MODSEQ enable
        CONDSTORE; later SELECTs carry HIGHESTMODSEQ."""
        for cmd in ("FETCH 1 MODSEQ", "SEARCH MODSEQ 1", "FETCH 1 FLAGS (CHANGEDSINCE 1)",
                    "STORE 1 (UNCHANGEDSINCE 99999) +FLAGS (\\Seen)", "STATUS Archive (HIGHESTMODSEQ)"):
            c = yield self.logged_in(select="INBOX")
            yield c.cmd(cmd)
            lines = yield c.cmd("FETCH 1 FLAGS")
            self.assertIn("MODSEQ", untagged(lines, "FETCH")[0], cmd)
            lines = yield c.cmd("SELECT INBOX")
            self.assertTrue(any("HIGHESTMODSEQ" in x for x in untagged(lines)), cmd)

    @defer.inlineCallbacks
    def test_search_modseq(self):
        c = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        lines = yield c.cmd("STORE 2 +FLAGS (\\Seen)")
        m = modseq_of(untagged(lines)[0])
        lines = yield c.cmd(f"SEARCH MODSEQ {m}")
        # RFC 7162 3.1.5: the SEARCH response ends with (MODSEQ highest).
        self.assertEqual(untagged(lines), [f"SEARCH 2 (MODSEQ {m})"])

    @defer.inlineCallbacks
    def test_other_session_flags_carry_modseq(self):
        c = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1 +FLAGS (\\Seen)")
        lines = yield c.cmd("NOOP")
        self.assertIn("MODSEQ", untagged(lines, "FETCH")[0])


class CondstoreEnableTests(IMAPSessionTest):
    """RFC 7162 3.1 and 3.1.10, as imaptest's esearch-condstore group checks them."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(4)

    @defer.inlineCallbacks
    def test_fetch_modseq_while_selected_sends_highestmodseq(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("STATUS INBOX (HIGHESTMODSEQ)")
        highest = int(re.search(r"HIGHESTMODSEQ (\d+)", untagged(lines)[-1]).group(1))
        self.assertIn(f"OK [HIGHESTMODSEQ {highest}] modseq", untagged(lines))
        # Only once: CONDSTORE is on now.
        lines = yield c.cmd("FETCH 1 MODSEQ")
        self.assertEqual([x for x in untagged(lines) if "HIGHESTMODSEQ" in x], [])

    @defer.inlineCallbacks
    def test_fetch_modseq_enables_with_session_modseq(self):
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 2 +FLAGS (\\Seen)")
        lines = yield c.cmd("FETCH 1 MODSEQ")
        hms = [x for x in untagged(lines) if x.startswith("OK [HIGHESTMODSEQ")]
        self.assertEqual(len(hms), 1, lines)
        self.assertEqual(len(untagged(lines, "FETCH")), 2, lines)  # its own and message 2's
        lines = yield c.cmd("STATUS INBOX (HIGHESTMODSEQ)")
        now = int(re.search(r"HIGHESTMODSEQ (\d+)", untagged(lines)[0]).group(1))
        self.assertLessEqual(int(re.search(r"\d+", hms[0]).group(0)), now)

    @defer.inlineCallbacks
    def test_esearch_min_max_modseq_of_returned(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("FETCH 1 MODSEQ")
        mods = {}
        for n in (1, 3, 2, 4):
            lines = yield c.cmd(f"STORE {n} +FLAGS (\\Seen)")
            mods[n] = modseq_of(untagged(lines, "FETCH")[0])
        q = '1:3 MODSEQ "/flags/\\\\seen" all 1'
        lines = yield c.cmd(f"SEARCH RETURN (MIN) {q}", tag="a")
        self.assertEqual(untagged(lines), [f'ESEARCH (TAG "a") MIN 1 MODSEQ {mods[1]}'])
        lines = yield c.cmd(f"SEARCH RETURN (MAX) {q}", tag="b")
        self.assertEqual(untagged(lines), [f'ESEARCH (TAG "b") MAX 3 MODSEQ {mods[3]}'])
        lines = yield c.cmd(f"SEARCH RETURN () {q}", tag="c")
        self.assertEqual(untagged(lines), [f'ESEARCH (TAG "c") ALL 1:3 MODSEQ {mods[2]}'])
        lines = yield c.cmd(f"SEARCH RETURN (MIN MAX) 2:3 MODSEQ 1", tag="d")
        self.assertEqual(untagged(lines), [f'ESEARCH (TAG "d") MIN 2 MAX 3 MODSEQ {mods[2]}'])
        lines = yield c.cmd(f"SEARCH RETURN (ALL) 2:3 MODSEQ {mods[4]}", tag="e")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "e")'])
