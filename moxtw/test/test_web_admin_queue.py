"""The admin queue pages and API over a real loopback listener of the real service tree:
filters, hold/unhold/reschedule/fail/drop changing the queue, the raw view (text/plain,
bounded), hold rules holding a message submitted over real SMTP submission, the DNSBL
status from a loopback DNS server, and the checks (session, CSRF, Origin, hostile input).
"""

import json
import os
import smtplib
import ssl
from datetime import datetime, timedelta, timezone

from urllib.parse import urlencode

from twisted.internet import defer, reactor, threads
from twisted.web.client import HTTPConnectionPool

from moxtw.admin.quickstart import write_admin_password
from moxtw.dns import TemporaryFailure
from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_localserve import free_offset
from moxtw.test.test_web import ADMIN_PASSWORD, PASSWORD, WebTestBase
from moxtw.web import admin_queue

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
AdminPasswordFile = "adminpasswd"
[DNS]
Servers = ["{dns}"]
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
FirstTimeSenderDelay = "0s"
[Listeners.main.Submission]
Enabled = true
Port = {submission}
NoRequireSTARTTLS = true
[Listeners.main.AdminHTTP]
Enabled = true
Port = {http}
"""

DYNAMIC = """
MonitorDNSBLs = ["bl.example", "clean.example", "broken.example"]
[Domains."example.org"]
[Domains."example.org".DMARC]
Localpart = "dmarc-reports"
Account = "mjl"
Mailbox = "DMARC"
[Domains."example.org".TLSRPT]
Localpart = "tls-reports"
Account = "mjl"
Mailbox = "TLSRPT"
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
[Accounts.other]
Domain = "example.org"
[Accounts.other.Destinations."other@example.org"]
"""

# The loopback name server: 127.0.0.1 is listed in bl.example (RFC 5782 2.1: A record at
# the reversed IP, reason in TXT, here with markup), not in clean.example; broken.example
# fails (SERVFAIL).
DNS = {
    ("1.0.0.127.bl.example", "A"): ["127.0.0.2"],
    ("1.0.0.127.bl.example", "TXT"): ["<script>listed</script> see https://bl.example/"],
    ("clean.example", "SOA"): [],
}


class AdminQueueTestBase(WebTestBase):
    """An admin listener, SMTP and submission, names from a loopback DNS server."""

    timeout = 90
    extra_dns = {}  # more loopback DNS records, for subclasses

    @defer.inlineCallbacks
    def setUp(self):
        records = dict(DNS)
        records[("1.0.0.127.broken.example", "A")] = TemporaryFailure
        records.update(self.extra_dns)
        self.dns = loopback_dns(self, records)
        off = free_offset()
        self.ports = {"smtp": 25 + off, "submission": 587 + off, "http": 80 + off}
        d = os.path.abspath(self.mktemp())
        cfg, self.ca = servertree.write_config(d, STATIC.format(dns=self.dns.address, **self.ports), DYNAMIC)
        self.config_dir = cfg.config_dir
        write_admin_password(cfg.config_dir, ADMIN_PASSWORD)
        self.root = yield servertree.start(self, cfg)
        yield self.root.web_sessions.open()
        for name in ("mjl", "other"):
            acc = yield self.root.store.open_account(name)
            yield acc.set_password(PASSWORD)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.admin = f"http://127.0.0.1:{self.ports['http']}/admin"
        self.cookie, self.csrf = yield self.admin_login()

    def get(self, path, **kw):
        return self.call(self.admin, "GET", path, cookie=self.cookie, **kw)

    def post(self, path, body, **kw):
        return self.call(self.admin, "POST", path, cookie=self.cookie, csrf=self.csrf, body=body, **kw)

    def form_post(self, path, pairs, csrf=True, **kw):
        if csrf:
            pairs = list(pairs) + [("csrf", self.csrf)]
        return self.call(self.admin, "POST", path, cookie=self.cookie, raw=urlencode(pairs).encode(),
                         headers=dict({"Content-Type": "application/x-www-form-urlencoded"}, **kw.pop("headers", {})),
                         **kw)

    def queued(self, sender="mjl@example.org", rcpts=("x@elsewhere.example",), subject="hello", hold=True,
               data=None, **kw):
        msg = data or f"Subject: {subject}\r\nFrom: <{sender}>\r\n\r\nbody of {subject}\r\n".encode()
        # Held, or a first attempt far ahead: nothing is delivered while the test looks.
        if not hold:
            kw.setdefault("hold_until", datetime.now(timezone.utc) + timedelta(hours=5))
        return self.root.queue.add(msg, sender, list(rcpts), sender_account="mjl", hold=hold, subject=subject, **kw)

    @defer.inlineCallbacks
    def ids(self):
        return [e.id for e in (yield self.root.queue.list())]


class QueueTests(AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_not_logged_in(self):
        [qid] = yield self.queued()
        for path in ("/queue", "/api/queue/list", f"/api/queue/raw?id={qid}", f"/queue/raw?id={qid}",
                     "/api/queue/holdrules", "/api/reports/dmarc", "/api/dnsbl", "/reports/tls"):
            r, _ = yield self.call(self.admin, "GET", path)
            self.assertEqual(r.code, 401, path)
        for path in ("/api/queue/drop", "/api/queue/holdrules/add", "/queue/drop"):
            r, _ = yield self.call(self.admin, "POST", path, body={"ids": [qid]})
            self.assertEqual(r.code, 401, path)
        self.assertEqual((yield self.ids()), [qid])

    @defer.inlineCallbacks
    def test_csrf_and_origin(self):
        [qid] = yield self.queued()
        r, _ = yield self.call(self.admin, "POST", "/api/queue/drop", cookie=self.cookie, body={"ids": [qid]})
        self.assertEqual(r.code, 403)
        r, _ = yield self.call(self.admin, "POST", "/api/queue/drop", cookie=self.cookie, csrf="wrong",
                               body={"ids": [qid]})
        self.assertEqual(r.code, 403)
        r, _ = yield self.post("/api/queue/drop", {"ids": [qid]}, headers={"Origin": "https://evil.example"})
        self.assertEqual(r.code, 403)
        r, _ = yield self.form_post("/queue/drop", [("ids", str(qid))], csrf=False)
        self.assertEqual(r.code, 403)
        r, _ = yield self.post("/api/queue/holdrules/add", {"recipient_domain": "x.example"},
                               headers={"Origin": "null"})
        self.assertEqual(r.code, 403)
        self.assertEqual((yield self.ids()), [qid])
        self.assertEqual(self.root.watcher.current.QueueHoldRules, [])

    @defer.inlineCallbacks
    def test_filters(self):
        [a] = yield self.queued(rcpts=["bob@gmail.example"], subject="one")
        [b] = yield self.queued(sender="other@example.org", rcpts=["carol@sub.gmail.example"], subject="two",
                                hold=False)
        [c] = yield self.queued(rcpts=["dave@yahoo.example"], subject="three")

        @defer.inlineCallbacks
        def listed(query):
            r, content = yield self.get("/api/queue/list" + query)
            self.assertEqual(r.code, 200, content)
            return [e["id"] for e in json.loads(content)["entries"]]

        self.assertEqual((yield listed("")), [a, b, c])
        self.assertEqual((yield listed("?sender=OTHER@")), [b])
        self.assertEqual((yield listed("?recipient=bob")), [a])
        self.assertEqual((yield listed("?domain=gmail.example")), [a, b])  # and subdomains
        self.assertEqual((yield listed("?domain=sub.gmail.example")), [b])
        self.assertEqual((yield listed("?held=yes")), [a, c])
        self.assertEqual((yield listed("?held=no")), [b])
        self.assertEqual((yield listed("?older=1h")), [])
        self.assertEqual((yield listed("?newer=1h&held=yes&domain=yahoo.example")), [c])
        # The page shows the same, filter values kept in the form.
        r, content = yield self.get("/queue?domain=gmail.example&held=yes")
        self.assertEqual(r.code, 200)
        self.assertIn(f'id="entry-{a}"'.encode(), content)
        self.assertNotIn(f'id="entry-{c}"'.encode(), content)
        self.assertIn(b'name="domain" value="gmail.example"', content)

    @defer.inlineCallbacks
    def test_actions_change_the_queue(self):
        [a] = yield self.queued(subject="a")
        [b] = yield self.queued(subject="b", hold=False)
        [c, d] = yield self.queued(subject="c", rcpts=["c@elsewhere.example", "d@elsewhere.example"])
        # unhold with reschedule far ahead so nothing is attempted meanwhile.
        r, content = yield self.post("/api/queue/reschedule", {"ids": [a], "when": "+3h"})
        self.assertEqual(r.code, 200, content)
        e = yield self.root.queue.get(a)
        self.assertLess(abs((e.next_attempt - datetime.now(timezone.utc)).total_seconds() - 3 * 3600), 60)
        r, content = yield self.post("/api/queue/unhold", {"ids": [a]})
        self.assertEqual(json.loads(content), {"count": 1})
        self.assertFalse((yield self.root.queue.get(a)).hold)
        r, content = yield self.post("/api/queue/hold", {"ids": [a, b]})
        self.assertEqual(json.loads(content), {"count": 2})
        self.assertTrue((yield self.root.queue.get(b)).hold)
        # Drop: gone, no DSN queued.
        r, content = yield self.post("/api/queue/drop", {"ids": [b]})
        self.assertEqual(json.loads(content), {"count": 1})
        self.assertEqual(sorted((yield self.ids())), [a, c, d])
        # Fail: gone, and a DSN (RFC 3464) to the sender queued.
        r, content = yield self.post("/api/queue/fail", {"ids": [c], "reason": "no <b>thanks</b>"})
        self.assertEqual(json.loads(content), {"count": 1}, content)
        entries = yield self.root.queue.list()
        self.assertNotIn(c, [e.id for e in entries])
        [dsn] = [e for e in entries if e.is_dsn]
        self.assertEqual(dsn.recipient, "mjl@example.org")
        with self.root.queue.open_message(dsn) as f:
            self.assertIn(b"no <b>thanks</b>", f.read())
        # Reschedule "now": the entry is due (the queue may even attempt it right away).
        r, content = yield self.post("/api/queue/reschedule", {"ids": [d], "when": "now"})
        self.assertEqual(r.code, 200)
        try:
            e = yield self.root.queue.get(d)
            self.assertLessEqual(e.next_attempt, datetime.now(timezone.utc))
        except KeyError:
            pass
        # Unknown ids are not counted; bad ones refused.
        r, content = yield self.post("/api/queue/hold", {"ids": [999999]})
        self.assertEqual(json.loads(content), {"count": 0})

    @defer.inlineCallbacks
    def test_filtered_scope_and_page_forms(self):
        [a] = yield self.queued(rcpts=["x@drop.example"], subject="a")
        [b] = yield self.queued(rcpts=["y@drop.example"], subject="b")
        [c] = yield self.queued(rcpts=["z@keep.example"], subject="c")
        # The whole queue needs all=yes.
        r, content = yield self.post("/api/queue/drop", {"scope": "filtered"})
        self.assertEqual(r.code, 400)
        # The page's form: several checked boxes, back to the filtered page.
        r, _ = yield self.form_post("/queue/reschedule", [("ids", str(a)), ("ids", str(b)), ("when", "2h"),
                                                          ("back", "queue"), ("domain", "drop.example")])
        self.assertEqual(r.code, 303)
        location = r.headers.getRawHeaders(b"location")[0].decode()
        self.assertEqual(location, "/admin/queue?domain=drop.example&done=reschedule&count=2")
        r, content = yield self.get(location[len("/admin"):])
        self.assertIn(b'id="done"', content)
        for i in (a, b):
            e = yield self.root.queue.get(i)
            self.assertGreater(e.next_attempt, datetime.now(timezone.utc) + timedelta(hours=1))
        # Every entry matching the filter.
        r, _ = yield self.form_post("/queue/drop", [("scope", "filtered"), ("domain", "drop.example"),
                                                    ("back", "queue")])
        self.assertEqual(r.code, 303)
        self.assertEqual((yield self.ids()), [c])

    @defer.inlineCallbacks
    def test_raw_view(self):
        body = b"Subject: raw\r\nContent-Type: text/html\r\n\r\n<html><script>alert(1)</script></html>\r\n"
        [qid] = yield self.queued(data=body)
        for path in (f"/queue/raw?id={qid}", f"/api/queue/raw?id={qid}"):
            r, content = yield self.get(path)
            self.assertEqual(r.code, 200)
            self.assertEqual(content, body)
            self.assertEqual(r.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
            self.assertEqual(r.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertTrue(r.headers.getRawHeaders(b"content-disposition")[0].startswith(b"attachment"))
        # Bounded: a large message is cut off and says so.
        big = b"Subject: big\r\n\r\n" + b"x" * (admin_queue.MAX_RAW + 5000)
        [qid] = yield self.queued(data=big)
        r, content = yield self.get(f"/api/queue/raw?id={qid}")
        self.assertLess(len(content), admin_queue.MAX_RAW + 100)
        self.assertTrue(content.startswith(b"Subject: big"))
        self.assertEqual(r.headers.getRawHeaders(b"x-moxtw-truncated"), [str(admin_queue.MAX_RAW).encode()])
        for bad, code in (("0", 400), ("-1", 400), ("abc", 400), ("1" * 40, 400), ("999999", 404), ("", 400)):
            r, _ = yield self.get(f"/api/queue/raw?id={bad}")
            self.assertEqual(r.code, code, bad)

    @defer.inlineCallbacks
    def test_hostile_input(self):
        [qid] = yield self.queued(subject="<img src=x onerror=alert(1)>", sender="mjl@example.org")
        r, content = yield self.get("/queue")
        self.assertIn(b"&lt;img src=x onerror=alert(1)&gt;", content)
        self.assertNotIn(b"<img src=x", content)
        # Huge, bad and marked-up filters.
        r, _ = yield self.get("/api/queue/list?sender=" + "a" * 5000)
        self.assertEqual(r.code, 400)
        r, _ = yield self.get("/queue?recipient=%ff%fe")
        self.assertEqual(r.code, 400)
        r, _ = yield self.get("/api/queue/list?held=maybe")
        self.assertEqual(r.code, 400)
        r, _ = yield self.get("/api/queue/list?older=1y")
        self.assertEqual(r.code, 400)
        r, _ = yield self.get("/api/queue/list?older=99999999999999999999d")
        self.assertEqual(r.code, 400)
        r, _ = yield self.get("/api/queue/list?domain=a..b")
        self.assertEqual(r.code, 400)
        r, content = yield self.get("/queue?sender=%3Cscript%3Ex%3C/script%3E")
        self.assertEqual(r.code, 200)
        self.assertIn(b"&lt;script&gt;x&lt;/script&gt;", content)
        self.assertNotIn(b"<script>x", content)
        # Bad ids and actions.
        for ids in ("x", [0], [-5], [2 ** 70], "[[1]]", "[1" + ",1" * 20000 + "]"):
            r, _ = yield self.post("/api/queue/drop", {"ids": ids})
            self.assertIn(r.code, (400, 413), ids)
        r, _ = yield self.form_post("/queue/drop", [("ids", "1"), ("ids", "x")])
        self.assertEqual(r.code, 400)
        r, _ = yield self.post("/api/queue/explode", {"ids": [qid]})
        self.assertEqual(r.code, 404)
        r, _ = yield self.post("/api/queue/reschedule", {"ids": [qid], "when": "tomorrow"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.admin, "POST", "/api/queue/drop", cookie=self.cookie, csrf=self.csrf,
                               raw=b'{"ids": "\xff"}', headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 400)
        # A redirect stays on this server whatever the form says.
        r, _ = yield self.form_post("/queue/hold", [("ids", str(qid)), ("back", "https://evil.example/")])
        self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/admin/"])
        self.assertEqual((yield self.ids()), [qid])


class HoldRuleTests(AdminQueueTestBase):
    def submit(self, rcpts, subject):
        msg = (f"From: <mjl@example.org>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@example.org>\r\n\r\nhello\r\n")

        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as s:
                s.ehlo("client.example")
                s.starttls(context=ssl.create_default_context(cafile=self.ca))
                s.login("mjl@example.org", PASSWORD)
                return s.sendmail("mjl@example.org", rcpts, msg)

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def test_rules_hold_submitted_messages(self):
        r, content = yield self.post("/api/queue/holdrules/add", {"recipient_domain": "Held.Example",
                                                                  "account": "mjl"})
        self.assertEqual(r.code, 200, content)
        self.assertEqual(json.loads(content), {"index": 0})
        r, content = yield self.get("/api/queue/holdrules")
        self.assertEqual(json.loads(content), [{"index": 0, "account": "mjl", "sender_domain": "",
                                                "recipient_domain": "held.example"}])
        with open(os.path.join(self.config_dir, "domains.toml")) as f:
            self.assertIn("[[QueueHoldRules]]", f.read())
        # A message submitted over SMTP to that domain starts on hold.
        yield self.submit(["x@held.example"], "first")
        [e] = yield self.root.queue.list(recipient="x@held.example")
        self.assertTrue(e.hold)
        r, content = yield self.get("/queue")
        self.assertIn(b"held.example", content)
        self.assertIn(b'id="holdrule-remove-0"', content)
        # The page's remove form checks the rule is the one shown.
        r, _ = yield self.form_post("/queue/holdrules/remove", [("index", "0"), ("rule", "other||"),
                                                                ("back", "queue")])
        self.assertEqual(r.code, 400)
        r, _ = yield self.form_post("/queue/holdrules/remove", [("index", "0"), ("rule", "mjl||held.example"),
                                                                ("back", "queue")])
        self.assertEqual(r.code, 303)
        self.assertEqual(self.root.watcher.current.QueueHoldRules, [])
        yield self.root.queue.drop([e.id])
        # Without the rule the next one is not held (and is attempted: gone or retried).
        yield self.submit(["x@held.example"], "second")
        entries = yield self.root.queue.list(recipient="x@held.example")
        self.assertFalse(any(x.hold for x in entries))

    @defer.inlineCallbacks
    def test_bad_rules(self):
        for body, why in (({}, "empty rule"), ({"account": "nobody"}, "no such account"),
                          ({"sender_domain": "a..b"}, "bad domain"), ({"recipient_domain": "x" * 300}, "long"),
                          ({"recipient_domain": "<b>.example"}, "markup")):
            r, content = yield self.post("/api/queue/holdrules/add", body)
            self.assertEqual(r.code, 400, (why, content))
        for index in ("0", "-1", "x", "9" * 10):
            r, _ = yield self.post("/api/queue/holdrules/remove", {"index": index})
            self.assertEqual(r.code, 400, index)
        self.assertEqual(self.root.watcher.current.QueueHoldRules, [])
        # An empty rule (everything) when meant.
        r, _ = yield self.post("/api/queue/holdrules/add", {"all": "yes"})
        self.assertEqual(r.code, 200)
        self.assertEqual(len(self.root.watcher.current.QueueHoldRules), 1)


class DNSBLTests(AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_status_from_loopback_dns(self):
        r, content = yield self.get("/api/dnsbl")
        self.assertEqual(r.code, 200, content)
        d = json.loads(content)
        self.assertEqual(d["ips"], ["127.0.0.1"])
        by_zone = {x["zone"]: x for x in d["results"]}
        self.assertEqual(by_zone["bl.example"]["status"], "fail")
        self.assertEqual(by_zone["bl.example"]["name"], "1.0.0.127.bl.example")
        self.assertIn("<script>listed</script>", by_zone["bl.example"]["reason"])
        self.assertEqual(by_zone["clean.example"]["status"], "pass")
        self.assertEqual(by_zone["broken.example"]["status"], "temperror")
        r, content = yield self.get("/dnsbl")
        self.assertEqual(r.code, 200)
        self.assertIn(b"LISTED", content)
        self.assertIn(b"&lt;script&gt;listed&lt;/script&gt;", content)
        self.assertNotIn(b"<script>listed", content)
