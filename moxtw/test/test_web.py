"""The account and admin web apps, over a real loopback HTTP listener of the real
service tree (store, accounts, queue, sessions in data/auth.db): logins, sessions and
cookies, CSRF and Origin checks, authorisation between accounts and for the admin pages,
password changes used over IMAP, the queue held and released, hostile input."""

import imaplib
import json
import os
import ssl

import treq
from twisted.internet import defer, task, threads
from twisted.trial import unittest

from moxtw.admin.quickstart import write_admin_password
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.web.sessions import SessionStore

PASSWORD = "web test password"
ADMIN_PASSWORD = "admin test password"

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
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
FullName = "<script>alert(1)</script> Mjl"
[Accounts.mjl.Destinations."mjl@example.org"]
[Accounts.other]
Domain = "example.org"
[Accounts.other.Destinations."other@example.org"]
"""



class WebTestBase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.ports = {"imaps": 993 + off, "http": 80 + off}
        d = os.path.abspath(self.mktemp())
        cfg, self.ca = servertree.write_config(d, STATIC.format(**self.ports), DYNAMIC)
        write_admin_password(cfg.config_dir, ADMIN_PASSWORD)
        self.root = yield servertree.start(self, cfg)
        yield self.root.web_sessions.open()
        for name in ("mjl", "other"):
            acc = yield self.root.store.open_account(name)
            yield acc.set_password(PASSWORD)
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.account = f"http://127.0.0.1:{self.ports['http']}"
        self.admin = f"http://127.0.0.1:{self.ports['http']}/admin"

    @defer.inlineCallbacks
    def call(self, client, method, path, cookie=None, body=None, csrf=None, headers=None, raw=None):
        h = {b"Host": [b"mail.example.org"]}
        if cookie:
            h[b"Cookie"] = [cookie.encode()]
        if csrf:
            h[b"X-CSRF-Token"] = [csrf.encode()]
        for k, v in (headers or {}).items():
            h[k.encode()] = [v.encode()]
        kw = {}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            h[b"Content-Type"] = [b"application/json"]
            kw["data"] = json.dumps(body).encode()
        r = yield treq.request(method, client + path, headers=h, allow_redirects=False, pool=self.pool, **kw)
        content = yield r.content()
        return r, content

    @defer.inlineCallbacks
    def login(self, login="mjl@example.org", password=PASSWORD):
        r, content = yield self.call(self.account, "POST", "/api/login", body={"login": login, "password": password})
        self.assertEqual(r.code, 200, content)
        cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode()
        return cookie.split(";")[0], json.loads(content)["csrf"], cookie

    @defer.inlineCallbacks
    def admin_login(self):
        r, content = yield self.call(self.admin, "POST", "/api/login", body={"password": ADMIN_PASSWORD})
        self.assertEqual(r.code, 200, content)
        cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode()
        return cookie.split(";")[0], json.loads(content)["csrf"]


class AccountWebTests(WebTestBase):
    @defer.inlineCallbacks
    def test_login_page_and_security_headers(self):
        r, content = yield self.call(self.account, "GET", "/")
        self.assertEqual(r.code, 200)
        self.assertIn(b"<h1>Log in</h1>", content)
        csp = r.headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"script-src 'self'", csp)
        self.assertNotIn(b"unsafe-inline", csp)
        self.assertEqual(r.headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        self.assertEqual(r.headers.getRawHeaders(b"referrer-policy"), [b"same-origin"])

    @defer.inlineCallbacks
    def test_login_overview_and_cookie(self):
        r, _ = yield self.call(self.account, "POST", "/api/login", body={"login": "mjl@example.org", "password": "no"})
        self.assertEqual(r.code, 401)
        cookie, csrf, raw = yield self.login()
        self.assertIn("HttpOnly", raw)
        self.assertIn("SameSite=Strict", raw)
        r, content = yield self.call(self.account, "GET", "/api/overview", cookie=cookie)
        self.assertEqual(r.code, 200)
        o = json.loads(content)
        self.assertEqual((o["account"], o["addresses"]), ("mjl", ["mjl@example.org"]))
        # The page escapes what it shows (the full name holds markup).
        r, content = yield self.call(self.account, "GET", "/", cookie=cookie)
        self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt; Mjl", content)
        self.assertNotIn(b"<script>alert", content)
        # Without a cookie, or with a made-up one: not logged in.
        r, _ = yield self.call(self.account, "GET", "/api/overview")
        self.assertEqual(r.code, 401)
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie="moxtw_account=" + "x" * 43)
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_password_change_needs_csrf_and_works_over_imap(self):
        cookie, csrf, _ = yield self.login()
        other_cookie, _, _ = yield self.login()  # a second session of the same account
        new = "a brand new password"
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, body={"password": new})
        self.assertEqual(r.code, 403)  # no CSRF token
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf="wrong",
                               body={"password": new})
        self.assertEqual(r.code, 403)
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                               body={"password": new}, headers={"Origin": "https://evil.example"})
        self.assertEqual(r.code, 403)  # cross-origin
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"password": new})
        self.assertEqual(r.code, 200, content)
        # The other session ended; this one stays.
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie=other_cookie)
        self.assertEqual(r.code, 401)
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie=cookie)
        self.assertEqual(r.code, 200)

        def imap(password):
            with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"],
                                   ssl_context=ssl.create_default_context(cafile=self.ca)) as c:
                try:
                    return c.login("mjl@example.org", password)[0]
                except imaplib.IMAP4.error:
                    return "NO"

        self.assertEqual((yield threads.deferToThread(imap, new)), "OK")
        self.assertEqual((yield threads.deferToThread(imap, PASSWORD)), "NO")

    @defer.inlineCallbacks
    def test_accounts_are_separate(self):
        cookie, csrf, _ = yield self.login()
        other_cookie, _, _ = yield self.login("other@example.org")
        r, content = yield self.call(self.account, "GET", "/api/overview", cookie=other_cookie)
        self.assertEqual(json.loads(content)["account"], "other")
        # mjl cannot end other's session, even knowing its id.
        r, content = yield self.call(self.account, "GET", "/api/sessions", cookie=other_cookie)
        [theirs] = json.loads(content)
        r, _ = yield self.call(self.account, "POST", "/api/sessions/revoke", cookie=cookie, csrf=csrf,
                               body={"id": theirs["id"]})
        self.assertEqual(r.code, 404)
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie=other_cookie)
        self.assertEqual(r.code, 200)
        # An account session is no admin session.
        r, _ = yield self.call(self.admin, "GET", "/api/overview", cookie=cookie.replace("moxtw_account", "moxtw_admin"))
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_logout(self):
        cookie, csrf, _ = yield self.login()
        r, _ = yield self.call(self.account, "POST", "/api/logout", cookie=cookie, csrf=csrf)
        self.assertEqual(r.code, 200)
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie=cookie)
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_hostile_input(self):
        cookie, csrf, _ = yield self.login()
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                               raw=b"{" + b"x" * 100000, headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 413)
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                               raw=b"\xff\xfe", headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                               raw=b"[1, 2]", headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.account, "POST", "/login", raw=b"login=%ff&password=x",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.account, "GET", "/../../etc/passwd")
        self.assertEqual(r.code, 404)
        r, content = yield self.call(self.account, "POST", "/api/login", body={"login": "<b>x</b>" * 10,
                                                                             "password": "p"})
        self.assertEqual(r.code, 401)
        self.assertNotIn(b"<b>", content)

    @defer.inlineCallbacks
    def test_failed_logins_limited(self):
        # The limits are those of SMTP and IMAP (10 failures a minute from an IP); the
        # replies slow down with each failure.
        for _ in range(30):
            r, _ = yield self.call(self.account, "POST", "/api/login",
                                   body={"login": "mjl@example.org", "password": "wrong password"})
            if r.code == 429:
                break
        self.assertEqual(r.code, 429)
        # The right password from that IP is refused too, for now.
        r, _ = yield self.call(self.account, "POST", "/api/login", body={"login": "mjl@example.org",
                                                                       "password": PASSWORD})
        self.assertEqual(r.code, 429)

    test_failed_logins_limited.timeout = 120

    @defer.inlineCallbacks
    def test_api_documented_routes_exist(self):
        from moxtw.web import account, admin

        for client, doc in ((self.account, account.API), (self.admin, admin.API)):
            r, content = yield self.call(client, "GET", "/api/")
            listed = json.loads(content)
            self.assertEqual(len(listed), len(doc))
            for m, p, _ in doc:
                path = p.replace("<string:what>", "hold")
                r, _ = yield self.call(client, m, path, body={} if m == "POST" else None)
                self.assertNotIn(r.code, (404, 405), (m, p))


class AdminWebTests(WebTestBase):
    @defer.inlineCallbacks
    def test_admin_login_overview_queue(self):
        r, _ = yield self.call(self.admin, "POST", "/api/login", body={"password": PASSWORD})
        self.assertEqual(r.code, 401)
        cookie, csrf = yield self.admin_login()
        r, content = yield self.call(self.admin, "GET", "/api/overview", cookie=cookie)
        o = json.loads(content)
        self.assertEqual(o["domains"], ["example.org"])
        self.assertEqual([a["name"] for a in o["accounts"]], ["mjl", "other"])
        # A queued message, held and released.
        [qid] = yield self.root.queue.add(b"Subject: q\r\n\r\nx\r\n", "mjl@example.org", ["x@elsewhere.example"],
                                          sender_account="mjl", hold=True, subject="queued <i>one</i>")
        r, content = yield self.call(self.admin, "GET", "/", cookie=cookie)
        self.assertIn(b"queued &lt;i&gt;one&lt;/i&gt;", content)
        self.assertIn(f'id="unhold-{qid}"'.encode(), content)
        r, content = yield self.call(self.admin, "POST", "/api/queue/unhold", cookie=cookie, body={"ids": [qid]})
        self.assertEqual(r.code, 403)  # CSRF
        r, content = yield self.call(self.admin, "POST", "/api/queue/hold", cookie=cookie, csrf=csrf,
                                     body={"ids": [qid]})
        self.assertEqual(json.loads(content), {"count": 1})
        entry = yield self.root.queue.get(qid)
        self.assertTrue(entry.hold)
        r, content = yield self.call(self.admin, "POST", "/api/queue/hold", cookie=cookie, csrf=csrf,
                                     body={"ids": "not a list"})
        self.assertEqual(r.code, 400)


class SessionExpiryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_idle_and_lifetime(self):
        from moxtw.web import sessions as s

        clock = task.Clock()
        clock.advance(1_800_000_000)
        store = SessionStore(self.mktemp(), clock=clock)
        yield store.open()
        self.addCleanup(store.close)
        token, _ = yield store.create("account", "mjl", "mjl", "127.0.0.1", "ua")
        self.assertIsNotNone((yield store.lookup("account", token)))
        self.assertIsNone((yield store.lookup("admin", token)))  # another kind
        clock.advance(s.IDLE - 100)
        self.assertIsNotNone((yield store.lookup("account", token)))  # used: extended
        clock.advance(s.IDLE - 100)
        self.assertIsNotNone((yield store.lookup("account", token)))
        clock.advance(s.IDLE + 1)
        self.assertIsNone((yield store.lookup("account", token)))  # idle too long
        token, _ = yield store.create("account", "mjl", "mjl", "127.0.0.1", "ua")
        for _ in range(int(s.LIFETIME // (s.IDLE / 2)) + 2):
            clock.advance(s.IDLE / 2)
            yield store.lookup("account", token)
        self.assertIsNone((yield store.lookup("account", token)))  # at most LIFETIME
