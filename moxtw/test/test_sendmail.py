"""``moxtw sendmail``'s command line, message preparation and configuration; the
submission itself is tested end to end in test_quickstart."""

import io
import os

from twisted.trial import unittest

from moxtw.admin import sendmail as sm

CONF = {"Host": "127.0.0.1", "Port": 465, "TLS": "tls", "Username": "cron@example.com", "Password": "x"}


class ArgsTests(unittest.SynchronousTestCase):
    def test_sendmail_options(self):
        opts, rcpts = sm.parse_args(["-oi", "-t", "-fbounce@example.com", "-F", "Cron Daemon", "-odi", "a@example.org",
                                     "--", "-weird@example.org"])
        self.assertEqual((opts["i"], opts["t"], opts["f"], opts["F"]), (True, True, "bounce@example.com", "Cron Daemon"))
        self.assertEqual(rcpts, ["a@example.org", "-weird@example.org"])
        for bad in (["-Z"], ["-f"], ["-bs"], ["-bd"]):
            with self.assertRaises(sm.SendmailError) as e:
                sm.parse_args(bad)
            self.assertEqual(e.exception.status, sm.EX_USAGE, bad)

    def test_prepare(self):
        opts, _ = sm.parse_args(["-t", "-F", "Cron"])
        data = b"To: a@example.org, B <b@example.org>\nCc: c@example.org\nBcc: d@example.org,\n e@example.org\nSubject: s\n\nbody\n"
        sender, rcpts, msg = sm.prepare(data, opts, [], CONF)
        self.assertEqual(sender, "cron@example.com")
        self.assertEqual(sorted(rcpts), ["a@example.org", "b@example.org", "c@example.org", "d@example.org",
                                         "e@example.org"])
        self.assertTrue(msg.startswith(b"From: Cron <cron@example.com>\r\n"))
        self.assertNotIn(b"Bcc", msg)
        self.assertNotIn(b"e@example.org", msg)
        self.assertTrue(msg.endswith(b"\r\n\r\nbody\r\n"))
        with self.assertRaises(sm.SendmailError) as e:
            sm.prepare(b"Subject: none\n\nx\n", {"t": False, "i": False, "f": None, "F": None}, [], CONF)
        self.assertEqual(e.exception.status, sm.EX_USAGE)
        # A message without a header/body separator, or empty.
        _, _, msg = sm.prepare(b"", {"t": False, "i": False, "f": None, "F": None}, ["a@example.org"], CONF)
        self.assertTrue(msg.startswith(b"From: cron@example.com\r\n"))

    def test_dot_line(self):
        self.assertEqual(sm.read_message(io.BytesIO(b"a\n.\nb\n"), dot_ends=True), b"a\n")
        self.assertEqual(sm.read_message(io.BytesIO(b"a\n.\nb\n"), dot_ends=False), b"a\n.\nb\n")

    def test_config_errors(self):
        d = self.mktemp()
        os.makedirs(d)
        for text, want in (("Host = ", "submit.toml"), ('Foo = 1\nUsername = "u"\nPassword = "p"', "unknown keys Foo"),
                           ('Username = "u"', "Password is required"), ('TLS = "ssl"\nUsername="u"\nPassword="p"', "TLS must")):
            path = os.path.join(d, "submit.toml")
            with open(path, "w") as f:
                f.write(text)
            with self.assertRaises(sm.SendmailError) as e:
                sm.load_config(path)
            self.assertEqual(e.exception.status, sm.EX_CONFIG)
            self.assertIn(want, str(e.exception))
        with self.assertRaises(sm.SendmailError) as e:
            sm.load_config(os.path.join(d, "missing.toml"))
        self.assertEqual(e.exception.status, sm.EX_CONFIG)
