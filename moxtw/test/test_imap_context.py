"""SEARCH and SORT contexts (RFC 5267 4, CONTEXT=SEARCH and CONTEXT=SORT): a SEARCH or
SORT with RETURN (UPDATE) is kept current with ESEARCH ADDTO/REMOVEFROM responses as
flags change, messages arrive and messages are expunged, until CANCELUPDATE."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.imapserver import context as contextmod
from moxtw.imapserver import parser
from moxtw.test.imaphelper import IMAPSessionTest, message, untagged


def esearch(lines):
    return untagged(lines, "ESEARCH")


class SearchContextTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)

    @defer.inlineCallbacks
    def test_updates_on_store_expunge_append_until_cancelled(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH RETURN (UPDATE) SEEN", tag="S1")
        self.assertOK(lines)
        # UPDATE alone: the ESEARCH carries only the tag; the result comes as updates.
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S1")'])

        lines = yield c.cmd("STORE 1,2,4 +FLAGS (\\Seen)")
        self.assertOK(lines)
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S1") ADDTO (0 1:2,4)'])
        # The update is sent before the command's OK (RFC 5267 4.3).
        self.assertTrue(lines[-2].startswith(b"* ESEARCH"), lines)

        lines = yield c.cmd("STORE 1 -FLAGS.SILENT (\\Seen)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S1") REMOVEFROM (0 1)'])

        # Expunged members leave the result before the EXPUNGE, in the numbers valid then.
        yield c.cmd("STORE 4:5 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("EXPUNGE")
        texts = untagged(lines)
        self.assertEqual(texts[0], 'ESEARCH (TAG "S1") REMOVEFROM (0 4)')
        self.assertEqual(texts[1:], ["5 EXPUNGE", "4 EXPUNGE"])

        # A message arriving (here by another session's APPEND) that matches is added.
        other = yield self.logged_in()
        self.assertOK((yield other.cmd('APPEND INBOX (\\Seen) {%d+}\r\n%s' % (
            len(message("new")), message("new").decode()))))
        yield self.deliver("unseen")
        lines = yield c.cmd("NOOP")
        self.assertIn("5 EXISTS", untagged(lines))
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S1") ADDTO (0 4)'])

        self.assertOK((yield c.cmd('CANCELUPDATE "S1"')))
        lines = yield c.cmd("STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), [])
        # Cancelled twice: there is no such context any more.
        self.assertNO((yield c.cmd('CANCELUPDATE "S1"')))

    @defer.inlineCallbacks
    def test_other_sessions_flag_changes(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH RETURN (UPDATE ALL) FLAGGED", tag="F")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "F")'])
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 2:3 +FLAGS (\\Flagged)")
        lines = yield c.cmd("NOOP")
        self.assertEqual(len(untagged(lines, "FETCH")), 2)
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "F") ADDTO (0 2:3)'])
        yield other.cmd("STORE 2 -FLAGS (\\Flagged)")
        lines = yield c.cmd("NOOP")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "F") REMOVEFROM (0 2)'])

    @defer.inlineCallbacks
    def test_uid_search_context_sends_uids(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1 +FLAGS (\\Deleted)")
        yield c.cmd("EXPUNGE")  # sequence numbers and UIDs differ from here on
        lines = yield c.cmd("UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT \"msg 3\"", tag="U")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "U") UID ALL 3'])
        lines = yield c.cmd("STORE 3:4 +FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "U") UID ADDTO (0 4:5)'])  # messages 3:4 are UIDs 4:5
        yield c.cmd("UID STORE 3 +FLAGS (\\Seen)")
        lines = yield c.cmd("UID STORE 3 -FLAGS (\\Seen)")  # still matches the subject
        self.assertEqual(esearch(lines), [])
        lines = yield c.cmd("UID STORE 4 -FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "U") UID REMOVEFROM (0 4)'])

    @defer.inlineCallbacks
    def test_context_ends_with_the_selection(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (UPDATE) SEEN", tag="S")
        yield c.select("INBOX")
        lines = yield c.cmd("STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), [])
        self.assertNO((yield c.cmd('CANCELUPDATE "S"')))

    @defer.inlineCallbacks
    def test_same_tag_replaces_context(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (UPDATE) SEEN", tag="S")
        yield c.cmd("SEARCH RETURN (UPDATE) FLAGGED", tag="S")
        lines = yield c.cmd("STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), [])
        lines = yield c.cmd("STORE 1 +FLAGS (\\Flagged)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S") ADDTO (0 1)'])

    @defer.inlineCallbacks
    def test_noupdate_beyond_limit_and_for_partial(self):
        c = yield self.logged_in(select="INBOX")
        for i in range(contextmod.MAX_CONTEXTS):
            self.assertEqual(untagged((yield c.cmd("SEARCH RETURN (UPDATE) SEEN", tag=f"T{i}")), "NO"), [])
        lines = yield c.cmd("SEARCH RETURN (UPDATE ALL) ALL", tag="X")
        # RFC 5267 4.3.1: NOUPDATE, and the result all the same.
        self.assertOK(lines)
        self.assertIn('NO [NOUPDATE "X"]', "\n".join(untagged(lines)))
        self.assertIn('ESEARCH (TAG "X") ALL 1:5', untagged(lines))
        lines = yield c.cmd("STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(len(esearch(lines)), contextmod.MAX_CONTEXTS)
        # Cancelling makes room again.
        self.assertOK((yield c.cmd('CANCELUPDATE "T0" "T1"')))
        lines = yield c.cmd("SEARCH RETURN (UPDATE PARTIAL 1:2) ALL", tag="P")
        self.assertIn('NO [NOUPDATE "P"]', "\n".join(untagged(lines)))
        self.assertIn('ESEARCH (TAG "P") PARTIAL (1:2 1:2)', untagged(lines))

    @defer.inlineCallbacks
    def test_cancelupdate_hostile(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (UPDATE) SEEN", tag="S")
        for bad in ("CANCELUPDATE", "CANCELUPDATE S", "CANCELUPDATE \"S\" ", "CANCELUPDATE ()",
                    "CANCELUPDATE \"S\"\"S\"", "CANCELUPDATE {1+}\r\nS"):
            lines = yield c.cmd(bad)
            self.assertBAD(lines)
        self.assertNO((yield c.cmd('CANCELUPDATE "S" "nope"')))
        # Nothing was cancelled by the refused command.
        lines = yield c.cmd("STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "S") ADDTO (0 1)'])
        # Not selected: refused without a mailbox.
        yield c.cmd("UNSELECT")
        self.assertBAD((yield c.cmd('CANCELUPDATE "S"')))


class SortContextTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        for subject in ("d", "b", "e", "a", "c"):
            yield self.deliver(subject)

    @defer.inlineCallbacks
    def test_positions_in_sort_order(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 SEEN", tag="O")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "O")'])  # nothing seen yet
        # Subjects a(4) b(2) c(5) d(1) e(3): seen 1 (d) and 4 (a).
        lines = yield c.cmd("STORE 1,4 +FLAGS.SILENT (\\Seen)")
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "O") ADDTO (1 4 2 1)'])
        lines = yield c.cmd("STORE 2,5 +FLAGS.SILENT (\\Seen)")  # b and c: a b c d
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "O") ADDTO (2 2 3 5)'])
        lines = yield c.cmd("STORE 1,2 -FLAGS.SILENT (\\Seen)")  # d at 4, then b at 2
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "O") REMOVEFROM (4 1 2 2)'])
        # The context matches a fresh SORT.
        lines = yield c.cmd("SORT RETURN (ALL) (SUBJECT) UTF-8 SEEN", tag="Q")
        self.assertIn('ESEARCH (TAG "Q") ALL 4:5', untagged(lines))

    @defer.inlineCallbacks
    def test_reverse_and_uid(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("UID SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 ALL", tag="R")
        # e d c b a
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "R") UID ALL 3,1,5,2,4'])
        yield c.cmd("STORE 5 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("EXPUNGE")
        self.assertEqual(untagged(lines)[0], 'ESEARCH (TAG "R") UID REMOVEFROM (3 5)')
        yield self.deliver("bb")
        lines = yield c.cmd("NOOP")
        # e d bb b a
        self.assertEqual(esearch(lines), ['ESEARCH (TAG "R") UID ADDTO (3 6)'])


class ContextUnitTests(unittest.TestCase):
    def test_search_context(self):
        c = contextmod.SearchContext("t", False, None, [5, 1, 3])
        self.assertEqual(list(c.members), [1, 3, 5])
        self.assertEqual(c.update([1, 2, 4], {2, 4}), ([(0, 1)], [(0, 2), (0, 4)]))
        self.assertEqual(list(c.members), [2, 3, 4, 5])
        self.assertEqual(c.remove([9, 3]), [(0, 3)])
        self.assertIn(4, c)
        self.assertNotIn(3, c)

    def test_sort_context_positions(self):
        keys = {u: (k,) for u, k in {1: "d", 2: "b", 3: "e", 4: "a", 5: "c"}.items()}
        c = contextmod.SortContext("t", False, None, [("subject", False)], [4, 2, 1], keys)
        self.assertEqual(c.order, [4, 2, 1])
        removals, additions = c.update([3, 5, 2], {3, 5}, keys)
        self.assertEqual(removals, [(2, 2)])
        # a c d e: c at 2, e at 4, positions in the final result.
        self.assertEqual(additions, [(2, 5), (4, 3)])
        self.assertEqual(c.order, [4, 5, 1, 3])
        # Equal keys: mailbox (UID) order.
        keys[6] = ("c",)
        self.assertEqual(c.update([6], {6}, keys), ([], [(3, 6)]))
        self.assertEqual(c.remove([1, 4, 3]), [(5, 3), (4, 1), (1, 4)])

    def test_reverse(self):
        keys = {1: (1,), 2: (2,), 3: (3,)}
        c = contextmod.SortContext("t", False, None, [("size", True)], [3, 2, 1], keys)
        keys[4] = (2,)
        # REVERSE flips the criterion, not the UID tiebreak.
        self.assertEqual(c.update([4], {4}, keys), ([], [(3, 4)]))
        self.assertEqual(c.order, [3, 2, 4, 1])

    def test_pairs_text(self):
        same = lambda u: u  # noqa: E731
        self.assertEqual(contextmod.pairs_text([(0, 4), (0, 1), (0, 2)], same, False), "0 1:2,4")
        self.assertIsNone(contextmod.pairs_text([(0, 4)], lambda u: None, False))
        self.assertEqual(contextmod.pairs_text([(1, 4), (2, 5), (3, 9)], same, True), "1 4:5 3 9")
        # Removals, highest position first, join downwards.
        self.assertEqual(contextmod.pairs_text([(3, 7), (2, 6), (1, 2)], same, True), "2 6:7 1 2")
        self.assertEqual(contextmod.uid_ranges([5, 1, 2, 3, 9]), ((1, 3), (5, 5), (9, 9)))


class ParserTests(unittest.TestCase):
    def test_cancelupdate(self):
        cmd = parser.parse_command(b'A1 CANCELUPDATE "a" "b c"\r\n')
        self.assertEqual(cmd.args, {"tags": ["a", "b c"]})

    def test_return_update_context(self):
        cmd = parser.parse_command(b"A1 SEARCH RETURN (UPDATE CONTEXT COUNT) ALL\r\n")
        self.assertEqual(cmd.args["program"].return_opts, ("UPDATE", "COUNT"))
        cmd = parser.parse_command(b"A1 SEARCH RETURN (CONTEXT) ALL\r\n")
        self.assertEqual(cmd.args["program"].return_opts, ("ALL",))
