"""The configuration admin pages in headless Chromium (as test_web_browser): log in as
admin, add a domain and see the DNS records to publish; add an account and an address,
set its password, and deliver a message to that address over real SMTP into the
account's store; check the DNS over the loopback name server; edit domains.toml with an
error and see it refused. Screenshots are saved in the test's directory
(``web-admin-*.png``; copied to $MOXTW_SCREENSHOTS when set)."""

import smtplib

from twisted.internet import defer, threads

from moxtw.test.test_web import ADMIN_PASSWORD
from moxtw.test.test_web_admin_config import AdminConfigBase
from moxtw.test import test_web_browser as browser

MESSAGE = (b"From: Someone <someone@remote.example>\r\nTo: dee@example.net\r\n"
           b"Subject: hello through the admin pages\r\nMessage-ID: <admin-web-1@remote.example>\r\n\r\n"
           b"Delivered to an address added in the browser.\r\n")


class AdminConfigBrowserTests(browser.BrowserMixin, AdminConfigBase):
    timeout = 180

    def base(self):
        return f"http://localhost:{self.ports['http']}/admin/"

    def log_in(self, page):
        page.goto(self.base())
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#accounts")

    @defer.inlineCallbacks
    def test_domain_account_address_delivery(self):
        def flow(page):
            self.log_in(page)
            page.click("nav.adminnav >> text=Domains")
            page.wait_for_selector("#domain-add")
            page.fill("#domain-add input[name=domain]", "example.net")
            page.fill("#domain-add input[name=account]", "mjl")
            page.fill("#domain-add input[name=localpart]", "postmaster")
            page.click("#domain-add button[type=submit]")
            page.wait_for_selector("#records")
            added = page.inner_text("#message")
            records = page.inner_text("#records")
            zone = page.inner_text("#zone")
            selectors = page.inner_text("#selectors")
            self.shot(page, "admin-domain")

            page.click("nav.adminnav >> text=Accounts")
            page.fill("#account-add input[name=account]", "dee")
            page.fill("#account-add input[name=address]", "dee@example.net")
            page.click("#account-add button[type=submit]")
            page.wait_for_selector("#address-add")
            page.fill("#address-add input[name=address]", "d@example.net")
            page.click("#address-add button[type=submit]")
            page.wait_for_selector("#message")
            page.fill("#password-form input[name=password]", "dee's new password")
            page.click("#password-form button[type=submit]")
            page.wait_for_selector("#message")
            password = page.inner_text("#message")
            page.fill("#settings-form input[name=MaxOutgoingMessagesPerDay]", "25")
            page.click("#settings-form button[type=submit]")
            page.wait_for_selector("#message")
            settings = page.inner_text("#message")
            addresses = page.inner_text("#addresses")
            self.shot(page, "admin-account")
            return added, records, zone, selectors, password, settings, addresses

        result, errors = yield self.run_browser(flow)
        added, records, zone, selectors, password, settings, addresses = result
        self.assertIn("domain example.net added", added)
        self.assertIn("_domainkey.example.net", records)
        self.assertIn("example.net. 300 IN MX 10 mail.example.org.", zone)
        self.assertIn("ed25519", selectors)  # the key file names say the kind
        self.assertIn("password of account dee set", password)
        self.assertIn("MaxOutgoingMessagesPerDay changed", settings)
        self.assertIn("d@example.net", addresses)
        self.assertEqual(errors, [])
        self.assertEqual(self.root.watcher.current.Accounts["dee"].MaxOutgoingMessagesPerDay, 25)

        # Mail to the new address, over SMTP, arrives in the new account's store.
        def deliver():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
                s.sendmail("someone@remote.example", ["d@example.net"], MESSAGE)

        yield threads.deferToThread(deliver)
        acc = yield self.root.store.open_account("dee")
        inbox = yield acc.mailbox("Inbox")
        messages = yield acc.messages(inbox.id)
        self.assertEqual(len(messages), 1)
        self.assertTrue((yield acc.verify_password("dee's new password")))
        self.keep_screenshots()

    @defer.inlineCallbacks
    def test_dnscheck_and_invalid_config_edit(self):
        before = self.file()

        def flow(page):
            self.log_in(page)
            page.goto(self.base() + "domains/example.org")
            page.click("#dnscheck")
            page.wait_for_selector("#dnscheck")
            check = page.inner_text("#dnscheck")
            self.shot(page, "admin-dnscheck")
            page.click("nav.adminnav >> text=domains.toml")
            page.wait_for_selector("#config-text")
            text = page.input_value("#config-text")
            page.fill("#config-text", text + '\n[Accounts.broken]\nDomain = "nowhere.example"\n')
            page.click("#config-form button[type=submit]")
            page.wait_for_selector("#error")
            error = page.inner_text("#error")
            kept = page.input_value("#config-text")
            self.shot(page, "admin-config-error")
            page.goto(self.base() + "logging")
            page.fill("#loglevel-form input[name=pkg]", "smtpserver")
            page.select_option("#loglevel-form select[name=level]", "debug")
            page.click("#loglevel-form button[type=submit]")
            page.wait_for_selector("#message")
            levels = page.inner_text("#loglevels")
            self.shot(page, "admin-logging")
            return check, text, error, kept, levels

        (check, text, error, kept, levels), errors = yield self.run_browser(flow)
        self.assertIn("MX", check)
        self.assertIn("ok", check)
        self.assertIn("error", check)  # no DMARC record is published
        self.assertEqual(text.encode(), before)
        self.assertIn("unknown domain 'nowhere.example'", error)
        self.assertIn("[Accounts.broken]", kept)
        self.assertEqual(self.file(), before)
        self.assertIn("smtpserver\tdebug", levels)
        # The refused save answers 400, on purpose.
        self.assertEqual([e for e in errors if "status of 400" not in e], [])
        self.keep_screenshots()
