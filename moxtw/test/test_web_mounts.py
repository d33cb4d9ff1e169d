"""The web interfaces at the Paths a listener configures, with Forwarded (behind a
reverse proxy) and without, over a real loopback listener: pages, links and cookie paths
under the prefix, the bare prefix redirected, other paths not reaching the apps, the
client IP and TLS status from X-Forwarded-* only when trusted, gzip for what compresses."""

import gzip
import json
import os

import treq
from twisted.internet import defer
from twisted.trial import unittest

from moxtw.admin.quickstart import write_admin_password
from moxtw.listeners import ListenerError, mount_path
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.test.test_web import ADMIN_PASSWORD, DYNAMIC, PASSWORD

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
[Listeners.main.AccountHTTP]
Enabled = true
Port = {http}
Path = "/mail"
Forwarded = true
[Listeners.main.AdminHTTP]
Enabled = true
Port = {http}
Path = "/mail/manage/"
[Listeners.main.WebmailHTTP]
Enabled = true
Port = {http}
[Listeners.main.AdminHTTPS]
Enabled = false
"""


class MountTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.port = 80 + off
        d = os.path.abspath(self.mktemp())
        cfg, _ = servertree.write_config(d, STATIC.format(http=self.port), DYNAMIC)
        write_admin_password(cfg.config_dir, ADMIN_PASSWORD)
        self.root = yield servertree.start(self, cfg)
        yield self.root.web_sessions.open()
        acc = yield self.root.store.open_account("mjl")
        yield acc.set_password(PASSWORD)
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.base = f"http://127.0.0.1:{self.port}"

    @defer.inlineCallbacks
    def call(self, method, path, headers=None, body=None):
        h = {b"Host": [b"mail.example.org"]}
        for k, v in (headers or {}).items():
            h[k.encode()] = [v.encode()]
        kw = {}
        if body is not None:
            h[b"Content-Type"] = [b"application/json"]
            kw["data"] = json.dumps(body).encode()
        r = yield treq.request(method, self.base + path, headers=h, allow_redirects=False, pool=self.pool, **kw)
        content = yield r.content()
        return r, content

    @defer.inlineCallbacks
    def test_apps_at_their_paths(self):
        # The account pages under /mail/: a login form posting to /mail/login.
        r, page = yield self.call("GET", "/mail/")
        self.assertEqual(r.code, 200)
        self.assertIn(b'action="/mail/login"', page)
        # The bare prefix redirects to the prefix with its slash.
        r, _ = yield self.call("GET", "/mail")
        self.assertEqual(r.code, 301)
        self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/mail/"])
        # The admin pages below it: the longer prefix wins.
        r, page = yield self.call("GET", "/mail/manage/")
        self.assertEqual(r.code, 200)
        self.assertIn(b'action="/mail/manage/login"', page)
        # Nothing at the old defaults: / and /admin/ are not the apps.
        for path in ("/", "/admin/", "/login", "/api/overview"):
            r, page = yield self.call("GET", path)
            self.assertNotEqual(r.code, 200, path)
            self.assertNotIn(b"login", page.lower().replace(b"not built", b""), path)
        # The webmail (not built) answers 503 at its default path.
        r, _ = yield self.call("GET", "/webmail/")
        self.assertEqual(r.code, 503)

    @defer.inlineCallbacks
    def test_cookie_paths_and_api(self):
        r, content = yield self.call("POST", "/mail/api/login", body={"login": "mjl@example.org",
                                                                       "password": PASSWORD})
        self.assertEqual(r.code, 200, content)
        cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode()
        self.assertIn("Path=/mail/", cookie)
        r, content = yield self.call("GET", "/mail/api/overview", headers={"Cookie": cookie.split(";")[0]})
        self.assertEqual(r.code, 200, content)
        r, content = yield self.call("POST", "/mail/manage/api/login", body={"password": ADMIN_PASSWORD})
        self.assertEqual(r.code, 200, content)
        admin_cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode()
        self.assertIn("Path=/mail/manage/", admin_cookie)
        self.assertIn("moxtw_admin=", admin_cookie)
        # The account session is no admin session.
        r, _ = yield self.call("GET", "/mail/manage/api/overview", headers={"Cookie": cookie.split(";")[0]})
        self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_forwarded_only_where_trusted(self):
        # The account pages trust X-Forwarded-*: the client IP of failed logins is the
        # proxy's last entry, and X-Forwarded-Proto https makes the cookie Secure.
        limits = self.root.login_limits
        # Counted in windows aligned to the minute: frozen, so none ends during the test.
        for limiter in (limits.ip_failures, limits.ip_login_failures, limits.login_failures):
            limiter._now = lambda: 1_700_000_030.0
        r, _ = yield self.call("POST", "/mail/api/login", body={"login": "mjl@example.org", "password": "bad"},
                               headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.7"})
        self.assertEqual(r.code, 401)
        self.assertEqual(limits.ip_failures.count("198.51.100.7"), 1)
        self.assertEqual(limits.ip_failures.count("10.9.9.9"), 0)
        r, _ = yield self.call("POST", "/mail/api/login", body={"login": "mjl@example.org", "password": PASSWORD},
                               headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(r.code, 200)
        self.assertIn("Secure", r.headers.getRawHeaders(b"set-cookie")[0].decode())
        self.assertEqual(r.headers.getRawHeaders(b"strict-transport-security"), [b"max-age=31536000"])
        # A garbage X-Forwarded-For is not an address: the peer's is used.
        r, _ = yield self.call("POST", "/mail/api/login", body={"login": "mjl@example.org", "password": "bad"},
                               headers={"X-Forwarded-For": "<script>, ::ffff:zz"})
        self.assertEqual(r.code, 401, _)
        self.assertEqual(limits.ip_failures.count("127.0.0.1"), 1)
        # The admin pages do not trust them (Forwarded is false there).
        r, _ = yield self.call("POST", "/mail/manage/api/login", body={"password": "bad"},
                               headers={"X-Forwarded-For": "203.0.113.50", "X-Forwarded-Proto": "https"})
        self.assertEqual(r.code, 401)
        self.assertEqual(limits.ip_failures.count("203.0.113.50"), 0)
        self.assertEqual(limits.ip_failures.count("127.0.0.1"), 2)
        r, content = yield self.call("POST", "/mail/manage/api/login", body={"password": ADMIN_PASSWORD},
                                     headers={"X-Forwarded-Proto": "https"})
        self.assertNotIn("Secure", r.headers.getRawHeaders(b"set-cookie")[0].decode())

    @defer.inlineCallbacks
    def raw(self, method, path, headers=None, body=None):
        """A request without treq's own gzip decoding: the bytes as sent."""
        from twisted.internet import reactor
        from twisted.web.client import Agent, FileBodyProducer, readBody
        from twisted.web.http_headers import Headers
        import io

        h = Headers({b"Host": [b"mail.example.org"]})
        for k, v in (headers or {}).items():
            h.setRawHeaders(k.encode(), [v.encode()])
        producer = None
        if body is not None:
            h.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
        r = yield Agent(reactor, pool=self.pool).request(method.encode(), (self.base + path).encode(), h, producer)
        content = yield readBody(r)
        return r, content

    @defer.inlineCallbacks
    def test_gzip(self):
        # CSS and API answers compress when the client accepts gzip; pages with a CSRF
        # token in them do not (BREACH), and without Accept-Encoding nothing is.
        r, css = yield self.raw("GET", "/mail/style.css", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        plain = gzip.decompress(css)
        self.assertIn(b"{", plain)
        self.assertLess(len(css), len(plain))
        r, css2 = yield self.raw("GET", "/mail/style.css")
        self.assertIsNone(r.headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(css2, plain)
        r, content = yield self.raw("GET", "/mail/api/", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertIsInstance(json.loads(gzip.decompress(content)), list)
        r, content = yield self.raw("POST", "/mail/api/login", body={"login": "mjl@example.org",
                                                                       "password": PASSWORD},
                                     headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.code, 200)
        self.assertIsNone(r.headers.getRawHeaders(b"content-encoding"))
        self.assertIn("csrf", json.loads(content))
        cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode().split(";")[0]
        r, page = yield self.raw("GET", "/mail/", headers={"Accept-Encoding": "gzip", "Cookie": cookie})
        self.assertEqual(r.code, 200)
        self.assertIsNone(r.headers.getRawHeaders(b"content-encoding"))
        self.assertIn(b"csrf", page)


class MountPathTests(unittest.SynchronousTestCase):
    def test_mount_path(self):
        self.assertEqual(mount_path("/"), "/")
        self.assertEqual(mount_path(""), "/")
        self.assertEqual(mount_path("/admin"), "/admin/")
        self.assertEqual(mount_path("admin//x/"), "/admin/x/")

    def test_same_path_refused(self):
        from moxtw.config.load import validate_static
        from moxtw.listeners import build

        static = validate_static('''
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.AccountHTTP]
Enabled = true
Port = 8080
Path = "/x/"
[Listeners.main.AdminHTTP]
Enabled = true
Port = 8080
Path = "/x"
''', "moxtw.toml")
        with self.assertRaises(ListenerError) as e:
            build(static, None, smtp_factory=None, imap_factory=None)
        self.assertIn("/x/", str(e.exception))
