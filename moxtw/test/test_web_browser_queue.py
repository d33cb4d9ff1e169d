"""The admin queue and report pages in headless Chromium (as ``test_web_browser``): log in
as admin, filter the queue, reschedule and drop messages with the page's forms, look at a
DMARC report received over SMTP, a TLS report, the DNSBL status. Screenshots are saved in the test's directory
(``web-queue-*.png``; copied to $MOXTW_SCREENSHOTS when set)."""

import gzip
import os
import shutil
import time
from datetime import datetime, timedelta, timezone

from twisted.internet import defer

from moxtw.test import test_dmarcrpt, test_tlsrpt
from moxtw.test.test_web import ADMIN_PASSWORD
from moxtw.test.test_web_admin_queue import AdminQueueTestBase
from moxtw.test.test_web_admin_reports import HOSTILE_ORG, ReportsMixin, dmarc_xml, tls_json
from moxtw.test.test_web_browser import BrowserMixin


class QueueBrowserTests(BrowserMixin, ReportsMixin, AdminQueueTestBase):
    timeout = 180
    viewport = {"width": 1280, "height": 900}
    shot_prefix = "web-queue-"

    @defer.inlineCallbacks
    def test_filter_reschedule_drop_and_dmarc_report(self):
        later = datetime.now(timezone.utc) + timedelta(hours=5)
        [keep] = yield self.queued(rcpts=["anne@keep.example"], subject="stays", hold=False)
        [resched] = yield self.queued(rcpts=["bob@gmail.example"], subject="to reschedule", hold=False,
                                      hold_until=later)
        [drop] = yield self.queued(rcpts=["carol@gmail.example"], subject="to drop <b>now</b>")
        begin = int(time.time()) - 2 * 86400
        begin -= begin % 86400
        msg = test_dmarcrpt.report_message(
            [("application/gzip", "r.xml.gz", gzip.compress(dmarc_xml(begin)))], from_addr="noreply@reporter.example")
        yield self.deliver("dmarc-reports@example.org", msg)
        [stored] = yield self.wait_for(lambda: self.root.reports.dmarc.list())
        msg = test_tlsrpt.report_message([("application/tlsrpt+gzip", "r.json.gz",
                                           gzip.compress(tls_json(int(time.time()) - 86400)))],
                                         from_addr="noreply@reporter.example")
        yield self.deliver("tls-reports@example.org", msg)
        yield self.wait_for(lambda: self.root.reports.tlsrpt.list())
        base = f"http://localhost:{self.ports['http']}/admin/"

        def flow(page):
            page.goto(base)
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#accounts")
            page.click("#adminnav >> text=Queue")
            page.wait_for_selector("#queue")
            self.shot(page, "list")
            all_rows = page.locator("#queue tr[id^=entry-]").count()
            page.fill("#filter input[name=domain]", "gmail.example")
            page.click("#filter-apply")
            page.wait_for_url("**domain=gmail.example**")
            filtered = page.locator("#queue tr[id^=entry-]").count()
            self.shot(page, "filtered")
            # Reschedule one message to 2 hours from now.
            page.check(f"#select-{resched}")
            page.fill("#when", "2h")
            page.click("#act-reschedule")
            page.wait_for_selector("#done")
            done1 = page.inner_text("#done")
            self.shot(page, "rescheduled")
            # Drop another.
            page.check(f"#select-{drop}")
            page.click("#act-drop")
            page.wait_for_selector("#done")
            done2 = page.inner_text("#done")
            after = page.locator("#queue tr[id^=entry-]").count()
            still_filtered = page.input_value("#filter input[name=domain]")
            self.shot(page, "dropped")
            # The DMARC report page and one report.
            page.click("#adminnav >> text=DMARC reports")
            page.wait_for_selector("#dmarc-summary")
            summary = page.inner_text("#dmarc-summary")
            self.shot(page, "dmarc")
            page.click("#dmarc-summary a.report-link")
            page.wait_for_selector("#dmarc-records")
            org = page.inner_text("#org")
            self.shot(page, "dmarc-report")
            # TLS reports, one in detail, and the DNSBL status.
            page.click("#adminnav >> text=TLS reports")
            page.wait_for_selector("#tls-summary")
            tls = page.inner_text("#tls-summary")
            self.shot(page, "tls")
            page.click("#tls-summary a.report-link")
            page.wait_for_selector(".failure-details")
            self.shot(page, "tls-report")
            page.click("#adminnav >> text=DNSBL status")
            page.wait_for_selector("#dnsbl")
            dnsbl = page.inner_text("#dnsbl")
            self.shot(page, "dnsbl")
            return tls, dnsbl,  all_rows, filtered, done1, done2, after, still_filtered, summary, org

        (tls, dnsbl, all_rows, filtered, done1, done2, after, still_filtered, summary, org), errors = \
            yield self.run_browser(flow)
        self.assertEqual((all_rows, filtered, after), (3, 2, 1))
        self.assertEqual((done1, done2), ("reschedule: 1 message(s)", "drop: 1 message(s)"))
        self.assertEqual(still_filtered, "gmail.example")
        self.assertIn("example.org", summary)
        self.assertEqual(org, HOSTILE_ORG)  # shown as text, not run
        self.assertIn("starttls-not-supported: 200", tls)
        self.assertIn("LISTED", dnsbl)
        self.assertIn("<script>listed</script>", dnsbl)  # the TXT record's text, as text
        self.assertEqual(errors, [])
        e = yield self.root.queue.get(resched)
        self.assertLess(abs((e.next_attempt - datetime.now(timezone.utc)).total_seconds() - 7200), 120)
        self.assertEqual(sorted(x.id for x in (yield self.root.queue.list())), [keep, resched])
        for name in ("list", "filtered", "rescheduled", "dropped", "dmarc", "dmarc-report", "tls", "tls-report",
                     "dnsbl"):
            self.assertGreater(os.path.getsize(os.path.join(self.shots, f"web-queue-{name}.png")), 1000)
        keep_dir = os.environ.get("MOXTW_SCREENSHOTS")
        if keep_dir:
            for f in os.listdir(self.shots):
                shutil.copy(os.path.join(self.shots, f), keep_dir)
