"""Passwords in the account pages: generated random passwords (the only kind an account
with NoCustomPassword may set), usable over IMAP at once."""

import imaplib
import json
import os
import ssl

from twisted.internet import defer, threads

from moxtw.test.test_web import PASSWORD, WebTestBase


class GeneratedPasswordTests(WebTestBase):
    def set_no_custom_password(self):
        cfg_dir = self.root.watcher.config.config_dir
        path = os.path.join(cfg_dir, "domains.toml")
        with open(path) as f:
            text = f.read()
        text = text.replace('[Accounts.mjl]\n', '[Accounts.mjl]\nNoCustomPassword = true\n')
        with open(path, "w") as f:
            f.write(text)
        self.assertTrue(self.root.watcher.reload())
        self.assertTrue(self.root.watcher.current.Accounts["mjl"].NoCustomPassword)

    def imap_login(self, password):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False
        with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=ctx, timeout=10) as c:
            c.login("mjl@example.org", password)
            return "ok"

    @defer.inlineCallbacks
    def test_generated_password(self):
        self.set_no_custom_password()
        cookie, csrf, _ = yield self.login()
        # A chosen password is refused for this account; the page offers only generation.
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"password": "my own choice!"})
        self.assertEqual(r.code, 403, content)
        r, page = yield self.call(self.account, "GET", "/", cookie=cookie)
        self.assertNotIn(b'id="password-form"', page)
        self.assertIn(b'id="generate-form"', page)
        # A generated one is returned once and works over IMAP; the old one does not.
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"generate": "1"})
        self.assertEqual(r.code, 200, content)
        new = json.loads(content)["password"]
        self.assertGreaterEqual(len(new), 16)
        self.assertEqual((yield threads.deferToThread(self.imap_login, new)), "ok")
        with self.assertRaises(imaplib.IMAP4.error):
            yield threads.deferToThread(self.imap_login, PASSWORD)
        # The page form answers with the password in the page, not in a URL.
        r, page = yield self.call(self.account, "POST", "/password", cookie=cookie,
                                  raw=f"csrf={csrf}&generate=1".encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 200)
        self.assertIsNone(r.headers.getRawHeaders(b"location"))
        self.assertIn(b'id="new-password"', page)
        # Without CSRF nothing changes.
        r, _ = yield self.call(self.account, "POST", "/api/password", cookie=cookie, body={"generate": "1"})
        self.assertEqual(r.code, 403)

    @defer.inlineCallbacks
    def test_other_accounts_choose_their_password(self):
        cookie, csrf, _ = yield self.login()
        r, page = yield self.call(self.account, "GET", "/", cookie=cookie)
        self.assertIn(b'id="password-form"', page)
        r, content = yield self.call(self.account, "POST", "/api/password", cookie=cookie, csrf=csrf,
                                     body={"password": "my own choice!"})
        self.assertEqual(r.code, 200, content)
        self.assertNotIn("password", json.loads(content))
