"""The account pages beyond the overview, over a real loopback listener of the real
service tree: the full name and delivery rulesets (changes land in domains.toml, the
running server follows them: a message delivered over real SMTP goes to the ruleset's
mailbox), app passwords (real imaplib and smtplib logins; not for the web login), import
and export (round trip of messages; hostile archives and oversized uploads), and the
checks every call has: a session (401), CSRF, Origin, one account never reaching
another's data."""

import imaplib
import io
import json
import os
import smtplib
import ssl
import tarfile
import zipfile

from twisted.internet import defer, task, threads

from moxtw.admin.quickstart import write_admin_password
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.test.test_web import ADMIN_PASSWORD, PASSWORD, WebTestBase

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
AdminPasswordFile = "adminpasswd"
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
[Listeners.main.Submissions]
Enabled = true
Port = {submissions}
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
[Listeners.main.AccountHTTP]
Enabled = true
Port = {http}
[Listeners.main.AdminHTTP]
Enabled = true
Port = {http}
"""

DYNAMIC = """
# A comment that must survive edits.
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
FullName = "Mjl"
[Accounts.mjl.Destinations."mjl@example.org"]
[Accounts.other]
Domain = "example.org"
[Accounts.other.Destinations."other@example.org"]
"""


def message(i, subject="test", frm="sender@remote.example", extra=""):
    return (f"From: <{frm}>\r\nTo: <mjl@example.org>\r\nSubject: {subject} {i}\r\n"
            f"Message-ID: <m{i}.{subject.replace(' ', '')}@remote.example>\r\n{extra}\r\n"
            f"Body of message {i}.\r\nFrom the start of a line.\r\n").encode()


def mbox(messages):
    out = b""
    for m in messages:
        body = m.replace(b"\r\n", b"\n")
        body = b"\n".join((b">" + line if line.startswith(b"From ") else line) for line in body.split(b"\n"))
        out += b"From sender@remote.example Mon Dec  7 12:00:00 2026\n" + body + b"\n"
    return out


class MoreBase(WebTestBase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.ports = {"imaps": 993 + off, "http": 80 + off, "smtp": 25 + off, "submissions": 465 + off}
        d = os.path.abspath(self.mktemp())
        cfg, self.ca = servertree.write_config(d, STATIC.format(**self.ports), DYNAMIC)
        self.cfg = cfg
        write_admin_password(cfg.config_dir, ADMIN_PASSWORD)
        self.root = yield servertree.start(self, cfg)
        self.root.web_account.imports.max_bytes = 2 * 1024 * 1024  # small, for the oversized test
        self.root.web_account.imports.max_unpacked = 8 * 1024 * 1024
        yield self.root.web_sessions.open()
        for name in ("mjl", "other"):
            acc = yield self.root.store.open_account(name)
            yield acc.set_password(PASSWORD)
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.account = f"http://127.0.0.1:{self.ports['http']}"

    def tls(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx

    def imap(self, login, password):
        im = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls(), timeout=20)
        im.login(login, password)
        return im

    def smtp_deliver(self, data, rcpt="mjl@example.org", mailfrom="sender@remote.example"):
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
            s.ehlo("remote.example")
            s.sendmail(mailfrom, [rcpt], data)

    @defer.inlineCallbacks
    def messages_in(self, account, mailbox):
        acc = yield self.root.store.open_account(account)
        mb = yield acc.mailbox(mailbox)
        if mb is None:
            return []

        def q(conn):
            return [r[0] for r in conn.execute("SELECT id FROM message WHERE mailbox_id = ? ORDER BY uid", (mb.id,))]

        ids = yield acc.read(q)
        out = []
        for i in ids:
            with acc.open_message(i) as f:
                out.append(f.read())
        return out

    @defer.inlineCallbacks
    def post(self, path, body, cookie, csrf):
        r, content = yield self.call(self.account, "POST", path, cookie=cookie, body=body, csrf=csrf)
        return r.code, json.loads(content) if content.startswith((b"{", b"[")) else content

    @defer.inlineCallbacks
    def wait_for(self, fn, tries=100):
        for _ in range(tries):
            v = yield fn()
            if v:
                return v
            from twisted.internet import reactor
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail("condition not reached")


class RulesetTests(MoreBase):
    @defer.inlineCallbacks
    def test_routes_need_session_and_csrf(self):
        for method, path in [("GET", "/api/destinations"), ("POST", "/api/fullname"), ("POST", "/api/ruleset/save"),
                             ("GET", "/api/apppasswords"), ("POST", "/api/apppasswords/create"),
                             ("GET", "/api/export"), ("GET", "/api/import/x"), ("GET", "/settings"),
                             ("GET", "/apppasswords"), ("GET", "/transfer")]:
            r, _ = yield self.call(self.account, method, path, body={} if method == "POST" else None)
            self.assertEqual(r.code, 401, path)
        cookie, csrf, _ = yield self.login()
        code, body = yield self.post("/api/fullname", {"full_name": "x"}, cookie, None)
        self.assertEqual(code, 403)
        code, body = yield self.post("/api/fullname", {"full_name": "x"}, cookie, "wrong")
        self.assertEqual(code, 403)
        r, _ = yield self.call(self.account, "POST", "/api/fullname", cookie=cookie, csrf=csrf, body={"full_name": "x"},
                               headers={"Origin": "http://evil.example"})
        self.assertEqual(r.code, 403)
        r, content = yield self.call(self.account, "GET", "/api/", cookie=cookie)
        paths = {e["path"] for e in json.loads(content)}
        for p in ("/api/destinations", "/api/ruleset/save", "/api/apppasswords/create", "/api/import", "/api/export"):
            self.assertIn(p, paths)

    @defer.inlineCallbacks
    def test_full_name_escaped_and_written(self):
        cookie, csrf, _ = yield self.login()
        code, body = yield self.post("/api/fullname", {"full_name": "<b>Mjl</b> & co"}, cookie, csrf)
        self.assertEqual((code, body), (200, {"ok": True}))
        self.assertEqual(self.root.watcher.current.Accounts["mjl"].FullName, "<b>Mjl</b> & co")
        with open(os.path.join(self.cfg.config_dir, "domains.toml")) as f:
            self.assertIn("# A comment that must survive edits.", f.read())
        r, content = yield self.call(self.account, "GET", "/settings", cookie=cookie)
        self.assertIn(b"&lt;b&gt;Mjl&lt;/b&gt; &amp; co", content)
        self.assertNotIn(b"<b>Mjl", content)
        code, body = yield self.post("/api/fullname", {"full_name": "a\nb"}, cookie, csrf)
        self.assertEqual(code, 400)

    @defer.inlineCallbacks
    def test_ruleset_changes_delivery(self):
        cookie, csrf, _ = yield self.login()
        yield threads.deferToThread(self.smtp_deliver, message(1, "before", extra="List-Id: <dev.lists.example>\r\n"))
        yield self.wait_for(lambda: self.messages_in("mjl", "Inbox"))
        code, body = yield self.post("/api/ruleset/save", {
            "address": "mjl@example.org", "index": "", "headers": r"^list-id$: <dev\.lists\.example>",
            "mailbox": "Lists/dev", "comment": "<i>dev</i>"}, cookie, csrf)
        self.assertEqual((code, body), (200, {"ok": True}))
        code, body = yield self.post("/api/ruleset/save", {
            "address": "mjl@example.org", "smtp_mail_from_regexp": r"^news@", "mailbox": "News"}, cookie, csrf)
        self.assertEqual(code, 200, body)
        r, content = yield self.call(self.account, "GET", "/api/destinations", cookie=cookie)
        d = json.loads(content)["destinations"][0]
        self.assertEqual([rs["mailbox"] for rs in d["rulesets"]], ["Lists/dev", "News"])
        self.assertEqual(d["rulesets"][0]["headers"], {"^list-id$": r"<dev\.lists\.example>"})
        # The running server follows at once: the next delivery lands in the ruleset's mailbox.
        yield threads.deferToThread(self.smtp_deliver, message(2, "after", extra="List-Id: <dev.lists.example>\r\n"))
        got = yield self.wait_for(lambda: self.messages_in("mjl", "Lists/dev"))
        self.assertIn(b"Subject: after 2", got[0])
        yield threads.deferToThread(self.smtp_deliver, message(3, "news"), mailfrom="news@remote.example")
        got = yield self.wait_for(lambda: self.messages_in("mjl", "News"))
        self.assertIn(b"Subject: news 3", got[0])
        # Reorder, edit, default mailbox, remove.
        code, _ = yield self.post("/api/ruleset/move", {"address": "mjl@example.org", "index": "1", "direction": "up"},
                                  cookie, csrf)
        self.assertEqual(code, 200)
        d = self.root.watcher.current.Accounts["mjl"].Destinations["mjl@example.org"]
        self.assertEqual([rs.Mailbox for rs in d.Rulesets], ["News", "Lists/dev"])
        code, _ = yield self.post("/api/ruleset/save", {"address": "mjl@example.org", "index": "0",
                                                        "smtp_mail_from_regexp": "^newsletter@", "mailbox": "News2"},
                                  cookie, csrf)
        self.assertEqual(code, 200)
        code, _ = yield self.post("/api/destination/mailbox", {"address": "mjl@example.org", "mailbox": "Incoming"},
                                  cookie, csrf)
        self.assertEqual(code, 200)
        code, _ = yield self.post("/api/ruleset/remove", {"address": "mjl@example.org", "index": "1"}, cookie, csrf)
        self.assertEqual(code, 200)
        d = self.root.watcher.current.Accounts["mjl"].Destinations["mjl@example.org"]
        self.assertEqual(([rs.Mailbox for rs in d.Rulesets], d.Mailbox), (["News2"], "Incoming"))
        yield threads.deferToThread(self.smtp_deliver, message(4, "plain"))
        got = yield self.wait_for(lambda: self.messages_in("mjl", "Incoming"))
        self.assertIn(b"Subject: plain 4", got[0])
        r, content = yield self.call(self.account, "GET", "/settings", cookie=cookie)
        self.assertIn(b"News2", content)

    @defer.inlineCallbacks
    def test_bad_rulesets_refused_never_written(self):
        cookie, csrf, _ = yield self.login()
        path = os.path.join(self.cfg.config_dir, "domains.toml")
        with open(path, "rb") as f:
            before = f.read()
        for fields, want in [
            ({"smtp_mail_from_regexp": "((", "mailbox": "X"}, "invalid regular expression"),
            ({"headers": "^list-id$: ([", "mailbox": "X"}, "invalid regular expression"),
            ({"headers": "no separator", "mailbox": "X"}, "field-regexp: value-regexp"),
            ({"headers": "^List-Id$: x", "mailbox": "X"}, "lower case"),
            ({"smtp_mail_from_regexp": "x", "mailbox": ""}, "mailbox"),
            ({"smtp_mail_from_regexp": "x", "mailbox": "../etc"}, "invalid mailbox name"),
            ({"mailbox": "X"}, "at least one rule"),
            ({"smtp_mail_from_regexp": "x", "is_forward": "1", "mailbox": "X"}, "IsForward"),
            ({"smtp_mail_from_regexp": "x" * 2000, "mailbox": "X"}, "at most"),
            ({"verified_domain": "not a domain!", "mailbox": "X"}, "VerifiedDomain"),
        ]:
            fields = dict(fields, address="mjl@example.org")
            code, body = yield self.post("/api/ruleset/save", fields, cookie, csrf)
            self.assertEqual(code, 400, (fields, body))
            self.assertIn(want, body["error"], fields)
        # The page shows the reason, escaped.
        r, content = yield self.call(self.account, "POST", "/ruleset/save", cookie=cookie, raw=(
            b"csrf=" + csrf.encode() + b"&address=mjl%40example.org&index=&mailbox=X&smtp_mail_from_regexp=%3Cscript%3E(("),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 400)
        self.assertIn(b"&lt;script&gt;((", content)
        self.assertNotIn(b"<script>((", content)
        code, _ = yield self.post("/api/ruleset/remove", {"address": "mjl@example.org", "index": "0"}, cookie, csrf)
        self.assertEqual(code, 404)
        code, _ = yield self.post("/api/ruleset/remove", {"address": "mjl@example.org", "index": "x"}, cookie, csrf)
        self.assertEqual(code, 400)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)

    @defer.inlineCallbacks
    def test_account_cannot_touch_other(self):
        cookie, csrf, _ = yield self.login()
        code, body = yield self.post("/api/ruleset/save", {"address": "other@example.org", "smtp_mail_from_regexp": "x",
                                                           "mailbox": "X"}, cookie, csrf)
        self.assertEqual(code, 404)
        code, body = yield self.post("/api/destination/mailbox", {"address": "other@example.org", "mailbox": "X"},
                                     cookie, csrf)
        self.assertEqual(code, 404)
        # Fields naming an account are ignored: the session says whose settings change.
        code, body = yield self.post("/api/fullname", {"full_name": "Hacked", "account": "other"}, cookie, csrf)
        self.assertEqual(code, 200)
        self.assertEqual(self.root.watcher.current.Accounts["other"].FullName, "")
        r, content = yield self.call(self.account, "GET", "/api/destinations", cookie=cookie)
        self.assertNotIn(b"other@example.org", content)
        # App passwords and imports of another account are not reachable.
        ocookie, ocsrf, _ = yield self.login("other@example.org")
        code, made = yield self.post("/api/apppasswords/create", {"name": "phone"}, ocookie, ocsrf)
        self.assertEqual(code, 200)
        code, body = yield self.post("/api/apppasswords/revoke", {"id": str(made["id"])}, cookie, csrf)
        self.assertEqual(code, 404)
        r, content = yield self.call(self.account, "GET", "/api/apppasswords", cookie=cookie)
        self.assertEqual(json.loads(content), [])
        job = yield self.upload(ocookie, ocsrf, mbox([message(1)]))
        r, _ = yield self.call(self.account, "GET", f"/api/import/{job}", cookie=cookie)
        self.assertEqual(r.code, 404)
        s = yield self.import_done(ocookie, job)
        self.assertEqual(s["state"], "done")
        got = yield self.messages_in("mjl", "Inbox")
        self.assertEqual(got, [])

    @defer.inlineCallbacks
    def upload(self, cookie, csrf, data, query="", expect=200):
        r, content = yield self.call(self.account, "POST", "/api/import" + query, cookie=cookie, csrf=csrf, raw=data,
                                     headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.code, expect, content)
        return json.loads(content).get("id") if expect == 200 else json.loads(content)

    @defer.inlineCallbacks
    def import_done(self, cookie, job):
        @defer.inlineCallbacks
        def check():
            r, content = yield self.call(self.account, "GET", f"/api/import/{job}", cookie=cookie)
            s = json.loads(content)
            return s if s["state"] in ("done", "failed") else None

        s = yield self.wait_for(check, tries=300)
        return s


class AppPasswordTests(MoreBase):
    @defer.inlineCallbacks
    def test_app_password_imap_smtp_not_web(self):
        cookie, csrf, _ = yield self.login()
        code, made = yield self.post("/api/apppasswords/create", {"name": "<phone>"}, cookie, csrf)
        self.assertEqual(code, 200)
        pw = made["password"]
        r, content = yield self.call(self.account, "GET", "/api/apppasswords", cookie=cookie)
        items = json.loads(content)
        self.assertEqual([(i["name"], i["last_used"]) for i in items], [("<phone>", 0)])
        self.assertNotIn(pw.encode(), content)
        # Stored derived only.
        acc = yield self.root.store.open_account("mjl")
        rows = yield acc.read(lambda conn: conn.execute("SELECT * FROM app_password").fetchall())
        self.assertNotIn(pw, repr(rows))

        def mail_logins():
            im = self.imap("mjl@example.org", pw)
            im.select("INBOX")
            im.logout()
            im = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls(), timeout=20)
            im.authenticate("PLAIN", lambda _: f"\0mjl@example.org\0{pw}".encode())
            im.logout()
            with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], context=self.tls(), timeout=20) as s:
                s.login("mjl@example.org", pw)
                s.sendmail("mjl@example.org", ["other@example.org"], message(1, "via app password", frm="mjl@example.org"))

        yield threads.deferToThread(mail_logins)
        got = yield self.wait_for(lambda: self.messages_in("other", "Inbox"))
        self.assertIn(b"via app password", got[0])
        r, content = yield self.call(self.account, "POST", "/api/login",
                                     body={"login": "mjl@example.org", "password": pw})
        self.assertEqual(r.code, 401)
        r, content = yield self.call(self.account, "GET", "/api/apppasswords", cookie=cookie)
        self.assertGreater(json.loads(content)[0]["last_used"], 0)
        # The page escapes the name; revoking ends its use.
        r, content = yield self.call(self.account, "GET", "/apppasswords", cookie=cookie)
        self.assertIn(b"&lt;phone&gt;", content)
        code, body = yield self.post("/api/apppasswords/revoke", {"id": str(made["id"])}, cookie, csrf)
        self.assertEqual((code, body), (200, {"removed": 1}))

        def refused():
            with self.assertRaises(imaplib.IMAP4.error):
                self.imap("mjl@example.org", pw)
            with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], context=self.tls(), timeout=20) as s:
                with self.assertRaises(smtplib.SMTPAuthenticationError):
                    s.login("mjl@example.org", pw)

        yield threads.deferToThread(refused)
        code, body = yield self.post("/api/apppasswords/create", {"name": ""}, cookie, csrf)
        self.assertEqual(code, 400)
        code, body = yield self.post("/api/apppasswords/revoke", {"id": "abc"}, cookie, csrf)
        self.assertEqual(code, 400)

    @defer.inlineCallbacks
    def test_app_password_failures_count(self):
        # Wrong app passwords over IMAP count in the shared limits: after the per-IP-and-login
        # limit even the right app password is refused from this IP, and so is the web login.
        cookie, csrf, _ = yield self.login()
        code, made = yield self.post("/api/apppasswords/create", {"name": "laptop"}, cookie, csrf)
        from moxtw import auth
        self.patch(auth, "FAILURE_SLOWDOWN", 0)
        self.patch(auth, "LOGIN_SLOWDOWN", 0)
        pw = made["password"]
        wrong = pw[:5] + ("aaaa" if pw[5:9] != "aaaa" else "bbbb") + pw[9:]

        def logins():
            for _ in range(auth.IP_LOGIN_FAILURE_LIMITS[0][1]):
                with self.assertRaises(imaplib.IMAP4.error):
                    self.imap("mjl@example.org", wrong)
            with self.assertRaises(imaplib.IMAP4.error):
                self.imap("mjl@example.org", pw)

        yield threads.deferToThread(logins)
        self.assertIsNotNone(self.root.login_limits.allowed_login("127.0.0.1", "mjl@example.org"))
        r, _ = yield self.call(self.account, "POST", "/api/login", body={"login": "mjl@example.org",
                                                                         "password": PASSWORD})
        self.assertEqual(r.code, 429)


class TransferTests(MoreBase):
    upload = RulesetTests.upload
    import_done = RulesetTests.import_done

    @defer.inlineCallbacks
    def export(self, cookie, query):
        r, content = yield self.call(self.account, "GET", "/api/export" + query, cookie=cookie)
        return r, content

    @defer.inlineCallbacks
    def test_import_export_round_trip(self):
        cookie, csrf, _ = yield self.login()
        msgs = [message(i, "imported") for i in range(30)]
        job = yield self.upload(cookie, csrf, mbox(msgs), "?mailbox=Old")
        s = yield self.import_done(cookie, job)
        self.assertEqual((s["state"], s["imported"], s["total"], s["percent"]), ("done", 30, 30, 100), s)
        got = yield self.messages_in("mjl", "Old")
        self.assertEqual([g.replace(b"\r\n", b"\n") for g in got], [m.replace(b"\r\n", b"\n") for m in msgs])
        for archive in ("zip", "tgz"):
            for fmt in ("mbox", "maildir"):
                r, content = yield self.export(cookie, f"?format={fmt}&archive={archive}&mailbox=Old")
                self.assertEqual(r.code, 200, content[:200])
                self.assertIn(b"attachment", r.headers.getRawHeaders(b"content-disposition")[0])
                names = self.archive_names(content, archive)
                self.assertTrue(any(n.startswith("Old") for n in names), names)
                # Import the export again, into another mailbox: the same messages.
                job = yield self.upload(cookie, csrf, content, f"?mailbox=Again-{fmt}-{archive}")
                s = yield self.import_done(cookie, job)
                self.assertEqual((s["state"], s["imported"]), ("done", 30), s)
                again = yield self.messages_in("mjl", f"Again-{fmt}-{archive}/Old")
                norm = lambda b: b.replace(b"\r\n", b"\n")  # noqa: E731
                self.assertEqual(sorted(map(norm, again)), sorted(map(norm, msgs)))
        r, content = yield self.export(cookie, "?format=mbox&archive=zip")
        self.assertEqual(r.code, 200)
        r, _ = yield self.export(cookie, "?mailbox=Nope")
        self.assertEqual(r.code, 404)
        r, _ = yield self.export(cookie, "?format=evil")
        self.assertEqual(r.code, 400)
        # Another account's export has none of it.
        ocookie, _, _ = yield self.login("other@example.org")
        r, content = yield self.export(ocookie, "?format=mbox&archive=zip")
        self.assertNotIn(b"imported", b"".join(zipfile.ZipFile(io.BytesIO(content)).read(n)
                                                for n in zipfile.ZipFile(io.BytesIO(content)).namelist()))

    def archive_names(self, content, archive):
        if archive == "zip":
            return zipfile.ZipFile(io.BytesIO(content)).namelist()
        return tarfile.open(fileobj=io.BytesIO(content), mode="r:gz").getnames()

    @defer.inlineCallbacks
    def test_hostile_uploads(self):
        cookie, csrf, _ = yield self.login()
        # Path traversal in a zip and in a tgz: refused, nothing written outside.
        for name in ("../evil.mbox", "/abs.mbox", "a/../../evil.mbox"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr(name, mbox([message(1)]))
            job = yield self.upload(cookie, csrf, buf.getvalue())
            s = yield self.import_done(cookie, job)
            self.assertEqual(s["state"], "failed")
            self.assertIn("unsafe name", s["error"])
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tf:
                data = mbox([message(1)])
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            job = yield self.upload(cookie, csrf, buf.getvalue())
            s = yield self.import_done(cookie, job)
            self.assertEqual(s["state"], "failed", s)
        self.assertFalse(os.path.exists(os.path.join(self.cfg.data_dir, "evil.mbox")))
        self.assertFalse(os.path.exists(os.path.join(self.cfg.data_dir, "webimport", "evil.mbox")))
        # A symbolic link in a tgz is left out.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("link.mbox")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
            data = mbox([message(7, "real")])
            info = tarfile.TarInfo("real.mbox")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        job = yield self.upload(cookie, csrf, buf.getvalue())
        s = yield self.import_done(cookie, job)
        self.assertEqual((s["state"], s["imported"]), ("done", 1), s)
        self.assertTrue(any("link.mbox" in n for n in s["notes"]))
        # A zip bomb: far more unpacked than allowed, refused while unpacking.
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zf.open("bomb.mbox", "w") as f:
                f.write(b"From x\n")
                zero = b"\0" * (1024 * 1024)
                for _ in range(20):
                    f.write(zero)
        self.assertLess(len(buf.getvalue()), 1024 * 1024)
        job = yield self.upload(cookie, csrf, buf.getvalue())
        s = yield self.import_done(cookie, job)
        self.assertEqual(s["state"], "failed")
        self.assertIn("zip bomb", s["error"])
        # Not an mbox, not an archive; an empty body; the wrong content type.
        job = yield self.upload(cookie, csrf, b"<html>not mail</html>")
        s = yield self.import_done(cookie, job)
        self.assertEqual(s["state"], "failed")
        self.assertIn("not an mbox", s["error"])
        body = yield self.upload(cookie, csrf, b"", expect=400)
        self.assertIn("empty", body["error"])
        r, content = yield self.call(self.account, "POST", "/api/import", cookie=cookie, csrf=csrf, raw=b"x",
                                     headers={"Content-Type": "multipart/form-data; boundary=x"})
        self.assertIn(r.code, (400, 415))  # Twisted refuses the broken form first
        # CSRF, and a bad mailbox name.
        r, _ = yield self.call(self.account, "POST", "/api/import", cookie=cookie, raw=b"From x\n",
                               headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.code, 403)
        body = yield self.upload(cookie, csrf, mbox([message(1)]), "?mailbox=a/../b", expect=400)
        self.assertIn("mailbox", body["error"])
        # Nothing of these is left in the work directory.
        left = os.listdir(os.path.join(self.cfg.data_dir, "webimport"))
        self.assertEqual(left, [])

    @defer.inlineCallbacks
    def test_oversized_upload(self):
        cookie, csrf, _ = yield self.login()
        # Above the import's own limit: 413 on the announced length, before the body is sent.
        def announce(length):
            import socket

            with socket.create_connection(("127.0.0.1", self.ports["http"]), timeout=10) as sock:
                sock.sendall((f"POST /api/import HTTP/1.1\r\nHost: mail.example.org\r\nCookie: {cookie}\r\n"
                              f"X-CSRF-Token: {csrf}\r\nContent-Type: application/octet-stream\r\n"
                              f"Content-Length: {length}\r\n\r\n").encode())
                sock.sendall(b"From x\n")
                return sock.recv(100)

        head = yield threads.deferToThread(announce, 3 * 1024 * 1024)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)
        # The same sent whole by a client that does not wait for the answer.
        big = b"From x\n" + b"a" * (3 * 1024 * 1024)


        try:
            r, _ = yield self.call(self.account, "POST", "/api/import", cookie=cookie, csrf=csrf, raw=io.BytesIO(big),
                                   headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(r.code, 413)
        except Exception:
            pass  # the server may close the connection while the client still sends
        self.assertEqual(os.listdir(os.path.join(self.cfg.data_dir, "webimport")) if os.path.exists(
            os.path.join(self.cfg.data_dir, "webimport")) else [], [])
        # Between 1 MB and the import limit: accepted on the import route only.
        mid = mbox([message(i, "mid", extra="X-Pad: " + "p" * 900 + "\r\n") for i in range(1200)])
        self.assertGreater(len(mid), 1024 * 1024)
        job = yield self.upload(cookie, csrf, mid, "?mailbox=Mid")
        s = yield self.import_done(cookie, job)
        self.assertEqual((s["state"], s["imported"]), ("done", 1200), s)
        r, _ = yield self.call(self.account, "POST", "/api/fullname", cookie=cookie, csrf=csrf, raw=mid,
                               headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.code, 413)
