"""MTA-STS policies served (RFC 8461 3.3): a server with MTASTSHTTPS, fetched over HTTPS
with SNI mta-sts.<domain> and the certificate verified, as a sender would; the policy
follows domains.toml reloads; nothing else is served on that host; dnsrecords prints the
_mta-sts record."""

import http.client
import os
import socket
import ssl

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw import config as mconfig
from moxtw.admin import records
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.tls import selfsigned

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "a"
Mailbox = "Inbox"
[Listeners.public]
IPs = ["127.0.0.1"]
[Listeners.public.TLS]
KeyCerts = [{{CertFile = "tls/mail.crt", KeyFile = "tls/mail.key"}},
            {{CertFile = "tls/sts.crt", KeyFile = "tls/sts.key"}}]
[Listeners.public.SMTP]
Enabled = true
Port = {smtp}
[Listeners.public.MTASTSHTTPS]
Enabled = true
Port = {https}
"""

DYNAMIC = """
[Domains."example.org"]
[Domains."example.org".MTASTS]
PolicyID = "20261207T000000"
Mode = "{mode}"
MaxAge = "168h"
MX = ["mail.example.org", "*.backup.example.org"]
[Domains."example.net"]
[Accounts.a]
Domain = "example.org"
[Accounts.a.Destinations."a@example.org"]
"""


class MTASTSServeTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        off = free_offset()
        self.port = 443 + off
        tls = os.path.join(self.dir, "tls")
        _, _, self.ca = selfsigned.ensure_localserve_cert(tls, hostnames=["mail.example.org"], ips=[],
                                                          leaf_name="mail")
        selfsigned.ensure_localserve_cert(tls, hostnames=["mta-sts.example.org", "mta-sts.example.net"], ips=[],
                                          leaf_name="sts")
        cfg, _ = servertree.write_config(self.dir, STATIC.format(smtp=25 + off, https=self.port),
                                         DYNAMIC.format(mode="enforce"))
        self.cfg = cfg
        self.root = yield servertree.start(self, cfg)

    def get(self, host, path="/.well-known/mta-sts.txt", method="GET"):
        """A request as senders make it (RFC 8461 3.3): SNI and a verified certificate
        for the policy host."""

        def go():
            ctx = ssl.create_default_context(cafile=self.ca)
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                          "Content-Length: 0\r\n\r\n".encode())
                r = http.client.HTTPResponse(s)
                r.begin()
                return r.status, r.getheader("content-type"), r.read()

        return threads.deferToThread(go)

    @defer.inlineCallbacks
    def test_policy(self):
        status, ctype, body = yield self.get("mta-sts.example.org")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain"))
        self.assertEqual(body, b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\n"
                               b"mx: *.backup.example.org\r\nmax_age: 604800\r\n")
        # Nothing else on the policy host; no policy for a domain without MTASTS.
        status, _, _ = yield self.get("mta-sts.example.org", "/")
        self.assertEqual(status, 404)
        status, _, _ = yield self.get("mta-sts.example.org", "/.well-known/mta-sts.txt/../x")
        self.assertEqual(status, 404)
        status, _, _ = yield self.get("mta-sts.example.org", "/.well-known/mta-sts.txt?cachebuster=1")
        self.assertEqual(status, 200)  # the query is not part of the path
        status, _, _ = yield self.get("mta-sts.example.org", method="POST")
        self.assertEqual(status, 405)
        status, _, body = yield self.get("mta-sts.example.net")
        self.assertEqual(status, 503)  # not a policy host: the (not built) web interfaces
        # A reload changes the policy at once.
        with open(self.cfg.dynamic_path, "w") as f:
            f.write(DYNAMIC.format(mode="testing"))
        self.assertTrue(self.root.watcher.check())
        _, _, body = yield self.get("mta-sts.example.org")
        self.assertIn(b"mode: testing\r\n", body)

    def test_dnsrecords(self):
        cfg = mconfig.load(self.dir)
        recs, pending = records.domain_records(cfg.static, cfg.dynamic, cfg.path, "example.org", ips=["192.0.2.1"])
        got = {(r.name, r.rdtype): r.value for r in recs}
        self.assertEqual(got[("_mta-sts.example.org", "TXT")], "v=STSv1; id=20261207T000000")
        self.assertEqual(got[("mta-sts.example.org", "CNAME")], "mail.example.org")
        self.assertFalse(any("MTA-STS" in p.why for p in pending))
        recs, pending = records.domain_records(cfg.static, cfg.dynamic, cfg.path, "example.net", ips=["192.0.2.1"])
        self.assertTrue(any("MTASTS" in p.why for p in pending))


class HostHeaderTests(unittest.SynchronousTestCase):
    """Hostile Host headers reach the policy host only for exact configured names."""

    def test_request_host(self):
        from twisted.web.test.requesthelper import DummyRequest

        from moxtw.mtasts.serve import request_host

        # Raw UTF-8 is not a Host header (RFC 9110 7.2: A-labels); it names no policy host.
        for raw, want in ((b"MTA-STS.Example.ORG:443", "mta-sts.example.org"), (b"[::1]:443", None),
                          (b"", None), (b"a" * 5000, None), (b"mta-sts.ex\xc3\xa4mple.org", None),
                          (b"mta-sts.xn--exmple-cua.org", "mta-sts.xn--exmple-cua.org"),
                          (b"mta-sts..example.org", None), (b"\xff\xfe", None)):
            r = DummyRequest([b""])
            if raw:
                r.requestHeaders.setRawHeaders(b"host", [raw])
            self.assertEqual(request_host(r), want, raw)
