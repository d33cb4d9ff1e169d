"""Regression tests from the hostile review of the web foundation: bodies bounded before
they are read, login limits under parallel attempts and per login, sessions of disabled
or removed accounts, Origin null, security headers on every answer, strict JSON and ids,
a new admin password ending older sessions."""

import json
import socket
import time

from twisted.internet import defer, threads

from moxtw.test.test_web import ADMIN_PASSWORD, PASSWORD, WebTestBase


def _raw(port, data, read_timeout=5.0, send_more=0):
    """Send raw bytes, optionally keep sending filler, return what the server answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before taking it all (413)
        s.settimeout(0.2)
        sent = 0
        out = b""
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            if sent < send_more:
                try:
                    s.sendall(b"a" * 65536)
                    sent += 65536
                except OSError:
                    pass
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


class HostileBody(WebTestBase):
    @defer.inlineCallbacks
    def test_huge_content_length_refused_early(self):
        # 1 GB announced: the server must answer 413 without waiting for (and buffering
        # to a temp file / parsing) the body.
        req = (b"POST /login HTTP/1.1\r\nHost: mail.example.org\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\n\r\n")
        out = yield threads.deferToThread(_raw, self.ports["http"], req, 5.0, 4 * 1024 * 1024)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:200])

    @defer.inlineCallbacks
    def test_chunked_body_bounded(self):
        req = (b"POST /admin/login HTTP/1.1\r\nHost: mail.example.org\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
               + (b"10000\r\n" + b"a" * 0x10000 + b"\r\n") * 64)  # 4 MB, never terminated
        out = yield threads.deferToThread(_raw, self.ports["http"], req, 5.0)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:200])


class HostileAuth(WebTestBase):
    @defer.inlineCallbacks
    def test_login_origin_null_refused(self):
        # Origin "null" is what sandboxed iframes / data: pages send: a cross-site login
        # (login CSRF) must not be accepted on it.
        r, content = yield self.call(self.account, "POST", "/api/login", headers={"Origin": "null"},
                                     body={"login": "mjl@example.org", "password": PASSWORD})
        self.assertEqual(r.code, 403, content)

    @defer.inlineCallbacks
    def test_concurrent_failed_logins_limited(self):
        # 40 wrong passwords at once from one IP: no more than the 10/minute IP limit may
        # actually be checked.
        ds = [self.call(self.account, "POST", "/api/login",
                        body={"login": "mjl@example.org", "password": f"wrong {i}"}) for i in range(40)]
        results = yield defer.gatherResults(ds)
        checked = [r.code for r, _ in results if r.code == 401]
        self.assertLessEqual(len(checked), 10, sorted(r.code for r, _ in results))

    @defer.inlineCallbacks
    def test_concurrent_failed_admin_logins_limited(self):
        ds = [self.call(self.admin, "POST", "/api/login", body={"password": f"wrong {i}"}) for i in range(40)]
        results = yield defer.gatherResults(ds)
        checked = [r.code for r, _ in results if r.code == 401]
        self.assertLessEqual(len(checked), 10, sorted(r.code for r, _ in results))

    @defer.inlineCallbacks
    def test_per_ip_and_login_limit_as_imap(self):
        # SMTP/IMAP refuse a login from an IP after 5 failures for it in a minute; the web
        # login must apply the same (IP, login) limit.
        # (The limits count per clock minute: a run crossing a minute starts over, so up
        # to two windows' worth of attempts.)
        codes = []
        for i in range(11):
            r, content = yield self.call(self.account, "POST", "/api/login",
                                         body={"login": "mjl@example.org", "password": f"wrong {i}"})
            codes.append(r.code)
            if r.code == 429:
                break
        self.assertEqual(codes[-1], 429, codes)
        self.assertIn(b"for this login", content)
    test_per_ip_and_login_limit_as_imap.timeout = 60

    @defer.inlineCallbacks
    def test_account_cookie_not_admin(self):
        cookie, csrf, _ = yield self.login()
        token = cookie.split("=", 1)[1]
        for c in (cookie, "moxtw_admin=" + token):
            r, _ = yield self.call(self.admin, "GET", "/api/overview", cookie=c)
            self.assertEqual(r.code, 401)
            r, _ = yield self.call(self.admin, "POST", "/api/queue/hold", cookie=c, csrf=csrf, body={"ids": [1]})
            self.assertEqual(r.code, 401)

    @defer.inlineCallbacks
    def test_password_must_be_string(self):
        cookie, csrf, _ = yield self.login()
        for bad in (123456789012, ["aaaaaaaaaa"], {"a": "bbbbbbbbbb"}):
            r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                         body={"password": bad})
            self.assertEqual(r.code, 400, (bad, content))


class HostilePaths(WebTestBase):
    @defer.inlineCallbacks
    def test_security_headers_everywhere(self):
        self.maxDiff = None
        bad = []
        for method, path in (("GET", "/login"), ("GET", "/nonexistent"), ("GET", "/admin"),
                             ("GET", "/admin/nonexistent"), ("DELETE", "/"), ("GET", "/%ff")):
            r, content = yield self.call(self.account, method, path)
            if (r.headers.getRawHeaders(b"x-frame-options") is None or
                    r.headers.getRawHeaders(b"content-security-policy") is None or r.code >= 500):
                bad.append((method, path, r.code, content[:80]))
        self.assertEqual(bad, [])

    @defer.inlineCallbacks
    def test_odd_paths_do_not_reach_admin(self):
        cookie, csrf, _ = yield self.login()
        for path in ("//admin/api/overview", "/api/../admin/api/overview", "/admin%2Fapi%2Foverview",
                     "/./admin/api/overview", "/%2e%2e/admin/api/overview"):
            r, content = yield self.call(self.account, "GET", path, cookie=cookie)
            self.assertNotEqual(r.code, 200, (path, content[:200]))
            self.assertLess(r.code, 500, (path, content[:300]))

    @defer.inlineCallbacks
    def test_queue_ids_strict(self):
        r, content = yield self.call(self.admin, "POST", "/api/login", body={"password": ADMIN_PASSWORD})
        cookie = r.headers.getRawHeaders(b"set-cookie")[0].decode().split(";")[0]
        csrf = json.loads(content)["csrf"]
        bad = []
        for ids in ([10 ** 30], [True], [1.9], ["1e3"], [-5], "[" * 5000):
            r, content = yield self.call(self.admin, "POST", "/api/queue/hold", cookie=cookie, csrf=csrf,
                                         body={"ids": ids})
            if r.code != 400:
                bad.append((ids if len(str(ids)) < 50 else "deep", r.code, content[:60]))
        self.assertEqual(bad, [])


class HostileSessionsAfterConfigChange(WebTestBase):
    def _set_account(self, name, acc):
        w = self.root.watcher
        dyn = w.current
        accounts = dict(dyn.Accounts)
        if acc is None:
            del accounts[name]
        else:
            accounts[name] = acc
        new = dyn.model_copy(update={"Accounts": accounts})
        try:
            w.current = new
        except AttributeError:
            w.config.dynamic = new

    @defer.inlineCallbacks
    def test_login_disabled_ends_web_session(self):
        cookie, csrf, _ = yield self.login()
        acc = self.root.watcher.current.Accounts["mjl"]
        self._set_account("mjl", acc.model_copy(update={"LoginDisabled": "account suspended"}))
        r, content = yield self.call(self.account, "GET", "/api/sessions", cookie=cookie)
        self.assertIn(r.code, (401, 403), content)
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"password": "a new password 1"})
        self.assertIn(r.code, (401, 403), content)

    @defer.inlineCallbacks
    def test_removed_account_session_useless(self):
        cookie, csrf, _ = yield self.login()
        self._set_account("mjl", None)
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"password": "a new password 1"})
        self.assertIn(r.code, (401, 403, 404), content)
