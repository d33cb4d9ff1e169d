"""SEARCH / UID SEARCH as a command (RFC 9051 6.4.4, RFC 3501 6.4.4, RFC 4731 ESEARCH,
RFC 5182 SEARCHRES); the search evaluation itself is tested in test_imap_search."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, untagged


class SearchTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver("alpha", flags=["\\Seen"])
        yield self.deliver("beta")
        yield self.deliver("gamma", flags=["\\Flagged"])
        yield self.deliver("delta")

    @defer.inlineCallbacks
    def test_rev1_search(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH UNSEEN")
        self.assertEqual(untagged(lines), ["SEARCH 2 3 4"])
        lines = yield c.cmd("SEARCH SUBJECT nothing")
        self.assertEqual(untagged(lines), ["SEARCH"])
        lines = yield c.cmd("UID SEARCH FLAGGED")
        self.assertEqual(untagged(lines), ["SEARCH 3"])

    @defer.inlineCallbacks
    def test_sequence_number_out_of_range(self):
        """Sequence numbers above the message count name no message (as Dovecot answers,
        and imaptest's esearch group expects): SEARCH is OK, ESEARCH empty."""
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH 99")
        self.assertOK(lines)
        self.assertEqual(untagged(lines), ["SEARCH"])
        lines = yield c.cmd("SEARCH 2:5")
        self.assertEqual(untagged(lines), ["SEARCH 2 3 4"])
        for ret, want in [("()", ""), ("(MIN)", ""), ("(MAX)", ""), ("(COUNT)", " COUNT 0")]:
            lines = yield c.cmd(f"SEARCH RETURN {ret} 1000", tag="r")
            self.assertOK(lines)
            self.assertEqual(untagged(lines), [f'ESEARCH (TAG "r"){want}'])
            lines = yield c.cmd(f"UID SEARCH RETURN {ret} 1000", tag="u")
            self.assertEqual(untagged(lines), [f'ESEARCH (TAG "u") UID{want}'])
        lines = yield c.cmd("UID SEARCH UID 99")
        self.assertEqual(untagged(lines), ["SEARCH"])
        lines = yield c.cmd("SEARCH 2:*")
        self.assertEqual(untagged(lines), ["SEARCH 2 3 4"])

    @defer.inlineCallbacks
    def test_rev2_search_is_esearch(self):
        """RFC 9051 6.4.4 / 7.3.4: IMAP4rev2 answers SEARCH with ESEARCH."""
        c = yield self.logged_in(enable="IMAP4rev2", select="INBOX")
        lines = yield c.cmd("SEARCH UNSEEN", tag="s1")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "s1") ALL 2:4'])
        lines = yield c.cmd("UID SEARCH SUBJECT nothing", tag="s2")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "s2") UID'])

    @defer.inlineCallbacks
    def test_esearch_return_options(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN", tag="e1")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "e1") MIN 2 MAX 4 ALL 2:4 COUNT 3'])
        lines = yield c.cmd("UID SEARCH RETURN () ALL", tag="e2")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "e2") UID ALL 1:4'])
        lines = yield c.cmd("SEARCH RETURN (COUNT) SUBJECT nothing", tag="e3")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "e3") COUNT 0'])
        lines = yield c.cmd("SEARCH RETURN (MIN) SUBJECT nothing", tag="e4")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "e4")'])

    @defer.inlineCallbacks
    def test_save_and_use(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH RETURN (SAVE) UNSEEN")
        self.assertEqual(untagged(lines), [])  # RFC 5182 2.1: SAVE alone, no ESEARCH
        lines = yield c.cmd("FETCH $ UID")
        self.assertEqual(len(untagged(lines, "FETCH")), 3)
        lines = yield c.cmd("SEARCH $ FLAGGED")
        self.assertEqual(untagged(lines), ["SEARCH 3"])
        lines = yield c.cmd("UID SEARCH UID $")
        self.assertEqual(untagged(lines), ["SEARCH 2 3 4"])

    @defer.inlineCallbacks
    def test_save_with_min_max(self):
        """RFC 5182 2.1: with MIN and/or MAX, only those are saved."""
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (SAVE MIN) UNSEEN")
        lines = yield c.cmd("UID FETCH $ UID")
        self.assertEqual(untagged(lines, "FETCH"), ["2 FETCH (UID 2)"])
        yield c.cmd("SEARCH RETURN (SAVE MIN MAX) UNSEEN")
        lines = yield c.cmd("UID FETCH $ UID")
        self.assertEqual(untagged(lines, "FETCH"), ["2 FETCH (UID 2)", "4 FETCH (UID 4)"])
        yield c.cmd("SEARCH RETURN (SAVE MAX COUNT) UNSEEN")
        lines = yield c.cmd("UID FETCH $ UID")
        self.assertEqual(len(untagged(lines, "FETCH")), 3)

    @defer.inlineCallbacks
    def test_dollar_before_save_is_empty(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH $ UID")
        self.assertOK(lines)
        self.assertEqual(untagged(lines, "FETCH"), [])
        lines = yield c.cmd("SEARCH $")
        self.assertEqual(untagged(lines), ["SEARCH"])
        self.assertOK((yield c.cmd("STORE $ +FLAGS (\\Seen)")))
        self.assertOK((yield c.cmd("COPY $ Archive")))

    @defer.inlineCallbacks
    def test_failed_search_empties_saved_result(self):
        """RFC 5182 2.1: a SEARCH ... SAVE that fails makes $ empty."""
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (SAVE) ALL")
        lines = yield c.cmd("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
        self.assertNO(lines, "BADCHARSET")
        lines = yield c.cmd("FETCH $ UID")
        self.assertEqual(untagged(lines, "FETCH"), [])

    @defer.inlineCallbacks
    def test_expunged_messages_leave_saved_result(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (SAVE) ALL")
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXPUNGE")
        lines = yield c.cmd("FETCH $ UID")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 2)", "2 FETCH (UID 3)", "3 FETCH (UID 4)"])

    @defer.inlineCallbacks
    def test_bad_input(self):
        c = yield self.logged_in(select="INBOX")
        for cmd in ("SEARCH", "SEARCH FOO", "SEARCH (ALL", "SEARCH 0", "SEARCH 1:x", "SEARCH RETURN (FOO) ALL",
                    "SEARCH " + "(" * 100 + "ALL" + ")" * 100, "SEARCH " + "NOT " * 5000 + "ALL",
                    ):
            lines = yield c.cmd(cmd)
            self.assertTrue(lines[-1].split(b" ")[1] in (b"BAD", b"NO"), (cmd, lines))
        self.assertNO((yield c.cmd("SEARCH CHARSET FOO ALL")), "BADCHARSET")
        lines = yield c.cmd("SEARCH CHARSET UTF-8 SUBJECT \"gamma\"")
        self.assertEqual(untagged(lines), ["SEARCH 3"])

    @defer.inlineCallbacks
    def test_sequence_ranges(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SEARCH 2:*")
        self.assertEqual(untagged(lines), ["SEARCH 2 3 4"])
        lines = yield c.cmd("SEARCH *:3")
        self.assertEqual(untagged(lines), ["SEARCH 3 4"])
        lines = yield c.cmd("UID SEARCH UID 3:999")
        self.assertEqual(untagged(lines), ["SEARCH 3 4"])
        lines = yield c.cmd("UID SEARCH UID 999")  # "*" is the highest UID: none higher
        self.assertEqual(untagged(lines), ["SEARCH"])
        lines = yield c.cmd("UID SEARCH UID 999:*")  # RFC 9051 6.4.4: 999:* includes UID 4
        self.assertEqual(untagged(lines), ["SEARCH 4"])


class AnnouncedExtensionTests(IMAPSessionTest):
    """SORT=DISPLAY (RFC 5957) and WITHIN (RFC 5032) are announced and work as commands."""

    @defer.inlineCallbacks
    def test_sort_display_and_within(self):
        yield self.deliver("one", frm='"Zed" <a@example.org>')
        yield self.deliver("two", frm='"Alice" <z@example.org>')
        c = yield self.logged_in(select="INBOX")
        caps = untagged((yield c.cmd("CAPABILITY")))[0].split()
        self.assertIn("SORT=DISPLAY", caps)
        self.assertIn("WITHIN", caps)
        lines = yield c.cmd("SORT (DISPLAYFROM) UTF-8 ALL")
        self.assertEqual(untagged(lines), ["SORT 2 1"])
        lines = yield c.cmd("SORT (FROM) UTF-8 ALL")
        self.assertEqual(untagged(lines), ["SORT 1 2"])
        lines = yield c.cmd("SEARCH YOUNGER 3600")
        self.assertEqual(untagged(lines), ["SEARCH 1 2"])
        lines = yield c.cmd("SEARCH OLDER 3600")
        self.assertEqual(untagged(lines), ["SEARCH"])


class ESortPartialTests(IMAPSessionTest):
    """ESORT (RFC 5267 3.2) and PARTIAL (RFC 9394), as imaptest's esort, search-partial
    and sort-partial groups check them."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)

    @defer.inlineCallbacks
    def test_esort(self):
        c = yield self.logged_in(select="INBOX")
        caps = untagged((yield c.cmd("CAPABILITY")))[0].split()
        self.assertIn("ESORT", caps)
        self.assertIn("PARTIAL", caps)
        for ret, want in [("(MIN)", "MIN 5"), ("(MAX)", "MAX 1"), ("(ALL)", "ALL 5,4,3,2,1"),
                          ("(COUNT)", "COUNT 5"), ("()", "ALL 5,4,3,2,1"), ("(MIN MAX COUNT)", "MIN 5 MAX 1 COUNT 5")]:
            lines = yield c.cmd(f"SORT RETURN {ret} (REVERSE SUBJECT) US-ASCII ALL", tag="s")
            self.assertEqual(untagged(lines), [f'ESEARCH (TAG "s") {want}'])
        lines = yield c.cmd("UID SORT RETURN (ALL) (SUBJECT) US-ASCII 2:4", tag="u")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "u") UID ALL 2:4'])
        lines = yield c.cmd("SORT RETURN (COUNT) (SUBJECT) US-ASCII SUBJECT nothing", tag="n")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "n") COUNT 0'])
        # SAVE with SORT: the set, for $.
        yield c.cmd("SORT RETURN (SAVE) (REVERSE SUBJECT) US-ASCII 2:3")
        lines = yield c.cmd("SEARCH $")
        self.assertEqual(untagged(lines), ["SEARCH 2 3"])

    @defer.inlineCallbacks
    def test_search_partial(self):
        c = yield self.logged_in(select="INBOX")
        cases = [("1:1", "1:1 1"), ("2:4", "2:4 2:4"), ("4:2", "2:4 2:4"), ("1:6", "1:6 1:5"),
                 ("6:6", "6:6 NIL"), ("-1:-2", "-1:-2 4:5"), ("-5:-9", "-5:-9 1"), ("-6:-9", "-6:-9 NIL")]
        for rng, want in cases:
            lines = yield c.cmd(f"SEARCH RETURN (PARTIAL {rng}) ALL", tag="p")
            self.assertEqual(untagged(lines), [f'ESEARCH (TAG "p") PARTIAL ({want})'], rng)
        lines = yield c.cmd("SEARCH RETURN (PARTIAL 2:3) 1:2,4:5", tag="q")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "q") PARTIAL (2:3 2,4)'])
        lines = yield c.cmd("SEARCH RETURN (COUNT PARTIAL 1:2) ALL", tag="r")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "r") COUNT 5 PARTIAL (1:2 1:2)'])
        lines = yield c.cmd("UID SEARCH RETURN (PARTIAL 5:10) ALL", tag="t")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "t") UID PARTIAL (5:10 5)'])
        for bad in ("1", "1:*", "*:1"):
            self.assertBAD((yield c.cmd(f"SEARCH RETURN (PARTIAL {bad}) ALL")))
        # SAVE with PARTIAL saves the range's messages (RFC 9394 3.2).
        yield c.cmd("SEARCH RETURN (SAVE PARTIAL 2:3) ALL")
        lines = yield c.cmd("SEARCH $")
        self.assertEqual(untagged(lines), ["SEARCH 2 3"])

    @defer.inlineCallbacks
    def test_sort_partial(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("SORT RETURN (PARTIAL 2:4) (REVERSE SUBJECT) US-ASCII ALL", tag="p")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "p") PARTIAL (2:4 4,3,2)'])
        lines = yield c.cmd("SORT RETURN (PARTIAL 1:2) (SUBJECT) US-ASCII ALL", tag="p")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "p") PARTIAL (1:2 1:2)'])
