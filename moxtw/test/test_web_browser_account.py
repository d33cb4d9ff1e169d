"""The account pages beyond the overview in headless Chromium (Debian's chromium driven
by Playwright), against the real service tree: add a ruleset in the page and see the next
SMTP delivery follow it; create an app password and log in with it over IMAP; import an
mbox with the progress bar reaching 100%, then download the export and compare it with
what was imported. Screenshots are saved in the test's directory (``web-*.png``)."""

import os
import zipfile

from twisted.internet import defer, threads

from moxtw.test.test_web import PASSWORD
from moxtw.test.test_web_account_more import MoreBase, mbox, message
from moxtw.test.test_web_browser import BrowserMixin


class AccountBrowserTests(BrowserMixin, MoreBase):
    timeout = 240

    def log_in(self, page):
        page.goto(f"http://localhost:{self.ports['http']}/")
        page.fill("input[name=login]", "mjl@example.org")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#addresses")

    @defer.inlineCallbacks
    def test_ruleset_and_app_password(self):
        base = f"http://localhost:{self.ports['http']}/"

        def flow(page):
            self.log_in(page)
            page.click("text=Addresses and rules")
            page.wait_for_selector("#fullname-form")
            page.click("details.add summary")
            form = page.locator("details.add form")
            form.locator("textarea[name=headers]").fill(r"^list-id$: <dev\.lists\.example>")
            form.locator("input[name=mailbox]").fill("Lists/dev")
            form.locator("input[name=comment]").fill("<b>the dev list</b>")
            form.locator("button[type=submit]").click()
            page.wait_for_selector("#saved")
            table = page.inner_text("table.rulesets")
            self.shot(page, "account-rulesets")
            # A bad expression is refused with the reason on the page.
            page.click("details.add summary")
            form = page.locator("details.add form")
            form.locator("input[name=smtp_mail_from_regexp]").fill("((")
            form.locator("input[name=mailbox]").fill("X")
            form.locator("button[type=submit]").click()
            refused = page.inner_text("#message")
            self.shot(page, "account-ruleset-refused")
            page.goto(base + "apppasswords")
            page.fill("#apppassword-form input[name=name]", "Thunderbird <laptop>")
            page.click("#apppassword-form button[type=submit]")
            password = page.inner_text("#new-password")
            listed = page.inner_text("#apppasswords")
            self.shot(page, "account-apppassword")
            return table, refused, password, listed

        (table, refused, password, listed), errors = yield self.run_browser(flow)
        # The refused ruleset's page comes with status 400, which Chromium logs.
        self.assertEqual([e for e in errors if "status of 400" not in e], [])
        self.assertIn("Lists/dev", table)
        self.assertIn("invalid regular expression", refused)
        self.assertIn("Thunderbird <laptop>", listed)
        yield threads.deferToThread(self.smtp_deliver, message(1, "list", extra="List-Id: <dev.lists.example>\r\n"))
        got = yield self.wait_for(lambda: self.messages_in("mjl", "Lists/dev"))
        self.assertIn(b"Subject: list 1", got[0])

        def imap():
            im = self.imap("mjl@example.org", password)
            typ, data = im.select("Lists/dev")
            im.logout()
            return typ, data

        typ, data = yield threads.deferToThread(imap)
        self.assertEqual((typ, data), ("OK", [b"1"]))

    @defer.inlineCallbacks
    def test_import_progress_and_export(self):
        base = f"http://localhost:{self.ports['http']}/"
        msgs = [message(i, "browser import") for i in range(400)]
        src = os.path.join(self.shots, "upload.mbox")
        with open(src, "wb") as f:
            f.write(mbox(msgs))
        saved = os.path.join(self.shots, "export.zip")

        def flow(page):
            self.log_in(page)
            page.goto(base + "transfer")
            page.set_input_files("#import-form input[type=file]", src)
            page.fill("#import-form input[name=mailbox]", "Imported")
            page.click("#import-form button[type=submit]")
            page.wait_for_selector("#import-result.ok", timeout=60000)
            bar = page.get_attribute("#import-bar", "value")
            result = page.inner_text("#import-result")
            self.shot(page, "account-import")
            page.reload()  # the mailbox list now has Imported
            page.select_option("#export-form select[name=mailbox]", "Imported")
            page.select_option("#export-form select[name=archive]", "zip")
            with page.expect_download() as info:
                page.click("#export-form button[type=submit]")
            info.value.save_as(saved)
            self.shot(page, "account-export")
            return bar, result

        (bar, result), errors = yield self.run_browser(flow)
        self.assertEqual(errors, [])
        self.assertEqual(bar, "100")
        self.assertIn("Imported 400 of 400", result)
        with zipfile.ZipFile(saved) as zf:
            data = zf.read("Imported.mbox")
        norm = [m.replace(b"\r\n", b"\n") for m in msgs]
        for m in norm[:5] + norm[-5:]:
            subject = m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0]
            self.assertIn(b"Subject: " + subject + b"\n", data)
        self.assertEqual(data.count(b"\nFrom moxtw ") + data.startswith(b"From moxtw "), 400)
        got = yield self.messages_in("mjl", "Imported")
        self.assertEqual([g.replace(b"\r\n", b"\n") for g in got], norm)
