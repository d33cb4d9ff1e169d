"""Hostile SEARCH programs (RFC 9051 6.4.4): nesting of OR, NOT and parentheses far
deeper than any real client sends gets BAD, never NO [SERVERBUG] from a RecursionError,
and the connection stays usable; deep but allowed programs give correct results."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.imapserver import parser, search
from moxtw.imapserver.types import SearchKey
from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged

HOSTILE_DEPTH = 600

# Deep programs, each valid but for its nesting.
HOSTILE_PROGRAMS = {
    "or": "OR " * HOSTILE_DEPTH + "SEEN" + " UNSEEN" * HOSTILE_DEPTH,
    "or-body": "OR " * HOSTILE_DEPTH + 'BODY "x"' + ' SUBJECT "y"' * HOSTILE_DEPTH,
    "not": "NOT " * HOSTILE_DEPTH + "ALL",
    "not-flag": "NOT " * HOSTILE_DEPTH + "SEEN",
    "parens": "(" * HOSTILE_DEPTH + "ALL" + ")" * HOSTILE_DEPTH,
    "not-parens": "NOT (" * HOSTILE_DEPTH + "ALL" + ")" * HOSTILE_DEPTH,
    "or-parens": "OR (" * HOSTILE_DEPTH + "SEEN" + ") SEEN" * HOSTILE_DEPTH,
}

COMMANDS = (
    "SEARCH",
    "UID SEARCH",
    "SEARCH RETURN (ALL)",  # RFC 4731 ESEARCH
    "UID SEARCH RETURN (COUNT SAVE)",  # RFC 5182 SEARCHRES
    "SORT (SUBJECT) UTF-8",  # RFC 5256
    "UID THREAD REFERENCES UTF-8",
)


class HostileSearchTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)
        self.c = yield self.logged_in(select="INBOX")
        self.assertOK((yield self.c.cmd("STORE 2,4 +FLAGS (\\Seen)")))

    @defer.inlineCallbacks
    def search(self, program, command="SEARCH"):
        lines = yield self.c.cmd(f"{command} {program}")
        self.assertOK(lines)
        return [int(n) for n in untagged(lines, "SEARCH")[0].split()[1:]]

    @defer.inlineCallbacks
    def test_deep_nesting_refused(self):
        for name, program in HOSTILE_PROGRAMS.items():
            # A fresh connection per program: after MAX_BAD bad commands a connection is
            # closed (session.MAX_BAD), which is right but not what is tested here.
            self.c = yield self.logged_in(select="INBOX")
            for command in COMMANDS:
                lines = yield self.c.cmd(f"{command} {program}")
                reply = tagged(lines)
                self.assertNotIn("SERVERBUG", reply, (name, command))
                self.assertTrue(reply.startswith("BAD"), (name, command, reply))
                self.assertIn("nested too deeply", reply)
                # The connection is still usable, and the mailbox still searchable.
                self.assertOK((yield self.c.cmd("NOOP")))
        self.assertEqual((yield self.search("SEEN")), [2, 4])

    @defer.inlineCallbacks
    def test_at_the_limit(self):
        """The deepest program the parser takes is evaluated, with the right result."""
        n = parser.MAX_SEARCH_DEPTH - 1  # the top-level AND is one level
        self.assertEqual((yield self.search("NOT " * n + "SEEN")), [1, 3, 5])
        self.assertEqual((yield self.search("NOT " * (n - 1) + "SEEN")), [2, 4])
        # Through the per-message evaluator (BODY is not answered by flags alone).
        self.assertEqual((yield self.search("NOT " * n + 'BODY "body 3"')), [1, 2, 4, 5])
        lines = yield self.c.cmd("SEARCH " + "NOT " * (n + 1) + "SEEN")
        self.assertTrue(tagged(lines).startswith("BAD"), lines)

    @defer.inlineCallbacks
    def test_moderately_deep_or(self):
        """50 nested ORs, as a client might build from a list of senders."""
        depth = 50
        subjects = [f'SUBJECT "msg {i % 7}"' for i in range(depth + 1)]  # msg 0, 6: none
        program = "".join(f"OR {s} " for s in subjects[:-1]) + subjects[-1]
        self.assertEqual((yield self.search(program)), [1, 2, 3, 4, 5])
        program = "OR " * depth + 'BODY "body 3"' + " UID 999" * depth
        self.assertEqual((yield self.search(program)), [3])
        self.assertEqual((yield self.search(program, "UID SEARCH")), [3])
        # Index keys only: answered by set operations over index queries.
        program = "OR " * depth + "SEEN" + " DELETED" * depth
        self.assertEqual((yield self.search(program)), [2, 4])
        program = "(" * parser.MAX_PAREN_DEPTH + "NOT " * 40 + "UNSEEN" + ")" * parser.MAX_PAREN_DEPTH
        self.assertEqual((yield self.search(program)), [1, 3, 5])
        lines = yield self.c.cmd("SEARCH RETURN (COUNT) " + "OR " * depth + "SEEN" + " DRAFT" * depth)
        self.assertOK(lines)
        self.assertIn("COUNT 2", untagged(lines, "ESEARCH")[0])


class DepthGuardTests(unittest.TestCase):
    """search() refuses a program nested deeper than MAX_DEPTH by itself, whatever built
    it, before any recursion."""

    def test_deep_program(self):
        key = SearchKey("all")
        for i in range(5000):
            key = SearchKey("not", [key]) if i % 2 else SearchKey("or", [key, SearchKey("seen")])
        d = search.search(None, 1, [1, 2, 3], SearchKey("and", [key]))
        self.failureResultOf(d, search.SearchError)

    def test_limit(self):
        key = SearchKey("all")
        for _ in range(search.MAX_DEPTH - 1):
            key = SearchKey("not", [key])
        d = search.search(None, 1, [], SearchKey("and", [key]))
        self.assertEqual(self.successResultOf(d), [])
        d = search.search(None, 1, [], SearchKey("and", [SearchKey("not", [key])]))
        self.failureResultOf(d, search.SearchError)
