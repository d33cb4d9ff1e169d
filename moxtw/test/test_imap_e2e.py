"""End-to-end IMAP over loopback with real clients: Python's imaplib and imapclient.

The server is the real service tree (``moxtw.app.makeService``) on a config written here;
messages also arrive over SMTP (smtplib) to check live updates (IDLE).
"""

import imaplib
import os
import smtplib
import socket
import ssl

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.IMAP]
Enabled = true
Port = {imap}
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
"""

DYNAMIC = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
"""

PASSWORD = "imap password"
LOGIN = "mjl@example.org"


def message(subject, body="hello world", frm="bob@example.net"):
    return (
        f"From: {frm}\r\nTo: mjl@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n{body}\r\n"
    ).encode()


class IMAPTestBase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.ports = {"smtp": 25 + off, "imap": 143 + off, "imaps": 993 + off}
        self.cfg, self.ca = servertree.write_config(
            os.path.abspath(self.mktemp()), STATIC.format(**self.ports), DYNAMIC
        )
        self.root = yield servertree.start(self, self.cfg)
        self.acc = yield self.root.store.open_account("mjl")
        yield self.acc.set_password(PASSWORD)

    def tls(self):
        return ssl.create_default_context(cafile=self.ca)

    def imaps(self):
        c = imaplib.IMAP4_SSL("localhost", self.ports["imaps"], ssl_context=self.tls(), timeout=10)
        c.login(LOGIN, PASSWORD)
        return c

    def in_thread(self, fn):
        return threads.deferToThread(fn)

    def smtp_deliver(self, subject):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
            s.sendmail("bob@example.net", ["mjl@example.org"], message(subject))


class LoginTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_logindisabled_without_tls(self):
        def client():
            c = imaplib.IMAP4("localhost", self.ports["imap"], timeout=10)
            caps = c.capabilities
            try:
                c.login(LOGIN, PASSWORD)
                result = "logged in"
            except imaplib.IMAP4.error as e:
                result = str(e)
            c.starttls(ssl_context=self.tls())
            typ, _ = c.login(LOGIN, PASSWORD)
            c.logout()
            return caps, result, typ

        caps, result, typ = yield self.in_thread(client)
        self.assertIn("LOGINDISABLED", caps)
        self.assertIn("STARTTLS", caps)
        self.assertIn("PRIVACYREQUIRED", result)
        self.assertEqual(typ, "OK")

    @defer.inlineCallbacks
    def test_wrong_password(self):
        def client():
            c = imaplib.IMAP4_SSL("localhost", self.ports["imaps"], ssl_context=self.tls(), timeout=10)
            with self.assertRaises(imaplib.IMAP4.error) as cm:
                c.login(LOGIN, "wrong")
            c.logout()
            return str(cm.exception)

        err = yield self.in_thread(client)
        self.assertIn("AUTHENTICATIONFAILED", err)

    @defer.inlineCallbacks
    def test_authenticate_plain(self):
        def client():
            c = imaplib.IMAP4_SSL("localhost", self.ports["imaps"], ssl_context=self.tls(), timeout=10)
            typ, _ = c.authenticate("PLAIN", lambda _: f"\0{LOGIN}\0{PASSWORD}".encode())
            c.logout()
            return typ

        self.assertEqual((yield self.in_thread(client)), "OK")


class MailboxTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_list_create_rename_delete_status(self):
        def client():
            c = self.imaps()
            out = {}
            out["list"] = c.list()[1]
            out["create"] = c.create("Projects/moxtw")
            out["rename"] = c.rename("Projects", "Work")
            out["list2"] = c.list('""', "Work*")[1]
            out["status"] = c.status("INBOX", "(MESSAGES UIDNEXT UNSEEN SIZE)")
            out["delete_parent"] = c.delete("Work")
            out["delete"] = c.delete("Work/moxtw")
            out["namespace"] = c.namespace()
            c.logout()
            return out

        out = yield self.in_thread(client)
        names = b" ".join(out["list"])
        for n in (b"Inbox", b"Sent", b"\\Sent", b"Archive", b"\\Junk", b"Trash", b"Drafts"):
            self.assertIn(n, names)
        self.assertEqual(out["create"][0], "OK")
        self.assertEqual(out["rename"][0], "OK")
        self.assertIn(b'"/" Work/moxtw', b" ".join(out["list2"]))
        self.assertIn(b"MESSAGES 0", out["status"][1][0])
        self.assertEqual(out["delete_parent"][0], "NO")
        self.assertEqual(out["delete"][0], "OK")
        self.assertIn(b'(("" "/")) NIL NIL', out["namespace"][1][0])


class MessageTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_append_fetch_store_search_copy_move_expunge(self):
        def client():
            c = self.imaps()
            out = {}
            out["append"] = c.append("INBOX", "(\\Flagged)", None, message("first", "alpha beta"))
            c.append("INBOX", None, None, message("second", "gamma attempt"))
            out["select"] = c.select("INBOX")
            out["fetch"] = c.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out["body"] = c.fetch("2", "(BODY[TEXT])")
            out["flags_after"] = c.fetch("2", "(FLAGS)")
            out["store"] = c.store("1", "+FLAGS", "(\\Seen $Important)")
            out["search_flagged"] = c.search(None, "FLAGGED")
            out["search_text"] = c.search(None, "BODY", "tempt")
            out["uid_search"] = c.uid("SEARCH", "SUBJECT", "second")
            out["copy"] = c.copy("1", "Archive")
            out["move"] = c.uid("MOVE", out["uid_search"][1][0].decode(), "Trash")
            out["after_move"] = c.search(None, "ALL")
            c.store("1", "+FLAGS", "\\Deleted")
            out["expunge"] = c.expunge()
            out["status_archive"] = c.status("Archive", "(MESSAGES)")
            out["status_trash"] = c.status("Trash", "(MESSAGES)")
            c.logout()
            return out

        out = yield self.in_thread(client)
        self.assertIn(b"APPENDUID", out["append"][1][0])
        self.assertEqual(out["select"][1], [b"2"])
        fetched = out["fetch"][1]
        # IMAP4rev1 (imaplib): the new message is \\Recent in this session (RFC 3501 2.3.2).
        self.assertIn(b"FLAGS (\\Flagged \\Recent)", fetched[0][0])
        self.assertEqual(fetched[0][1], b"Subject: first\r\n\r\n")
        self.assertEqual(out["body"][1][0][1], b"gamma attempt\r\n")
        self.assertIn(b"\\Seen", out["flags_after"][1][0])  # BODY[] sets \Seen
        self.assertIn(b"$important", out["store"][1][0].lower())
        self.assertEqual(out["search_flagged"][1], [b"1"])
        self.assertEqual(out["search_text"][1], [b"2"])
        self.assertEqual(out["uid_search"][1], [b"2"])
        self.assertIn(b"COPYUID", b" ".join(x if isinstance(x, bytes) else b"" for x in out["copy"][1]))
        self.assertEqual(out["move"][0], "OK")
        self.assertEqual(out["after_move"][1], [b"1"])
        # imaplib collects EXPUNGE responses: the MOVE's "* 2 EXPUNGE", then ours.
        self.assertEqual(out["expunge"][1], [b"2", b"1"])
        self.assertIn(b"MESSAGES 1", out["status_archive"][1][0])
        self.assertIn(b"MESSAGES 1", out["status_trash"][1][0])

    @defer.inlineCallbacks
    def test_imapclient(self):
        from imapclient import IMAPClient

        yield self.acc.deliver("Inbox", message("one", "x" * 100))
        yield self.acc.deliver("Inbox", message("two", "y"))

        def client():
            with IMAPClient("localhost", port=self.ports["imaps"], ssl=True, ssl_context=self.tls(),
                            timeout=10) as c:
                c.login(LOGIN, PASSWORD)
                out = {"caps": c.capabilities()}
                out["enable"] = c.enable("CONDSTORE")
                info = c.select_folder("INBOX")
                out["select"] = info
                ids = c.search()
                out["fetch"] = c.fetch(ids, ["ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "MODSEQ"])
                out["search"] = c.search(["SUBJECT", "two"])
                out["sort"] = c.sort(["REVERSE", "SIZE"])
                out["thread"] = c.thread()
                out["quota"] = c.get_quota_root("INBOX")
                c.create_folder("Sub")
                out["folders"] = [f[2] for f in c.list_folders()]
                out["flags"] = c.add_flags([1], [b"\\Answered"])
                out["changed"] = c.fetch(ids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {info[b'HIGHESTMODSEQ']}"])
                return out

        out = yield self.in_thread(client)
        for cap in (b"IMAP4REV2", b"IDLE", b"MOVE", b"CONDSTORE", b"QRESYNC", b"UIDPLUS"):
            self.assertIn(cap, out["caps"])
        self.assertEqual(out["select"][b"EXISTS"], 2)
        env = out["fetch"][2][b"ENVELOPE"]
        self.assertEqual(env.subject, b"two")
        self.assertEqual(env.from_[0].mailbox, b"bob")
        self.assertIn(b"MODSEQ", out["fetch"][1])
        self.assertEqual(out["search"], [2])
        self.assertEqual(out["sort"], [1, 2])
        self.assertIn("Sub", out["folders"])
        self.assertEqual(list(out["changed"].keys()), [1])


class IdleTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_idle_gets_exists_from_smtp_delivery(self):
        """An IDLE client learns of a message delivered over SMTP without any command."""
        result = {}

        def client():
            c = self.imaps()
            c.select("INBOX")
            tag = c._new_tag().decode()
            c.send(f"{tag} IDLE\r\n".encode())
            result["cont"] = c.readline()
            reactor.callFromThread(result["ready"].callback, None)
            c.sock.settimeout(10)
            result["update"] = c.readline()
            result["recent"] = c.readline()
            c.send(b"DONE\r\n")
            result["done"] = c.readline()
            c.logout()

        result["ready"] = defer.Deferred()
        d = self.in_thread(client)
        yield result["ready"]
        yield self.in_thread(lambda: self.smtp_deliver("while idling"))
        yield d
        self.assertTrue(result["cont"].startswith(b"+ "))
        self.assertEqual(result["update"], b"* 1 EXISTS\r\n")
        self.assertEqual(result["recent"], b"* 1 RECENT\r\n")  # IMAP4rev1: RFC 3501 7.3.2
        self.assertIn(b"OK IDLE terminated", result["done"])

    @defer.inlineCallbacks
    def test_other_session_sees_flags_and_expunge(self):
        yield self.acc.deliver("Inbox", message("a"))
        yield self.acc.deliver("Inbox", message("b"))

        def client():
            one, two = self.imaps(), self.imaps()
            one.select("INBOX")
            two.select("INBOX")
            one.store("2", "+FLAGS", "\\Flagged")
            one.store("1", "+FLAGS", "\\Deleted")
            one.expunge()
            typ, data = two.noop()
            out = two.untagged_responses.copy()
            one.logout()
            two.logout()
            return out

        out = yield self.in_thread(client)
        self.assertEqual(out.get("EXPUNGE"), [b"1"])
        self.assertTrue(any(b"FLAGS (\\Flagged)" in f for f in out.get("FETCH", [])))


class HostileTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_garbage_and_literals(self):
        def client():
            s = socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=10)
            f = s.makefile("rb")
            greeting = f.readline()
            out = []
            for line in (b"\r\n", b"x\r\n", b"a1 FOO\r\n", b"a2 LOGIN\r\n", b"a3 SELECT INBOX\r\n",
                         b"a4 NOOP (((((\r\n", b"\xff\xfe\r\n", b"a5 LOGIN {99999999999}\r\n"):
                s.sendall(line)
                out.append(f.readline())
            s.sendall(b"a6 CAPABILITY\r\n")
            out.append(f.readline())
            s.close()
            return greeting, out

        greeting, out = yield self.in_thread(client)
        self.assertTrue(greeting.startswith(b"* OK [CAPABILITY"))
        for line in out[:7]:
            self.assertTrue(b" BAD " in line or line.startswith(b"* BAD"), line)
        self.assertIn(b"BAD", out[7])


class LargeMessageTests(IMAPTestBase):
    @defer.inlineCallbacks
    def test_large_body_streamed(self):
        """A 3 MB body is streamed from the file (fetch.FileRange) and arrives intact."""
        body = b"".join(b"line %07d of a big message\r\n" % i for i in range(110000))
        data = b"From: bob@example.net\r\nSubject: big\r\n\r\n" + body
        yield self.acc.deliver("Inbox", data)

        def client():
            c = self.imaps()
            c.select("INBOX")
            typ, got = c.fetch("1", "(BODY.PEEK[] BODY.PEEK[TEXT]<100.20>)")
            c.logout()
            return got

        got = yield self.in_thread(client)
        self.assertEqual(got[0][1], data)
        self.assertEqual(got[1][1], body[100:120])
