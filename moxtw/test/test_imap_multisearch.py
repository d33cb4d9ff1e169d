"""MULTISEARCH (RFC 7377): the ESEARCH command searches several mailboxes, also without
one selected, and answers per mailbox with its name and UIDVALIDITY, in UIDs."""

import re

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, untagged


def results(lines):
    """{mailbox: rest of the ESEARCH line} of the responses."""
    out = {}
    for line in untagged(lines, "ESEARCH"):
        m = re.match(r'ESEARCH \(TAG "[^"]+" MAILBOX ("[^"]*"|\S+) UIDVALIDITY (\d+)\) UID ?(.*)$', line)
        assert m, line
        out[m.group(1).strip('"')] = m.group(3)
    return out


class MultiSearchTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        for name in ("Projects", "Projects/2025", "Projects/2025/Q1", "Work"):
            yield self.acc.create_mailbox(name)
        yield self.deliver("hello inbox")
        yield self.deliver("other")
        yield self.deliver("hello projects", mailbox="Projects")
        yield self.deliver("hello 2025", mailbox="Projects/2025")
        yield self.deliver("hello q1", mailbox="Projects/2025/Q1")
        yield self.deliver("hello work", mailbox="Work")

    @defer.inlineCallbacks
    def test_personal_without_selected_mailbox(self):
        c = yield self.logged_in()
        self.assertIn("MULTISEARCH", "".join(untagged((yield c.cmd("CAPABILITY")))))
        lines = yield c.cmd("ESEARCH IN (PERSONAL) SUBJECT hello", tag="M1")
        self.assertOK(lines)
        self.assertEqual(results(lines), {
            "Inbox": "ALL 1", "Projects": "ALL 1", "Projects/2025": "ALL 1",
            "Projects/2025/Q1": "ALL 1", "Work": "ALL 1",
        })
        # The correlator carries the mailbox's UIDVALIDITY.
        inbox = yield self.acc.mailbox("Inbox")
        self.assertIn(f'ESEARCH (TAG "M1" MAILBOX Inbox UIDVALIDITY {inbox.uidvalidity}) UID ALL 1',
                      untagged(lines))

    @defer.inlineCallbacks
    def test_subtree_subtree_one_mailboxes_and_return(self):
        c = yield self.logged_in()
        lines = yield c.cmd("ESEARCH IN (SUBTREE Projects) SUBJECT hello")
        self.assertEqual(set(results(lines)), {"Projects", "Projects/2025", "Projects/2025/Q1"})
        lines = yield c.cmd("ESEARCH IN (SUBTREE-ONE Projects) SUBJECT hello")
        self.assertEqual(set(results(lines)), {"Projects", "Projects/2025"})
        lines = yield c.cmd('ESEARCH IN (MAILBOXES (Work "INBOX") INBOXES) RETURN (COUNT MIN) ALL')
        self.assertEqual(results(lines), {"Work": "MIN 1 COUNT 1", "Inbox": "MIN 1 COUNT 2"})
        # A mailbox without a match gets no response.
        lines = yield c.cmd("ESEARCH IN (MAILBOXES Work) SUBJECT inbox")
        self.assertOK(lines)
        self.assertEqual(results(lines), {})

    @defer.inlineCallbacks
    def test_selected_and_subscribed(self):
        yield self.acc.subscribe("Work")
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 2 +FLAGS (\\Seen)")
        # Without IN: the selected mailbox, in UIDs (sequence numbers allowed here).
        lines = yield c.cmd("ESEARCH 1:* SEEN")
        self.assertEqual(results(lines), {"Inbox": "ALL 2"})
        lines = yield c.cmd("ESEARCH IN (SELECTED SUBSCRIBED) SUBJECT hello")
        self.assertEqual(results(lines), {"Inbox": "ALL 1", "Work": "ALL 1"})
        # Not selected, nothing to search: just OK.
        c2 = yield self.logged_in()
        lines = yield c2.cmd("ESEARCH IN (SELECTED) ALL")
        self.assertOK(lines)
        self.assertEqual(results(lines), {})

    @defer.inlineCallbacks
    def test_refused(self):
        c = yield self.logged_in(select="INBOX")
        for bad in (
            "ESEARCH IN (PERSONAL) 1:2",  # sequence numbers in other mailboxes
            "ESEARCH IN (PERSONAL) UID $",
            "ESEARCH IN (PERSONAL) RETURN (SAVE) ALL",  # SAVE and UPDATE: not here
            "ESEARCH IN (PERSONAL) RETURN (UPDATE) ALL",
            "ESEARCH IN (NOWHERE) ALL",
            "ESEARCH IN () ALL",
            "ESEARCH IN (PERSONAL",
            "ESEARCH IN (PERSONAL (DEPTH 1)) ALL",
            "ESEARCH IN (SUBTREE) ALL",
            "ESEARCH IN (MAILBOXES ()) ALL",
            "ESEARCH IN PERSONAL ALL",
            "UID ESEARCH ALL",
            "ESEARCH IN (PERSONAL) " + "NOT " * 5000 + "ALL",
            "ESEARCH IN (" + " ".join(["PERSONAL"] * 1200) + ") ALL",
        ):
            lines = yield c.cmd(bad)
            self.assertTrue(lines[-1].split(b" ")[1] == b"BAD", (bad, lines))
            self.assertNotIn(b"SERVERBUG", b"".join(lines))
        lines = yield c.cmd("ESEARCH IN (MAILBOXES Nope) ALL")
        self.assertNO(lines, "NONEXISTENT")
        # Before login: not allowed.
        c2 = self.client()
        self.assertTrue((yield c2.cmd("ESEARCH ALL"))[-1].split(b" ")[1] == b"BAD")
