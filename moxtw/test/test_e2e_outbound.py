"""Outgoing delivery end to end: two moxtw instances with their own config and data
directories exchange mail over loopback, finding each other through a real DNS server
(twisted.names) on loopback; and interop with a throwaway Postfix.

Direct delivery goes to the other instance's SMTP port through the test-only
TestDirectDeliveryPort setting (allowed with MOXTW_TESTING=1, set here).
"""

import os
import pwd
import shutil
import smtplib
import ssl
import subprocess
import time

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from moxtw.dkim.keys import generate_ed25519, generate_rsa, load_private_key
from moxtw.dns.resolver import Resolver
from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.postfixconf import master_cf
from moxtw.test.test_localserve import free_offset

PASSWORD = "test password"

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.{domain}"
TestDirectDeliveryPort = {peer_port}
[DNS]
Servers = ["{dns}"]
[Postmaster]
Account = "admin"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.Submission]
Enabled = true
Port = {submission}
NoRequireSTARTTLS = true
"""

DYNAMIC = """
[Domains."{domain}"]
[Domains."{domain}".DKIM]
Sign = ["sel1", "sel2"]
[Domains."{domain}".DKIM.Selectors.sel1]
PrivateKeyFile = "dkim/sel1.pem"
[Domains."{domain}".DKIM.Selectors.sel1.Canonicalization]
HeaderRelaxed = true
BodyRelaxed = true
[Domains."{domain}".DKIM.Selectors.sel2]
PrivateKeyFile = "dkim/sel2.pem"
[Domains."{domain}".DMARC]
Localpart = "dmarc-reports"
Account = "{user}"
Mailbox = "DMARC"
[Domains."{domain}".TLSRPT]
Localpart = "tls-reports"
Account = "{user}"
Mailbox = "TLSRPT"

[Accounts.admin]
Domain = "{domain}"
[Accounts.admin.Destinations."postmaster@{domain}"]

[Accounts.{user}]
Domain = "{domain}"
[Accounts.{user}.Destinations."{user}@{domain}"]
"""


def message(frm, to, subject):
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
            f"Hello from {frm}.\r\n.dot-stuffed line\r\n").encode()


class Instance:
    """One moxtw server tree for a domain, with DKIM keys (RSA and ed25519)."""

    def __init__(self, testcase, domain, user):
        self.testcase = testcase
        self.domain = domain
        self.user = user
        self.dir = os.path.abspath(testcase.mktemp())
        off = free_offset()
        self.ports = {"smtp": 25 + off, "submission": 587 + off}
        self.keys = {}
        os.makedirs(os.path.join(self.dir, "dkim"))
        for sel, pem in (("sel1", generate_rsa(2048)), ("sel2", generate_ed25519())):
            path = os.path.join(self.dir, "dkim", f"{sel}.pem")
            with open(path, "wb") as f:
                f.write(pem)
            self.keys[sel] = load_private_key(path)

    def dns_records(self):
        d = self.domain
        records = {
            (d, "MX"): [(10, f"mail.{d}")],
            (f"mail.{d}", "A"): ["127.0.0.1"],
            (d, "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        }
        for sel, key in self.keys.items():
            records[(f"{sel}._domainkey.{d}", "TXT")] = [key.dns_record]
        return records

    @defer.inlineCallbacks
    def start(self, dns_address, peer_port):
        cfg, self.ca = servertree.write_config(
            self.dir,
            STATIC.format(domain=self.domain, dns=dns_address, peer_port=peer_port, **self.ports),
            DYNAMIC.format(domain=self.domain, user=self.user),
        )
        self.root = yield servertree.start(self.testcase, cfg)
        acc = yield self.root.store.open_account(self.user)
        yield acc.set_password(PASSWORD)

    def submit(self, frm, rcpts, msg):
        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as s:
                s.ehlo("client.example")
                s.starttls(context=ssl.create_default_context(cafile=self.ca))
                s.login(frm, PASSWORD)
                return s.sendmail(frm, rcpts, msg)

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def settled(self):
        yield self.root.queue_service.kick()
        yield self.root.queue_service.idle()

    @defer.inlineCallbacks
    def inbox(self, account=None, mailbox="Inbox"):
        acc = yield self.root.store.open_account(account or self.user)
        mb = yield acc.mailbox(mailbox)
        if mb is None:
            return []
        msgs = yield acc.messages(mb.id)
        out = []
        for m in msgs:
            with acc.open_message(m.id) as f:
                out.append((m, f.read()))
        return out


def allow_test_settings(testcase):
    """Set MOXTW_TESTING=1 (TestDirectDeliveryPort is refused without it) for the test."""
    old = os.environ.get("MOXTW_TESTING")
    os.environ["MOXTW_TESTING"] = "1"

    def restore():
        if old is None:
            os.environ.pop("MOXTW_TESTING", None)
        else:
            os.environ["MOXTW_TESTING"] = old

    testcase.addCleanup(restore)


@defer.inlineCallbacks
def wait_for(check, timeout=30.0, interval=0.05):
    """Poll ``check()`` (may return a Deferred) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        v = yield defer.maybeDeferred(check)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        d = defer.Deferred()
        reactor.callLater(interval, d.callback, None)
        yield d


class TwoInstancesTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        allow_test_settings(self)
        self.a = Instance(self, "a.example", "alice")
        self.b = Instance(self, "b.example", "bob")
        records = {**self.a.dns_records(), **self.b.dns_records()}
        self.dns = yield loopback_dns(self, records)
        yield self.a.start(self.dns.address, self.b.ports["smtp"])
        yield self.b.start(self.dns.address, self.a.ports["smtp"])
        self.resolver = Resolver(servers=[self.dns.address], reactor=reactor)
        self.addCleanup(self.resolver.stop)

    @defer.inlineCallbacks
    def test_submitted_on_a_arrives_at_b_dkim_signed(self):
        refused = yield self.a.submit("alice@a.example", ["bob@b.example"],
                                      message("alice@a.example", "bob@b.example", "cross"))
        self.assertEqual(refused, {})
        yield self.a.settled()
        self.assertEqual((yield self.a.root.queue.list()), [])
        got = yield wait_for(self.b.inbox)
        [(m, data)] = got
        self.assertEqual(m.subject, "cross")
        self.assertIn(b"\r\n..dot-stuffed line\r\n" if False else b"\r\n.dot-stuffed line\r\n", data)
        # Both selectors signed; both signatures verify with keys from the DNS server.
        self.assertEqual(data.count(b"DKIM-Signature:"), 2)
        from moxtw.dkim.verify import verify_async

        results = yield verify_async(self.resolver, data)
        self.assertEqual(sorted((r.selector, r.result) for r in results),
                         [("sel1", "pass"), ("sel2", "pass")])
        self.assertEqual({r.algorithm for r in results}, {"rsa-sha256", "ed25519-sha256"})
        # Verified independently with dkimpy, its DNS answered from the same server.
        import dkim

        def dnsfunc(name, timeout=5):
            ans = self.resolver.lookup_sync(name.decode().rstrip("."), "TXT")
            return ans.records[0].encode()

        ok = yield threads.deferToThread(
            lambda: [dkim.verify(data[data.index(b"DKIM-Signature:"):], dnsfunc=dnsfunc)])
        self.assertEqual(ok, [True])

    @defer.inlineCallbacks
    def test_unknown_recipient_bounces_to_sender(self):
        yield self.a.submit("alice@a.example", ["nobody@b.example"],
                            message("alice@a.example", "nobody@b.example", "lost"))
        yield self.a.settled()
        # The first 5xx to RCPT is retried once (as mox); the second is final.
        [entry] = yield self.a.root.queue.list()
        self.assertEqual(entry.attempts, 1)
        self.assertIn("550", entry.last_error)
        yield self.a.root.queue.schedule([entry.id], self.a.root.queue_service.now())
        yield self.a.settled()
        yield self.a.settled()  # the DSN, queued by the failure, is delivered locally
        self.assertEqual((yield self.a.root.queue.list()), [])
        [(m, data)] = yield self.a.inbox()
        self.assertIn(b"multipart/report", data)
        self.assertIn(b"Action: failed", data)
        self.assertIn(b"nobody@b.example", data)

    @defer.inlineCallbacks
    def test_reply_from_b_to_a_with_several_recipients(self):
        acc = yield self.a.root.store.open_account("admin")
        yield acc.set_password(PASSWORD)
        yield self.b.submit("bob@b.example", ["alice@a.example", "postmaster@a.example"],
                            message("bob@b.example", "alice@a.example", "reply"))
        yield self.b.settled()
        self.assertEqual((yield self.b.root.queue.list()), [])
        [(m, _)] = yield wait_for(self.a.inbox)
        self.assertEqual(m.subject, "reply")
        [(m2, _)] = yield wait_for(lambda: self.a.inbox("admin"))
        self.assertEqual(m2.subject, "reply")

    @defer.inlineCallbacks
    def test_null_mx_fails_at_once(self):
        self.dns.add("nomail.example", "MX", [(0, ".")])
        yield self.a.submit("alice@a.example", ["x@nomail.example"],
                            message("alice@a.example", "x@nomail.example", "nowhere"))
        yield self.a.settled()
        yield self.a.settled()
        self.assertEqual((yield self.a.root.queue.list()), [])
        [(_, data)] = yield self.a.inbox()
        self.assertIn(b"null MX", data)


POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def _postfix_available():
    if not os.access(POSTFIX, os.X_OK):
        return "postfix not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "running a throwaway Postfix needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


class PostfixTests(unittest.TestCase):
    """moxtw A -> Postfix (relay for b.example) -> moxtw B, and back the same way."""

    timeout = 180

    def setUp(self):
        why = _postfix_available()
        if why:
            raise unittest.SkipTest(why)
        allow_test_settings(self)
        return self._setup()

    @defer.inlineCallbacks
    def _setup(self):
        self.a = Instance(self, "a.example", "alice")
        self.b = Instance(self, "b.example", "bob")
        self.dns = yield loopback_dns(self, {**self.a.dns_records(), **self.b.dns_records()})
        self.postfix_port = 25 + free_offset()
        yield threads.deferToThread(self._start_postfix)
        # Both moxtw instances send everything to Postfix; Postfix relays b.example to B
        # and a.example to A.
        yield self.a.start(self.dns.address, self.postfix_port)
        yield self.b.start(self.dns.address, self.postfix_port)

    def _start_postfix(self):
        # Outside the trial directory, whose 0700 parents the postfix user cannot enter.
        import tempfile

        top = tempfile.mkdtemp(prefix="moxtw-postfix-")
        os.chmod(top, 0o755)
        self.addCleanup(shutil.rmtree, top, True)
        etc, spool, lib = (os.path.join(top, x) for x in ("etc", "spool", "lib"))
        for d in (top, etc, spool, lib):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(lib, pf.pw_uid, pf.pw_gid)
        self.maillog = os.path.join(top, "maillog")
        with open(os.path.join(etc, "transport"), "w") as f:
            f.write(f"b.example smtp:[127.0.0.1]:{self.b.ports['smtp']}\n"
                    f"a.example smtp:[127.0.0.1]:{self.a.ports['smtp']}\n")
        main_cf = f"""\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {lib}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test
mydomain = test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = a.example, b.example
transport_maps = inline:{{ b.example=smtp:[127.0.0.1]:{self.b.ports['smtp']}, a.example=smtp:[127.0.0.1]:{self.a.ports['smtp']} }}
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {top}
"""
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(main_cf)
        src = next(p for p in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist")
                   if os.path.exists(p))
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write(master_cf(src, self.postfix_port))
        self.etc = etc
        for action in ("check", "start"):
            r = subprocess.run([POSTFIX, "-c", etc, action], capture_output=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise AssertionError(f"postfix {action}: {r.stdout!r} {r.stderr!r}\n{self.maillog_text()}")
        self.addCleanup(lambda: subprocess.run([POSTFIX, "-c", etc, "stop"], capture_output=True,
                                               timeout=60, stdin=subprocess.DEVNULL))
        import socket

        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.postfix_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("postfix did not start listening")
                time.sleep(0.1)

    def maillog_text(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @defer.inlineCallbacks
    def test_through_postfix_both_ways(self):
        yield self.a.submit("alice@a.example", ["bob@b.example"],
                            message("alice@a.example", "bob@b.example", "via postfix"))
        yield self.a.settled()
        self.assertEqual((yield self.a.root.queue.list()), [])
        try:
            [(m, data)] = yield wait_for(self.b.inbox, timeout=60)
        except AssertionError:
            self.fail("not relayed to B; postfix log:\n" + self.maillog_text())
        self.assertEqual(m.subject, "via postfix")
        self.assertIn(b"relay.test", data)  # Postfix's Received line
        yield self.b.submit("bob@b.example", ["alice@a.example"],
                            message("bob@b.example", "alice@a.example", "back"))
        yield self.b.settled()
        [(m, _)] = yield wait_for(self.a.inbox, timeout=60)
        self.assertEqual(m.subject, "back")

