"""The account and admin pages in headless Chromium (Debian's chromium driven by
Playwright): log in, change the password and log in with it over IMAP; log in as admin,
see the accounts and release a held message from the queue. Screenshots of the pages are
saved in the test's directory (``web-*.png``)."""

import imaplib
import os
import shutil
import ssl

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.test.test_web import ADMIN_PASSWORD, PASSWORD, WebTestBase

CHROMIUM = "/usr/bin/chromium"


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise unittest.SkipTest("playwright not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        raise unittest.SkipTest("chromium not installed (apt-get install chromium)")
    return sync_playwright


class BrowserMixin:
    """Headless Chromium for a test case: ``run_browser(fn)`` runs ``fn(page)`` in a
    thread and gives (its result, console and page errors); ``shot(page, name)`` saves
    ``<shot_prefix><name>.png`` in the test's directory (copied to $MOXTW_SCREENSHOTS by
    ``keep_screenshots``)."""

    viewport = {"width": 1100, "height": 800}
    shot_prefix = "web-"

    def setUp(self):
        self.sync_playwright = _browser()
        self.shots = os.path.abspath(self.mktemp())
        os.makedirs(self.shots)
        return super().setUp()

    def run_browser(self, fn):
        def go():
            with self.sync_playwright() as p:
                args = ["--no-sandbox"] if os.geteuid() == 0 else []
                browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
                try:
                    ctx = browser.new_context(viewport=self.viewport, accept_downloads=True)
                    page = ctx.new_page()
                    errors = []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    return fn(page), errors
                finally:
                    browser.close()

        return threads.deferToThread(go)

    def shot(self, page, name):
        path = os.path.join(self.shots, f"{self.shot_prefix}{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    def keep_screenshots(self):
        keep = os.environ.get("MOXTW_SCREENSHOTS")
        if keep:
            for f in os.listdir(self.shots):
                shutil.copy(os.path.join(self.shots, f), keep)


class BrowserTests(BrowserMixin, WebTestBase):
    timeout = 180

    @defer.inlineCallbacks
    def test_account_password_change(self):
        base = f"http://localhost:{self.ports['http']}/"
        new = "changed in the browser"

        def flow(page):
            page.goto(base)
            self.shot(page, "account-login")
            page.fill("input[name=login]", "mjl@example.org")
            page.fill("input[name=password]", "wrong password")
            page.click("button[type=submit]")
            wrong = page.inner_text("#message")
            page.fill("input[name=login]", "mjl@example.org")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#addresses")
            addresses = page.inner_text("#addresses")
            self.shot(page, "account")
            page.fill("#password-form input[name=password]", new)
            page.fill("#password-form input[name=password2]", new)
            page.click("#password-form button[type=submit]")
            page.wait_for_selector("#changed")
            after = page.url
            page.click("header .logout button")
            page.wait_for_selector("input[name=login]")
            return wrong, addresses, after

        (wrong, addresses, after), errors = yield self.run_browser(flow)
        self.assertEqual(wrong, "invalid login or password")
        self.assertIn("mjl@example.org", addresses)
        self.assertTrue(after.endswith("?changed=1"), after)
        # No CSP violations or script errors (the refused login answers 401, on purpose).
        self.assertEqual([e for e in errors if "status of 401" not in e], [])

        def imap():
            with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"],
                                   ssl_context=ssl.create_default_context(cafile=self.ca)) as c:
                return c.login("mjl@example.org", new)[0]

        self.assertEqual((yield threads.deferToThread(imap)), "OK")
        self.keep_screenshots()

    @defer.inlineCallbacks
    def test_admin_queue_release(self):
        [qid] = yield self.root.queue.add(b"Subject: held\r\n\r\nx\r\n", "mjl@example.org", ["x@elsewhere.example"],
                                          sender_account="mjl", hold=True, subject="a held message")
        base = f"http://localhost:{self.ports['http']}/admin/"

        def flow(page):
            page.goto(base)
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#accounts")
            accounts = page.inner_text("#accounts")
            self.shot(page, "admin")
            page.click(f"#unhold-{qid}")
            page.wait_for_selector(f"#hold-{qid}")
            self.shot(page, "admin-released")
            return accounts

        accounts, errors = yield self.run_browser(flow)
        self.assertIn("other@example.org", accounts)
        self.assertEqual(errors, [])
        entry = yield self.root.queue.get(qid)
        self.assertTrue(entry is None or not entry.hold)
        for name in ("admin", "admin-released"):
            self.assertTrue(os.path.getsize(os.path.join(self.shots, f"web-{name}.png")) > 1000)
        self.keep_screenshots()
