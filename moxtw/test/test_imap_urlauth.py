"""URLAUTH (RFC 4467) and extended URLFETCH (RFC 5524): GENURLAUTH, URLFETCH, RESETKEY;
who may fetch what, tokens that cannot be forged or reused after RESETKEY, expiry, keys
that outlive a restart, and hostile arguments."""

import re
from datetime import datetime, timezone
from types import SimpleNamespace

from twisted.internet import defer, reactor

from moxtw.auth import Authenticator
from moxtw.imapserver import urlauth
from moxtw.imapserver.backend import IMAPBackend
from moxtw.imapserver.server import IMAPFactory
from moxtw.store import Store
from moxtw.test.imaphelper import PASSWORD, IMAPSessionTest, untagged

BASE = "imap://mjl@example.org/INBOX"
MIME = (
    b"From: bob@example.net\r\nTo: mjl@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8g\r\nd29ybGQ=\r\n"
    b"--b1\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: sub@example.net\r\nSubject: inner\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAEC/w==\r\n"
    b"--b1\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    b"--b1--\r\n"
)


class URLAuthTests(IMAPSessionTest):
    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}

    @defer.inlineCallbacks
    def setUp(self):
        yield IMAPSessionTest.setUp(self)
        self.other = yield self.store.open_account("other")
        yield self.other.set_password(PASSWORD)
        self.dynamic.Accounts["other"] = SimpleNamespace(Destinations={"other@example.org": None}, LoginDisabled="")

    @defer.inlineCallbacks
    def other_client(self):
        c = self.client()
        lines = yield c.cmd(f'LOGIN "other@example.org" "{PASSWORD}"')
        self.assertOK(lines)
        return c

    @defer.inlineCallbacks
    def gen(self, c, *rumps):
        args = " ".join(f'"{u}" INTERNAL' for u in rumps)
        lines = yield c.cmd("GENURLAUTH " + args)
        self.assertOK(lines)
        [line] = untagged(lines, "GENURLAUTH")
        return [u.strip('"') for u in line.split(" ")[1:]]

    @defer.inlineCallbacks
    def fetch(self, c, arg):
        """The URLFETCH response's value(s) after the URL, as bytes (literals inline)."""
        lines = yield c.cmd("URLFETCH " + arg)
        self.assertOK(lines)
        start = next(i for i, line in enumerate(lines) if line.startswith(b"* URLFETCH "))
        return b"\r\n".join(lines[start:-1])

    @defer.inlineCallbacks
    def test_capability_gen_fetch_and_seen_untouched(self):
        yield self.deliver("first", body="the body")
        c = yield self.logged_in()
        caps = untagged((yield c.cmd("CAPABILITY")), "CAPABILITY")[0].split()
        self.assertIn("URLAUTH", caps)
        self.assertIn("URLAUTH=BINARY", caps)
        [url] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=user+mjl@example.org")
        self.assertRegex(url, r"^imap://mjl@example.org/INBOX/;uid=1;urlauth=user\+mjl@example.org:internal:[0-9a-f]{64}$")
        out = yield self.fetch(c, url)
        self.assertTrue(out.startswith(f"* URLFETCH {url} {{".encode()), out)
        self.assertIn(b"Subject: first", out)
        self.assertIn(b"the body", out)
        # RFC 4467 7: URLFETCH does not set \Seen.
        [m] = yield self.acc.messages((yield self.acc.mailbox("Inbox")).id)
        self.assertNotIn("\\Seen", m.flags)
        # Section and partial are part of what the token covers.
        [sec] = yield self.gen(c, f"{BASE}/;uid=1/;section=HEADER.FIELDS%20(SUBJECT);urlauth=user+mjl@example.org")
        out = yield self.fetch(c, f'"{sec}"')
        self.assertIn(b"Subject: first", out)
        self.assertNotIn(b"the body", out)
        [part] = yield self.gen(c, f"{BASE}/;uid=1/;partial=0.4;urlauth=user+mjl@example.org")
        out = yield self.fetch(c, part)
        self.assertTrue(out.endswith(b"{4}\r\nFrom"), out)

    @defer.inlineCallbacks
    def test_forged_tokens_and_wrong_forms_get_nil(self):
        yield self.deliver("first")
        c = yield self.logged_in()
        [url] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=user+mjl@example.org")
        good = url.rsplit(":", 1)[1]
        forged = [
            url[:-1] + ("0" if url[-1] != "0" else "1"),  # token changed
            url.replace(";uid=1;", ";uid=2;"),  # another message, same token
            url.replace("user+mjl", "authuser").replace("@example.org:", ":"),  # access widened
            url.replace(":internal:", ":bogus:"),
            url.rsplit(":", 2)[0],  # the rump alone
            f"{BASE}/;uid=1;urlauth=user+mjl@example.org:internal:",
            "imap://mjl@example.org/INBOX/;uid=1",  # no URLAUTH at all
            "/INBOX/;uid=1;urlauth=anonymous:internal:" + good,  # relative
            "imap://nobody@example.org/INBOX/;uid=1;urlauth=user+mjl@example.org:internal:" + good,
            "garbage",
        ]
        for u in forged:
            out = yield self.fetch(c, f'"{u}"')
            self.assertEqual(out, f"* URLFETCH {u} NIL".encode(), u)
        # Several URLs in one command, one answer each, in order.
        out = yield self.fetch(c, f'{url} "garbage"')
        self.assertTrue(out.endswith(b" garbage NIL"), out)
        self.assertIn(b"Subject: first", out)

    @defer.inlineCallbacks
    def test_access_identifiers(self):
        yield self.deliver("shared")
        c = yield self.logged_in()
        other = yield self.other_client()
        mine, authuser, anon, for_other, submit = yield self.gen(
            c,
            f"{BASE}/;uid=1;urlauth=user+mjl@example.org",
            f"{BASE}/;uid=1;urlauth=authuser",
            f"{BASE}/;uid=1;urlauth=anonymous",
            f"{BASE}/;uid=1;urlauth=user+other@example.org",
            f"{BASE}/;uid=1;urlauth=submit+mjl@example.org",
        )
        # Another account: authuser, anonymous and its own user+ URL; not mjl's.
        for url, ok in ((mine, False), (authuser, True), (anon, True), (for_other, True), (submit, False)):
            out = yield self.fetch(other, url)
            self.assertEqual(b"Subject: shared" in out, ok, (url, out))
        # The owner may not use a URL made for someone else; submit+ is for BURL only.
        out = yield self.fetch(c, for_other)
        self.assertTrue(out.endswith(b" NIL"), out)
        out = yield self.fetch(c, submit)
        self.assertTrue(out.endswith(b" NIL"), out)
        # Only the owner can make URLs for a mailbox.
        lines = yield other.cmd(f'GENURLAUTH "{BASE}/;uid=1;urlauth=anonymous" INTERNAL')
        self.assertNO(lines, "BADURL")

    @defer.inlineCallbacks
    def test_genurlauth_refusals(self):
        yield self.deliver("first")
        c = yield self.logged_in()
        [url] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=anonymous")
        for rump, code in (
            (url, "BADURL"),  # already authorized
            (f"{BASE}/;uid=1", "BADURL"),  # no ;URLAUTH=
            ("imap://mjl@example.org/Nope/;uid=1;urlauth=anonymous", "BADURL"),
            (f"{BASE}/;uid=1;urlauth=friends", "BADURL"),
            ("imap://mjl@elsewhere.example/INBOX/;uid=1;urlauth=anonymous", "BADURL"),
            (f"{BASE};uidvalidity=1/;uid=1;urlauth=anonymous", "BADURL"),
            (f"{BASE}/;uid=1;expire=tomorrow;urlauth=anonymous", "BADURL"),
        ):
            lines = yield c.cmd(f'GENURLAUTH "{rump}" INTERNAL')
            self.assertNO(lines, code)
        lines = yield c.cmd(f'GENURLAUTH "{BASE}/;uid=1;urlauth=anonymous" SHA1')
        self.assertNO(lines)
        # Not before login.
        fresh = self.client()
        lines = yield fresh.cmd(f'GENURLAUTH "{BASE}/;uid=1;urlauth=anonymous" INTERNAL')
        self.assertBAD(lines)
        lines = yield fresh.cmd(f"URLFETCH {url}")
        self.assertBAD(lines)

    @defer.inlineCallbacks
    def test_expire(self):
        yield self.deliver("first")
        c = yield self.logged_in()
        soon, future = yield self.gen(
            c,
            f"{BASE}/;uid=1;expire=2998-01-01T00:00:00Z;urlauth=anonymous",
            f"{BASE}/;uid=1;expire=2999-01-01T00:00:00+02:00;urlauth=anonymous",
        )
        self.assertIn(b"Subject: first", (yield self.fetch(c, soon)))
        self.patch(urlauth, "_now", lambda: datetime(2998, 6, 1, tzinfo=timezone.utc))
        self.assertTrue((yield self.fetch(c, soon)).endswith(b" NIL"))
        self.assertIn(b"Subject: first", (yield self.fetch(c, future)))
        # The expiry is covered by the token: moving it voids the URL.
        moved = future.replace("2999-01-01", "2998-01-01")
        self.assertTrue((yield self.fetch(c, moved)).endswith(b" NIL"))

    @defer.inlineCallbacks
    def test_resetkey_and_recreated_mailbox(self):
        yield self.deliver("first")
        yield self.acc.create_mailbox("Box")
        yield self.deliver("boxed", mailbox="Box")
        c = yield self.logged_in()
        inbox, box = yield self.gen(
            c, f"{BASE}/;uid=1;urlauth=anonymous", "imap://mjl@example.org/Box/;uid=1;urlauth=anonymous")
        self.assertOK((yield c.cmd("RESETKEY INBOX INTERNAL")))
        self.assertTrue((yield self.fetch(c, inbox)).endswith(b" NIL"))
        self.assertIn(b"Subject: boxed", (yield self.fetch(c, box)))
        [again] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=anonymous")
        self.assertNotEqual(again, inbox)
        self.assertIn(b"Subject: first", (yield self.fetch(c, again)))
        # Without arguments: every mailbox.
        self.assertOK((yield c.cmd("RESETKEY")))
        for u in (again, box):
            self.assertTrue((yield self.fetch(c, u)).endswith(b" NIL"))
        self.assertNO((yield c.cmd("RESETKEY Nope")), "NONEXISTENT")
        self.assertNO((yield c.cmd("RESETKEY INBOX SHA1")))
        # A mailbox deleted and created again has a new key: old URLs stay dead.
        [box] = yield self.gen(c, "imap://mjl@example.org/Box/;uid=1;urlauth=anonymous")
        self.assertOK((yield c.cmd("DELETE Box")))
        self.assertOK((yield c.cmd("CREATE Box")))
        yield self.deliver("new box", mailbox="Box")
        self.assertTrue((yield self.fetch(c, box)).endswith(b" NIL"))

    @defer.inlineCallbacks
    def test_expunged_message_and_uidvalidity(self):
        yield self.deliver("first")
        c = yield self.logged_in(select="INBOX")
        mb = yield self.acc.mailbox("Inbox")
        [plain, pinned] = yield self.gen(
            c, f"{BASE}/;uid=1;urlauth=anonymous", f"{BASE};uidvalidity={mb.uidvalidity}/;uid=1;urlauth=anonymous")
        self.assertIn(b"Subject: first", (yield self.fetch(c, pinned)))
        yield c.cmd("STORE 1 +FLAGS (\\Deleted)")
        yield c.cmd("EXPUNGE")
        for u in (plain, pinned):
            self.assertTrue((yield self.fetch(c, u)).endswith(b" NIL"))

    @defer.inlineCallbacks
    def test_binary_and_bodypartstructure(self):
        yield self.acc.deliver("Inbox", MIME)
        c = yield self.logged_in()
        text, inner, odd = yield self.gen(
            c, f"{BASE}/;uid=1/;section=1;urlauth=anonymous", f"{BASE}/;uid=1/;section=2;urlauth=anonymous",
            f"{BASE}/;uid=1/;section=3;urlauth=anonymous")
        # Plain URLFETCH: the part as stored.
        out = yield self.fetch(c, text)
        self.assertTrue(out.endswith(b"{18}\r\naGVsbG8g\r\nd29ybGQ="), out)
        out = yield self.fetch(c, f"({text} BINARY)")
        self.assertEqual(out, f"* URLFETCH {text} (BINARY {{11}}\r\nhello world)".encode())
        out = yield self.fetch(c, f"({text} BODYPARTSTRUCTURE BODY)")
        self.assertIn(b'(BODYPARTSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "BASE64" 18 2', out)
        self.assertTrue(out.endswith(b"BODY {18}\r\naGVsbG8g\r\nd29ybGQ=)"), out)
        # BINARY of a message/rfc822 part: its leaves decoded, marked binary; NUL means literal8.
        out = yield self.fetch(c, f"({inner} BINARY BODYPARTSTRUCTURE)")
        self.assertIn(b"BINARY ~{", out)
        self.assertIn(b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff", out)
        # The structure beside BINARY gives the decoded sizes (4 octets here).
        self.assertIn(b'"APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 4 ', out)
        # FETCH BINARY[2] gives the same decoded message.
        lines = yield c.cmd("EXAMINE INBOX")
        lines = yield c.cmd("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
        data = b"\r\n".join(lines)
        self.assertIn(b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff", data)
        size = int(re.search(rb"BINARY\.SIZE\[2\] (\d+)", data).group(1))
        self.assertIn(b"BINARY[2] ~{%d}" % size, data)
        # An encoding the server cannot undo: NIL with BINARY, data with BODY.
        self.assertTrue((yield self.fetch(c, f"({odd} BINARY)")).endswith(b" NIL"))
        self.assertIn(b"begin", (yield self.fetch(c, f"({odd} BODY)")))
        # BODYPARTSTRUCTURE alone; HEADER sections have none.
        out = yield self.fetch(c, f"({inner} BODYPARTSTRUCTURE)")
        self.assertTrue(out.startswith(f'* URLFETCH {inner} (BODYPARTSTRUCTURE ("MESSAGE" "RFC822"'.encode()), out)
        [header] = yield self.gen(c, f"{BASE}/;uid=1/;section=HEADER;urlauth=anonymous")
        self.assertTrue((yield self.fetch(c, f"({header} BODYPARTSTRUCTURE)")).endswith(b" NIL"))
        self.assertTrue((yield self.fetch(c, f"({header} BINARY)")).endswith(b" NIL"))

    @defer.inlineCallbacks
    def test_hostile_arguments(self):
        c = yield self.logged_in()
        for args in ("", " ", "(", "(x", "(x BOGUS)", "(x BODY BINARY)", "x (", "((x))", "x" + " y" * 101):
            lines = yield c.cmd("URLFETCH" + (" " + args if args else ""))
            self.assertBAD(lines)
        for args in ("", '"u"', '"u" INTERNAL extra', "(u) INTERNAL", '"u" INTERNAL' + ' "u" INTERNAL' * 100):
            lines = yield c.cmd("GENURLAUTH" + (" " + args if args else ""))
            self.assertBAD(lines)
        self.assertBAD((yield c.cmd("RESETKEY INBOX (INTERNAL)")))
        # URLs the parser takes apart: long, odd escapes, controls in quoted text.
        for u in ("imap://" + "a" * 9000, "imap://mjl@example.org/%ff%fe/;uid=1;urlauth=anonymous:internal:00",
                  "imap://mjl@example.org/INBOX/;uid=99999999999;urlauth=anonymous:internal:00",
                  "imap://mjl@example.org/INBOX/;uid=1/;section=9.9.9;urlauth=anonymous:internal:00",
                  "imap://%00@example.org/INBOX/;uid=1;urlauth=anonymous:internal:00"):
            lines = yield c.cmd(f'URLFETCH "{u}"')
            self.assertOK(lines)
            self.assertTrue(lines[-2].endswith(b" NIL"), lines)
        # The session still works.
        self.assertOK((yield c.cmd("NOOP")))


    @defer.inlineCallbacks
    def test_review_cases(self):
        """Non-hex tokens, "(url)" without parameters, expiry syntax and a past expiry."""
        yield self.deliver("first")
        c = yield self.logged_in()
        [url] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=anonymous")
        rump = url.rsplit(":", 2)[0]
        for token in ("\u00e9\u00e9", "zz" * 20, "0" * 31, "0" * 200):
            u = f"{rump}:internal:{token}"
            lines = yield c.cmd(f'URLFETCH "{u}"' if token.isascii() else None or "URLFETCH {%d+}\r\n%s" % (
                len(u.encode()), u))
            self.assertOK(lines)
            self.assertTrue(lines[-2].endswith(b" NIL"), lines)
        out = yield self.fetch(c, f"({url})")
        self.assertIn(f"* URLFETCH {url} (BODY {{".encode(), out)
        for bad in ("2999-W01-1T00:00Z", "20990101T000000Z", "2999-01-01 00:00:00Z", "2999-13-45T00:00:00Z"):
            lines = yield c.cmd(f'GENURLAUTH "{BASE}/;uid=1;expire={bad};urlauth=anonymous" INTERNAL')
            self.assertNO(lines, "BADURL")
        lines = yield c.cmd(f'GENURLAUTH "{BASE}/;uid=1;expire=2001-01-01T00:00:00Z;urlauth=anonymous" INTERNAL')
        self.assertNO(lines, "BADURL")

    @defer.inlineCallbacks
    def test_many_urls_one_response(self):
        yield self.deliver("first", body="x" * 5000)
        c = yield self.logged_in()
        [url] = yield self.gen(c, f"{BASE}/;uid=1;urlauth=anonymous")
        out = yield self.fetch(c, " ".join([url] * 100))
        self.assertEqual(out.count(url.encode()), 100)
        self.assertEqual(out.count(b"x" * 5000), 100)
        self.assertTrue(out.startswith(b"* URLFETCH "))
        self.assertEqual(out.count(b"* URLFETCH"), 1)

    @defer.inlineCallbacks
    def test_catenate_with_urlauth_urls(self):
        """APPEND CATENATE checks a URLAUTH URL as URLFETCH does (RFC 4469 5): a valid one
        may name another account's message; a forged one, or a plain URL naming another
        user, is NO [BADURL]."""
        yield self.other.deliver("Inbox", b"From: o@example.org\r\nSubject: others\r\n\r\nother body\r\n")
        yield self.deliver("mine", body="my body")
        other = yield self.other_client()
        other_base = "imap://other@example.org/INBOX"
        [url] = yield self.gen(other, f"{other_base}/;uid=1;urlauth=authuser")
        c = yield self.logged_in()
        lines = yield c.cmd(f'APPEND INBOX CATENATE (URL "{url}")')
        self.assertOK(lines)
        mb = yield self.acc.mailbox("Inbox")
        msgs = yield self.acc.messages(mb.id)
        with self.acc.open_message(msgs[-1].id) as f:
            self.assertIn(b"other body", f.read())
        forged = url[:-1] + ("0" if url[-1] != "0" else "1")
        for u in (forged, f"{other_base}/;uid=1", url.replace(";urlauth=authuser", ";urlauth=user+x@example.org")):
            lines = yield c.cmd(f'APPEND INBOX CATENATE (URL "{u}")')
            self.assertNO(lines, "BADURL")
        # The user's own mailbox by absolute URL still works.
        lines = yield c.cmd(f'APPEND INBOX CATENATE (URL "{BASE}/;uid=1")')
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_binary_of_multipart_with_unknown_nested_encoding(self):
        """BINARY of a multipart section decodes what it can; a nested part in an
        encoding moxtw does not know stays as stored (UNKNOWN-CTE is for the section
        asked only, RFC 3516 4.3)."""
        msg = (b"From: bob@example.net\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
               b'Content-Type: multipart/alternative; boundary="i"\r\n\r\n--i\r\n'
               b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
               b"--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--i--\r\n"
               b"--o--\r\n")
        yield self.acc.deliver("Inbox", msg)
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1 (BODYSTRUCTURE BINARY.SIZE[1] BINARY.PEEK[1])")
        self.assertOK(lines)
        data = b"\r\n".join(lines)
        self.assertIn(b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x", data)
        self.assertIn(b"Content-Transfer-Encoding: binary\r\n\r\nhi", data)
        size = int(re.search(rb"BINARY\.SIZE\[1\] (\d+)", data).group(1))
        self.assertIn(b"BINARY[1] {%d}" % size, data)
        lines = yield c.cmd("FETCH 1 (BINARY.PEEK[1.1])")
        self.assertNO(lines, "UNKNOWN-CTE")


class URLAuthRestartTests(IMAPSessionTest):
    """Keys are in the account's index: URLs issued before a restart still work."""

    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}

    @defer.inlineCallbacks
    def test_url_survives_reopen(self):
        yield self.deliver("kept")
        c = yield self.logged_in()
        lines = yield c.cmd(f'GENURLAUTH "{BASE}/;uid=1;urlauth=anonymous" INTERNAL')
        url = untagged(lines, "GENURLAUTH")[0].split(" ")[1]
        c.proto.connectionLost(None)
        yield self.store.close()
        store = Store(self.store.data_dir, reactor=reactor)
        self.addCleanup(store.close)
        backend = IMAPBackend(Authenticator(store, lambda: self.dynamic), clock=self.clock)
        self.factory = IMAPFactory("imap", "mail.example.org", backend, tls_context=None,
                                   require_tls_for_login=False, clock=self.clock)
        c = yield self.logged_in()
        lines = yield c.cmd(f"URLFETCH {url}")
        self.assertIn(b"Subject: kept", b"\r\n".join(lines))
