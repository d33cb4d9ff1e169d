"""``moxtw quickstart``, ``config dnsrecords`` and ``config dnscheck`` end to end: the
quickstart run as a command in a temporary directory writes a config that passes
``config test``; a loopback DNS server loaded with exactly the records it printed makes
``config dnscheck`` pass, and fails it, naming the record, when one is removed; the
server started from what it wrote takes the printed password over IMAPS and submission
and signs with the generated DKIM keys."""

import imaplib
import os
import re
import smtplib
import ssl
import sys
from datetime import datetime, timezone

import tomlkit
from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw import config as mconfig
from moxtw.admin import quickstart, records
from moxtw.dkim.verify import verify_async
from moxtw.dns import MX, SRV, TLSA
from moxtw.dns.resolver import Resolver
from moxtw.test import servertree
from moxtw.test.clihelper import run_moxtw
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_e2e_outbound import wait_for
from moxtw.test.test_localserve import free_offset

IP = "127.0.0.9"
# The selectors quickstart makes: <year>a (ed25519) and <year>b (RSA).
YEAR = datetime.now(timezone.utc).year
A, B = f"{YEAR}a", f"{YEAR}b"


def parse_zone(text):
    """{(name, type): [values]} of zone-file lines as records.zone_text writes them."""
    table = {}
    for line in text.splitlines():
        if not line or line.startswith(";") or " IN " not in line:
            continue
        owner, _ttl, _in, rdtype, rdata = line.split(None, 4)
        name = owner.rstrip(".")
        if rdtype == "TXT":
            value = "".join(s.replace('\\"', '"') for s in re.findall(r'"((?:[^"\\]|\\.)*)"', rdata))
        elif rdtype == "MX":
            pref, host = rdata.split()
            value = MX(int(pref), host.rstrip("."))
        elif rdtype == "SRV":
            p, w, port, target = rdata.split()
            value = SRV(int(p), int(w), int(port), target.rstrip("."))
        elif rdtype == "TLSA":
            u, s, m, data = rdata.split()
            value = TLSA(int(u), int(s), int(m), bytes.fromhex(data))
        elif rdtype in ("CNAME", "PTR"):
            value = rdata.rstrip(".")
        else:
            value = rdata
        table.setdefault((name, rdtype), []).append(value)
    return table


class QuickstartTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.config_dir = os.path.join(self.base, "config")
        out, err, code = yield run_moxtw(
            "quickstart", "--config", self.config_dir, "--hostname", "mail.example.com",
            "--skipdial", "--ip", IP, "you@example.com")
        self.assertEqual(code, 0, err.decode())
        self.out = out.decode()

    def password(self):
        m = re.search(r"Account you with address you@example.com, password \(shown only now\):\n\n\s+(\S+)",
                      self.out)
        self.assertIsNotNone(m, self.out)
        return m.group(1)

    @defer.inlineCallbacks
    def test_files_and_refuses_second_run(self):
        names = set(os.listdir(self.config_dir))
        self.assertTrue({"moxtw.toml", "domains.toml", "adminpasswd", "moxtw.service", "dkim"} <= names)
        self.assertEqual(len(os.listdir(os.path.join(self.config_dir, "dkim"))), 2)
        self.assertEqual(os.stat(os.path.join(self.config_dir, "adminpasswd")).st_mode & 0o777, 0o600)
        with open(os.path.join(self.config_dir, "adminpasswd")) as f:
            self.assertNotIn(self.password(), f.read())  # secrets only, never the password
        unit = open(os.path.join(self.config_dir, "moxtw.service")).read()
        self.assertIn(f"moxtw serve --config {self.config_dir}", unit)
        self.assertIn("NoNewPrivileges=true", unit)
        self.assertIn("ProtectSystem=strict", unit)
        self.assertIn("CAP_NET_BIND_SERVICE", unit)
        cfg = mconfig.load(self.config_dir)
        self.assertEqual(list(cfg.dynamic.Accounts), ["you"])
        dkim = cfg.dynamic.Domains["example.com"].DKIM
        self.assertEqual(len(dkim.Selectors), 2)
        self.assertEqual(sorted(dkim.Sign), sorted(dkim.Selectors))
        self.assertIn("example.com. 300 IN MX 10 mail.example.com.", self.out)
        self.assertIn("9.0.0.127.in-addr.arpa. 300 IN PTR mail.example.com.", self.out)
        before = open(os.path.join(self.config_dir, "domains.toml")).read()
        out, err, code = yield run_moxtw("quickstart", "--config", self.config_dir, "--skipdial",
                                         "--hostname", "mail.example.com", "--ip", IP, "other@example.org")
        self.assertEqual(code, 1)
        self.assertIn(b"does not overwrite", err)
        self.assertEqual(open(os.path.join(self.config_dir, "domains.toml")).read(), before)

    @defer.inlineCallbacks
    def test_config_test_passes_without_warnings(self):
        out, err, code = yield run_moxtw("config", "test", "--config", self.config_dir)
        self.assertEqual((code, out, err), (0, b"config OK\n", b""))

    @defer.inlineCallbacks
    def test_dnscheck_against_printed_records(self):
        table = parse_zone(self.out)
        self.assertIn((f"{A}._domainkey.example.com", "TXT"), table)
        self.assertIn(("_25._tcp.mail.example.com", "TLSA"), table)
        dns = loopback_dns(self, table)
        self._point_dns(dns.address)
        out, err, code = yield run_moxtw("config", "dnscheck", "--config", self.config_dir, "example.com")
        text = out.decode()
        self.assertEqual(code, 0, text + err.decode())
        self.assertNotIn("\nerror", "\n" + text)
        for check in ("IPs", "PTR", "MX", "SPF", "SPF host", f"DKIM {A}", f"DKIM {B}", "DMARC", "TLSRPT",
                      "SRV _submissions._tcp", "DANE"):
            self.assertRegex(text, rf"(?m)^(ok|warning) +{re.escape(check)} ")
        # The same output as dnsrecords prints for the configured domain.
        out2, _, code2 = yield run_moxtw("config", "dnsrecords", "--config", self.config_dir, "example.com")
        self.assertEqual(code2, 0)
        self.assertEqual(parse_zone(out2.decode()), table)

        # One record missing: an error naming it, exit status 1.
        del table[(f"{B}._domainkey.example.com", "TXT")]
        dns.set(table)
        out, err, code = yield run_moxtw("config", "dnscheck", "--config", self.config_dir, "example.com")
        self.assertEqual(code, 1)
        self.assertRegex(out.decode(), rf"(?m)^error +DKIM {B} +no DKIM record at {B}._domainkey.example.com")
        # A wrong key, an SPF record without our IP, a missing MX.
        table[(f"{B}._domainkey.example.com", "TXT")] = table[(f"{A}._domainkey.example.com", "TXT")]
        table[("example.com", "TXT")] = ["v=spf1 ip4:192.0.2.1 -all"]
        del table[("example.com", "MX")]
        dns.set(table)
        out, err, code = yield run_moxtw("config", "dnscheck", "--config", self.config_dir, "example.com")
        text = out.decode()
        self.assertEqual(code, 1)
        self.assertRegex(text, rf"(?m)^error +DKIM {B} +the key at {B}._domainkey.example.com is not")
        self.assertRegex(text, rf"(?m)^error +SPF +SPF at example.com .* does not allow {IP}")
        self.assertRegex(text, r"(?m)^error +MX +no MX record for example.com names mail.example.com")

    def _point_dns(self, address, ports=None):
        path = os.path.join(self.config_dir, "moxtw.toml")
        with open(path) as f:
            doc = tomlkit.parse(f.read())
        doc["DNS"] = {"Servers": [address]}
        if ports:
            public = doc["Listeners"]["public"]
            for name, port in ports.items():
                public[name]["Port"] = port
            doc["Listeners"]["internal"]["MetricsHTTP"]["Port"] = ports["SMTP"] + 7985
        with open(path, "w") as f:
            f.write(tomlkit.dumps(doc))

    @defer.inlineCallbacks
    def test_server_starts_and_serves_the_account(self):
        table = parse_zone(self.out)
        dns = loopback_dns(self, table)
        off = free_offset()
        ports = {"SMTP": 25 + off, "Submission": 587 + off, "Submissions": 465 + off, "IMAPS": 993 + off}
        self._point_dns(dns.address, ports)
        cfg = mconfig.load(self.config_dir)
        self.assertEqual(mconfig.config_test(self.config_dir), [])
        root = yield servertree.start(self, cfg)
        password = self.password()
        ca = os.path.join(self.base, "data", "tls", "ca.crt")
        ctx = ssl.create_default_context(cafile=ca)
        # The certificate names the host, the test connects to its IP: the chain is
        # verified here, the name below.
        ctx.check_hostname = False
        msg = (b"From: you@example.com\r\nTo: you@example.com\r\nSubject: first\r\n"
               b"Message-ID: <qs1@example.com>\r\n\r\nHello from the quickstart.\r\n")

        def use():
            with smtplib.SMTP_SSL(IP, ports["Submissions"], context=ctx, timeout=30) as s:
                san = s.sock.getpeercert()["subjectAltName"]
                assert ("DNS", "mail.example.com") in san, san
                s.login("you@example.com", password)
                s.sendmail("you@example.com", ["you@example.com"], msg)
            im = imaplib.IMAP4_SSL(IP, ports["IMAPS"], ssl_context=ctx, timeout=30)
            try:
                im.login("you@example.com", password)
                typ, _ = im.select("INBOX")
                return typ
            finally:
                im.logout()

        typ = yield threads.deferToThread(use)
        self.assertEqual(typ, "OK")
        acc = yield root.store.open_account("you")

        @defer.inlineCallbacks
        def inbox():
            mb = yield acc.mailbox("Inbox")
            return (yield acc.messages(mb.id)) if mb is not None else []

        [m] = yield wait_for(inbox)
        with acc.open_message(m.id) as f:
            data = f.read()
        head = data.split(b"\r\n\r\n", 1)[0]
        self.assertIn(f"s={A}".encode(), head)
        self.assertIn(f"s={B}".encode(), head)
        # Signed with the keys whose records were printed: both verify against the
        # loopback DNS server loaded with them.
        resolver = Resolver(servers=[dns.address])
        self.addCleanup(resolver.stop)
        results = yield verify_async(resolver, data[data.index(b"DKIM-Signature:"):])
        self.assertEqual(sorted((r.selector, r.result) for r in results), [(A, "pass"), (B, "pass")])

        # moxtw sendmail, as cron would run it: -t with a Bcc, over STARTTLS on 587.
        conf = os.path.join(self.base, "submit.toml")
        with open(conf, "w") as f:
            f.write(f'Host = "{IP}"\nPort = {ports["Submission"]}\nTLS = "starttls"\nCAFile = "{ca}"\n'
                    f'ServerName = "mail.example.com"\nUsername = "you@example.com"\nPassword = "{password}"\n')
        mail = "To: you@example.com\nBcc: you+hidden@example.com\nSubject: from cron\n\nbackup done\n.\nmore\n"
        out, err, code = yield run_moxtw("sendmail", "-t", "-oi", stdin=mail, env={"MOXTW_SUBMIT_CONFIG": conf})
        self.assertEqual(code, 0, err)

        @defer.inlineCallbacks
        def cron_mail():
            got = [m for m in (yield inbox()) if m.subject == "from cron"]
            return got if len(got) == 2 else None

        msgs = yield wait_for(cron_mail)
        for m in msgs:
            with acc.open_message(m.id) as f:
                data = f.read()
            self.assertNotIn(b"\r\nBcc:", data)  # the header; h= of DKIM names it
            self.assertIn(b"From: you@example.com\r\n", data)
            self.assertIn(b"\r\n.\r\nmore\r\n", data)  # -oi: the dot line is content
            results = yield verify_async(resolver, data[data.index(b"DKIM-Signature:"):])
            self.assertEqual(sorted(r.result for r in results), ["pass", "pass"])

        # The server unreachable: a clear error and EX_UNAVAILABLE.
        bad = os.path.join(self.base, "bad.toml")
        with open(bad, "w") as f:
            f.write(f'Host = "127.0.0.1"\nPort = {free_offset() + 1}\nTLS = "none"\nUsername = "u"\nPassword = "p"\n')
        out, err, code = yield run_moxtw("sendmail", "you@example.com", stdin="Subject: x\n\nx\n",
                                         env={"MOXTW_SUBMIT_CONFIG": bad})
        self.assertEqual(code, 69, err)
        self.assertIn(b"is the server running?", err)


class RecordsTests(unittest.SynchronousTestCase):
    def test_unspecified_ips_give_no_address_records(self):
        d = self.mktemp()
        cfg, _ = servertree.write_config(d, """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "a"
Mailbox = "Inbox"
[Listeners.public]
IPs = ["0.0.0.0"]
[Listeners.public.SMTP]
Enabled = true
""", """
[Domains."example.org"]
[Accounts.a]
Domain = "example.org"
[Accounts.a.Destinations."a@example.org"]
""")
        host = records.host_records(cfg.static, cfg.path)
        self.assertEqual([r.rdtype for r in host], ["TXT"])
        recs, pending = records.domain_records(cfg.static, cfg.dynamic, cfg.path, "example.org")
        spf = [r.value for r in recs if r.rdtype == "TXT" and r.name == "example.org"]
        self.assertEqual(spf, ["v=spf1 mx ~all"])
        # No DMARC reporting configured: no rua.
        self.assertIn("v=DMARC1;p=reject", [r.value for r in recs])
        srv = {r.name: r.value for r in recs if r.rdtype == "SRV"}
        self.assertEqual(srv["_submissions._tcp.example.org"], SRV(0, 0, 0, ""))
        self.assertTrue(any("MTASTS" in p.why for p in pending))

    def test_bad_address_refused(self):
        for bad in ("nobody", "a b@example.com", "@example.com", "me+x@example.com", "a=b@example.com",
                    '"john doe"@example.com', "../x@example.com", '"me."@example.com'):
            d = self.mktemp()
            with self.assertRaises(quickstart.QuickstartError):
                quickstart.run(quickstart.Options(address=bad, config_dir=d), out=open(os.devnull, "w"))
            self.assertFalse(os.path.exists(d), bad)

    def test_failure_leaves_nothing(self):
        base = os.path.abspath(self.mktemp())
        d = os.path.join(base, "config")

        def fail(config_dir, account, password):
            raise OSError("disk full")

        with self.assertRaises(OSError):
            quickstart.run(quickstart.Options(address="you@example.com", config_dir=d, hostname="mail.example.com",
                                              skipdial=True, ips=["127.0.0.9"]), out=open(os.devnull, "w"),
                           set_password=fail)
        self.assertFalse(os.path.exists(d))
        self.assertFalse(os.path.exists(os.path.join(base, "data")))


class AdminPasswordTests(unittest.SynchronousTestCase):
    def test_setadminpassword(self):
        from moxtw.config import write_localserve_config
        from moxtw.sasl import credentials
        import json
        import subprocess

        config_dir = write_localserve_config(os.path.abspath(self.mktemp()))
        proc = subprocess.run([sys.executable, "-m", "moxtw", "setadminpassword", "--config", config_dir],
                              input="admin pass\n", capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        path = os.path.join(config_dir, quickstart.ADMIN_PASSWORD_FILE)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            creds = credentials.Credentials.from_json(json.load(f))
        self.assertTrue(credentials.verify_password(creds, "admin pass"))
        self.assertFalse(credentials.verify_password(creds, "admin pas"))
        proc = subprocess.run([sys.executable, "-m", "moxtw", "setadminpassword", "--config", config_dir],
                              input="\n", capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("password refused", proc.stderr)
