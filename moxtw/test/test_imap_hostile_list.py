"""Hostile LIST and LSUB patterns (issue 10, found by the fuzzer): a pattern such as
``*%*%*%...x`` took exponential time in a backtracking regex and blocked the reactor.
Patterns now match in time linear in the mailbox name; the matcher agrees with the
RFC 9051 6.3.9 meaning of ``*`` and ``%`` on every small pattern and name."""

import itertools
import random
import re
import time

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.imapserver.session import _pattern_regex
from moxtw.test.imaphelper import IMAPSessionTest, untagged


def _reference(pattern):
    # The plain translation (fine for trusted patterns, exponential for hostile ones).
    out = []
    for c in pattern:
        out.append(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c))
    return re.compile("".join(out) + r"\Z", re.S)


class PatternMatcherTests(unittest.TestCase):
    def test_agrees_with_wildcard_meaning(self):
        """Every pattern up to 5 tokens over a, /, *, % against every name up to 5
        characters over a, b, /."""
        names = ["".join(t) for n in range(6) for t in itertools.product("ab/", repeat=n)]
        for n in range(6):
            for toks in itertools.product("a/*%", repeat=n):
                p = "".join(toks)
                m, ref = _pattern_regex(p), _reference(p)
                for name in names:
                    self.assertEqual(m.match(name), bool(ref.match(name)), (p, name))

    def test_agrees_on_longer_random_patterns(self):
        """Longer patterns, mixed and single-kind wildcards (each kind has its own
        matcher), against the reference."""
        rng = random.Random(10)
        for _ in range(3000):
            p = "".join(rng.choice("ab/*%") for _ in range(rng.randrange(12)))
            m, ref = _pattern_regex(p), _reference(p)
            for _ in range(10):
                name = "".join(rng.choice("ab/") for _ in range(rng.randrange(16)))
                self.assertEqual(m.match(name), bool(ref.match(name)), (p, name))

    def test_common_patterns_take_the_fast_path(self):
        for p in ("*", "%", "INBOX", "fz/*", "fz/%", "a*b*c", "%/%/x%"):
            self.assertTrue(_pattern_regex(p).fast, p)
        self.assertFalse(_pattern_regex("a*/%").fast)

    def test_overlong_patterns_never_match_and_cost_nothing(self):
        """More literal characters than a mailbox name can have (1000 bytes): no match,
        without building a matcher (building one for 1 MB took seconds)."""
        t0 = time.monotonic()
        self.assertFalse(_pattern_regex("*a%" * 400000).match("a" * 1000))
        self.assertFalse(_pattern_regex("a" * 1001 + "*").match("a" * 1001))
        self.elapsed = time.monotonic() - t0

    test_overlong_patterns_never_match_and_cost_nothing.timeout = 20

    def test_inbox_case_insensitive(self):
        self.assertTrue(_pattern_regex("inbox").match("Inbox"))
        self.assertTrue(_pattern_regex("INBOX/%").match("Inbox/Sub"))
        self.assertFalse(_pattern_regex("INBOX/%").match("Inbox/Sub/Deeper"))
        self.assertTrue(_pattern_regex("inbox*").match("Inbox/Sub/Deeper"))

    def test_hostile_pattern_linear(self):
        """Exponential with a backtracking regex; here a few milliseconds. The time is
        reported, not asserted: the test's timeout catches a regression."""
        t0 = time.monotonic()
        self.assertFalse(_pattern_regex("*%" * 4000 + "x").match("a" * 1000 + "y"))
        self.assertTrue(_pattern_regex("*a" * 200 + "*").match("a" * 1000))
        self.elapsed = time.monotonic() - t0

    test_hostile_pattern_linear.timeout = 20


class HostileListTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_list_hostile_pattern_answers(self):
        """LIST and LSUB with a pathological pattern against long mailbox names
        complete (no match) instead of blocking the server."""
        c = yield self.logged_in()
        long_name = "a" * 200
        self.assertOK((yield c.cmd(f"CREATE {long_name}")))
        self.assertOK((yield c.cmd(f"SUBSCRIBE {long_name}")))
        pattern = "*%" * 40 + "q"  # no mailbox name ends in q
        lines = yield c.cmd(f'LIST "" "{pattern}"')
        self.assertOK(lines)
        self.assertEqual(untagged(lines, "LIST"), [])
        lines = yield c.cmd(f'LSUB "" "{pattern}"')
        self.assertOK(lines)
        lines = yield c.cmd('LIST "" "*%a%*"')
        self.assertOK(lines)
        self.assertIn(f"LIST (\\HasNoChildren) \"/\" {long_name}", untagged(lines, "LIST"))

    test_list_hostile_pattern_answers.timeout = 30

    @defer.inlineCallbacks
    def test_list_pattern_count_limited(self):
        c = yield self.logged_in()
        many = " ".join(f'"x{i}*"' for i in range(101))
        lines = yield c.cmd(f'LIST "" ({many})')
        self.assertIn(b" BAD ", lines[-1])
        lines = yield c.cmd('LIST "" (' + " ".join(f'"x{i}*"' for i in range(100)) + ')')
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_list_mixed_pattern_and_children(self):
        """A pattern with both wildcards (matched off the reactor thread) lists the right
        names, with \\HasChildren from the parents of all mailboxes."""
        c = yield self.logged_in()
        for name in ("p", "p/q", "p/q/r", "pq"):
            self.assertOK((yield c.cmd(f"CREATE {name}")))
        lines = yield c.cmd('LIST "" "p*/%"')
        self.assertOK(lines)
        self.assertEqual(sorted(untagged(lines, "LIST")), [
            'LIST (\\HasChildren) "/" p/q',
            'LIST (\\HasNoChildren) "/" p/q/r',
        ])
        lines = yield c.cmd('LIST "" "p%"')
        self.assertEqual(sorted(untagged(lines, "LIST")), [
            'LIST (\\HasChildren) "/" p',
            'LIST (\\HasNoChildren) "/" pq',
        ])

    @defer.inlineCallbacks
    def test_list_mixed_patterns_work_budget(self):
        """Patterns mixing * and % run in Python per character: over a budget of
        characters x patterns the LIST gets NO [LIMIT] instead of tying up the thread
        pool (re-review: 12 such LISTs held it for a minute)."""
        c = yield self.logged_in()
        for i in range(25):
            self.assertOK((yield c.cmd(f"CREATE m{i:02d}{'x' * 900}")))
        many = " ".join(f'"*a%b%d{i}"' for i in range(100))
        lines = yield c.cmd(f'LIST "" ({many})')
        self.assertIn(b"NO [LIMIT]", lines[-1])
        # Duplicates count once; fewer mixed patterns are matched.
        lines = yield c.cmd('LIST "" (' + " ".join(['"m0*x%"'] * 100) + ')')
        self.assertOK(lines)
        self.assertEqual(len(untagged(lines, "LIST")), 10)
