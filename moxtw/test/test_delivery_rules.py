"""Ruleset matching on header fields (moxtw.delivery.rules) and when local delivery
parses the header for it."""

from twisted.trial import unittest

from moxtw.delivery.rules import choose_mailbox, message_headers


class _RS:
    def __init__(self, mailbox, headers):
        self.SMTPMailFromRegexp = ""
        self.MsgFromRegexp = ""
        self.VerifiedDomain = ""
        self.HeadersRegexp = headers
        self.Mailbox = mailbox
        self.IsForward = False


class _Dest:
    def __init__(self, rulesets):
        self.Rulesets = rulesets
        self.Mailbox = "Inbox"


class HeaderTests(unittest.SynchronousTestCase):
    MSG = (b"Received: from a.example\r\nReceived: from relay.lists.example\r\n"
           b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\nSubject: folded\r\n  subject\r\n\r\nbody\r\n")

    def test_each_field_decoded(self):
        headers, msgfrom = message_headers(self.MSG)
        self.assertEqual(headers, [("received", "from a.example"), ("received", "from relay.lists.example"),
                                   ("from", "Jörg <jorg@example.org>"), ("subject", "folded  subject")])
        self.assertEqual(msgfrom, "jorg@example.org")

    def test_repeated_field_matched_in_each(self):
        """A rule on the second Received field matches (each field has its own value)."""
        headers, _ = message_headers(self.MSG)
        dest = _Dest([_RS("Lists", {"^received$": "relay\\.lists\\.example"})])
        self.assertEqual(choose_mailbox(dest, "Inbox", "", "", (), headers)[0], "Lists")
        dest = _Dest([_RS("Lists", {"^received$": "nowhere"})])
        self.assertEqual(choose_mailbox(dest, "Inbox", "", "", (), headers)[0], "Inbox")

    def test_header_only(self):
        """A body that looks like a header field is not parsed as one."""
        headers, _ = message_headers(b"Subject: x\r\n\r\nX-Evil: yes\r\n")
        self.assertEqual(headers, [("subject", "x")])


class ParseOnlyForRulesetsTests(unittest.TestCase):
    """Local delivery parses the header for rulesets only when a recipient has some."""

    def test_no_rulesets_no_parse(self):
        from moxtw.delivery import local

        calls = []
        orig = local.message_headers
        self.patch(local, "message_headers", lambda data: (calls.append(1), orig(data))[1])

        class Rcpt:
            disabled = False
            account = "a"
            mailbox = "Inbox"

            def __init__(self, destination):
                self.destination = destination

        class Acc:
            def deliver(self, mailbox, data, facts=None):
                class M:
                    uid = 1
                self.mailbox = mailbox
                return M()

        class Store:
            acc = Acc()

            def open_account(self, name):
                return self.acc

        delivery = local.LocalDelivery(Store())
        d = delivery.deliver(HeaderTests.MSG, [Rcpt(_Dest([]))], mailfrom="s@example.org", prefix=b"")
        self.assertTrue(self.successResultOf(d)[0].ok)
        self.assertEqual(calls, [])
        d = delivery.deliver(HeaderTests.MSG, [Rcpt(_Dest([_RS("Lists", {"^received$": "relay"})]))],
                             mailfrom="s@example.org", prefix=b"")
        return d.addCallback(lambda results: (self.assertEqual(calls, [1]),
                                              self.assertEqual(Store.acc.mailbox, "Lists")))
