"""Hostile-input and hardening regressions that belong to no single protocol (issue 10
item 7): stale temporary files at startup, mailbox names with "." and ".." components,
NUL bytes in pedantic mode, and the one TLS configuration of every listener."""

import datetime
import os
import socket
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw import staletmp
from moxtw.queue import db as qdb
from moxtw.smtp import codes as c
from moxtw.store import MailboxNameError, Store
from moxtw.store.model import check_new_mailbox_name, normalize_mailbox_name
from moxtw.test import servertree
from moxtw.test.imaphelper import IMAPSessionTest, message
from moxtw.test.test_localserve import free_offset
from moxtw.test.smtphelper import SMTPTestBase

# -- a) stale temporary files


def _touch(path, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"partial message")
    os.utime(path, (mtime, mtime))
    return path


def _sync(fn, *args):
    return defer.maybeDeferred(fn, *args)


class StaleTmpTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.start = time.time()
        self.tmps = [
            os.path.join(self.data, "tmp"),
            qdb.tmp_dir(self.data),
            os.path.join(self.data, "accounts", "mjl", "maildir", "tmp"),
            os.path.join(self.data, "accounts", "other", "maildir", "tmp"),
        ]

    def run_service(self):
        svc = staletmp.StaleTmpService(self.data, started=self.start, in_thread=_sync)
        svc.startService()
        self.addCleanup(svc.stopService)
        return self.successResultOf(svc.done)

    def test_old_files_removed_fresh_kept(self):
        old = [_touch(os.path.join(d, "1.old"), self.start - 3600) for d in self.tmps]
        fresh = [_touch(os.path.join(d, "2.fresh"), self.start + 1) for d in self.tmps]
        self.assertEqual(self.run_service(), len(old))
        for p in old:
            self.assertFalse(os.path.exists(p), p)
        for p in fresh:
            self.assertTrue(os.path.exists(p), p)

    def test_just_before_start_kept(self):
        """Within the slack for coarse file system clocks a file counts as fresh."""
        p = _touch(os.path.join(self.tmps[0], "x"), self.start - staletmp.MTIME_SLACK / 2)
        self.assertEqual(self.run_service(), 0)
        self.assertTrue(os.path.exists(p))

    def test_only_files_in_tmp(self):
        """Subdirectories (a backup under DataDir/tmp), symlinks, message files outside
        tmp/ and directories of invalid account names are left alone."""
        long_ago = self.start - 86400
        backup = _touch(os.path.join(self.data, "tmp", "backup", "index.db"), long_ago)
        os.utime(os.path.dirname(backup), (long_ago, long_ago))
        target = _touch(os.path.join(self.data, "elsewhere"), long_ago)
        link = os.path.join(self.data, "tmp", "link")
        os.symlink(target, link)
        cur = _touch(os.path.join(self.data, "accounts", "mjl", "maildir", "cur", "0", "1"), long_ago)
        queued = _touch(os.path.join(qdb.queue_dir(self.data), "7"), long_ago)
        odd = _touch(os.path.join(self.data, "accounts", ".hidden", "maildir", "tmp", "x"), long_ago)
        self.assertEqual(self.run_service(), 0)
        for p in (backup, target, link, cur, queued, odd):
            self.assertTrue(os.path.lexists(p), p)

    def test_missing_dirs(self):
        self.assertEqual(self.run_service(), 0)
        self.assertEqual(staletmp.remove_stale(os.path.join(self.data, "nothing"), self.start), 0)


STATIC_TREE = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "{cert}", KeyFile = "{key}"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.Submission]
Enabled = true
Port = {submission}
[Listeners.main.Submissions]
Enabled = true
Port = {submissions}
[Listeners.main.IMAP]
Enabled = true
Port = {imap}
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
[Listeners.main.AccountHTTPS]
Enabled = true
Port = {https}
[Listeners.ecdsa]
IPs = ["127.0.0.1"]
[Listeners.ecdsa.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.ecdsa.IMAPS]
Enabled = true
Port = {ecdsa_imaps}
"""

DYNAMIC_TREE = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
"""


def _rsa_pair(directory):
    """An RSA key and self-signed certificate for localhost: RSA key exchange and
    ECDHE-RSA suites need an RSA certificate to be tested at all."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "rsa.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "rsa.key"), "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    return "tls/rsa.crt", "tls/rsa.key"


class TreeBase(unittest.TestCase):
    """The real service tree with every kind of TLS listener on loopback."""

    timeout = 60

    def write_config(self):
        off = free_offset()
        self.ports = {
            "smtp": 25 + off, "submission": 587 + off, "submissions": 465 + off,
            "imap": 143 + off, "imaps": 993 + off, "https": 443 + off, "ecdsa_imaps": 8010 + off,
        }
        d = os.path.abspath(self.mktemp())
        cert, key = _rsa_pair(os.path.join(d, "tls"))
        static = STATIC_TREE.format(cert=cert, key=key, **self.ports)
        self.cfg, _ = servertree.write_config(d, static, DYNAMIC_TREE)

    @defer.inlineCallbacks
    def start(self):
        self.root = yield servertree.start(self, self.cfg)
        # ReportsService starts its timer once its databases are open, even when it was
        # stopped meanwhile: a test stopping sooner would leave the reactor dirty.
        yield self.root.reports.ready


class StaleTmpStartupTests(TreeBase):
    @defer.inlineCallbacks
    def test_startup_removes_leftovers(self):
        self.write_config()
        data = self.cfg.data_dir
        long_ago = time.time() - 3600
        old = [
            _touch(os.path.join(data, "tmp", "tmpabc"), long_ago),
            _touch(os.path.join(qdb.tmp_dir(data), "1.x"), long_ago),
            _touch(os.path.join(data, "accounts", "mjl", "maildir", "tmp", "1.y"), long_ago),
        ]
        yield self.start()
        # A file written after the start (a delivery in progress) is never removed.
        fresh = _touch(os.path.join(data, "accounts", "mjl", "maildir", "tmp", "2.z"), time.time())
        removed = yield self.root.getServiceNamed("staletmp").done
        self.assertEqual(removed, 3)
        for p in old:
            self.assertFalse(os.path.exists(p), p)
        self.assertTrue(os.path.exists(fresh))


# -- b) mailbox names with "." and ".." components

DOT_NAMES = ("..", ".", "a/../b", "./x", "a/./b", "a/..", "a/.", "../Inbox", "Inbox/..")
FINE_NAMES = ("a.b", "...", ".x", "a/.b", "a../b", "x/...")


class MailboxNameModelTests(unittest.SynchronousTestCase):
    def test_dot_components_refused_for_new(self):
        for name in DOT_NAMES:
            self.assertRaises(MailboxNameError, check_new_mailbox_name, name)

    def test_other_dots_allowed(self):
        for name in FINE_NAMES:
            self.assertEqual(check_new_mailbox_name(name), name)

    def test_lookups_still_normalize(self):
        """Existing mailboxes with such names (made before the rule) stay reachable."""
        self.assertEqual(normalize_mailbox_name("inbox/.."), "Inbox/..")


class MailboxNameStoreTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        self.store = Store(os.path.abspath(self.mktemp()))
        self.addCleanup(self.store.close)
        self.acc = yield self.store.open_account("mjl")

    @defer.inlineCallbacks
    def test_create_rename_deliver_refused(self):
        before = [m.name for m in (yield self.acc.mailboxes())]
        for name in DOT_NAMES:
            with self.assertRaises(MailboxNameError):
                yield self.acc.create_mailbox(name)
            with self.assertRaises(MailboxNameError):
                yield self.acc.rename_mailbox("Archive", name)
            with self.assertRaises(MailboxNameError):
                yield self.acc.deliver(name, message("x"))
        self.assertEqual([m.name for m in (yield self.acc.mailboxes())], before)
        tmp = os.path.join(self.acc.maildir, "tmp")
        self.assertEqual(os.listdir(tmp), [])  # refused deliveries leave no file behind

    @defer.inlineCallbacks
    def test_dots_inside_names_fine(self):
        for name in FINE_NAMES:
            yield self.acc.create_mailbox(name)
        names = {m.name for m in (yield self.acc.mailboxes())}
        self.assertTrue(set(FINE_NAMES) <= names, names)


class MailboxNameIMAPTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_create_refused(self):
        c = yield self.logged_in()
        for name in DOT_NAMES + ("a/../",):
            lines = yield c.cmd(f'CREATE "{name}"')
            self.assertNO(lines, "CANNOT")
        names = yield self.acc.mailboxes()
        self.assertFalse([m.name for m in names if "." in m.name], names)
        self.assertOK((yield c.cmd("CREATE a/.b")))

    @defer.inlineCallbacks
    def test_rename_refused(self):
        c = yield self.logged_in()
        for name in ("a/../b", "..", "Archive/."):
            self.assertNO((yield c.cmd(f'RENAME Archive "{name}"')), "CANNOT")
        self.assertOK((yield c.cmd("SELECT Archive")))

    @defer.inlineCallbacks
    def test_append_copy_move_no_trycreate(self):
        """A missing destination that CREATE would refuse gets [CANNOT], not [TRYCREATE]
        (RFC 9051 7.1: TRYCREATE promises CREATE may help)."""
        yield self.deliver("one")
        c = yield self.logged_in(select="INBOX")
        lines = yield c.raw(b't1 APPEND "a/../b" {5+}\r\nhello\r\n', "t1")
        self.assertNO(lines, "CANNOT")
        for cmd in ("COPY 1 ./x", "MOVE 1 a/./b", "UID COPY 1:* ..", "UID MOVE 1:* ."):
            lines = yield c.cmd(cmd)
            self.assertNO(lines, "CANNOT")
            self.assertNotIn(b"TRYCREATE", lines[-1])
        # A plain missing mailbox keeps TRYCREATE.
        self.assertNO((yield c.cmd("COPY 1 Missing")), "TRYCREATE")
        self.assertEqual(len(c.out.split(b"* 1 EXPUNGE")), 1)  # nothing was moved


# -- c) NUL bytes in pedantic mode

NUL_MESSAGE = b"Subject: nul\r\n\r\nbefore\x00after\r\n"


class NulDataTests(SMTPTestBase):
    """Not pedantic: a message with a NUL byte is accepted as before."""

    def transaction(self, mail_params=""):
        self.ehlo()
        out = self.send(f"MAIL FROM:<a@b.org>{mail_params}\r\nRCPT TO:<x@y.org>\r\n".encode())
        self.assertEqual(self.codes(out), [250, 250], out)

    def data(self, message=NUL_MESSAGE):
        self.transaction()
        self.assertEqual(self.codes(self.send(b"DATA\r\n")), [354])
        return self.send(message + b".\r\n")

    def bdat(self, mail_params=""):
        self.transaction(mail_params=mail_params)
        return self.send(b"BDAT %d LAST\r\n" % len(NUL_MESSAGE) + NUL_MESSAGE)

    def assertAccepted(self, out, message=NUL_MESSAGE):
        self.assertEqual(self.codes(out), [250], out)
        self.assertEqual(self.backend.delivered[-1][1], message)

    def assertNul(self, out, message=NUL_MESSAGE):
        """How this mode treats a message with a NUL byte."""
        self.assertAccepted(out, message)

    def test_data(self):
        self.assertNul(self.data())
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_bdat(self):
        self.assertNul(self.bdat())
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_bdat_binarymime(self):
        """RFC 3030 3: BINARYMIME content may hold any octet, pedantic or not."""
        self.assertAccepted(self.bdat(mail_params=" BODY=BINARYMIME"))

    def test_nul_in_long_line(self):
        """A NUL in a line longer than the reader's partial-flush size counts too."""
        self.factory.max_message_size = 1 << 20
        message = b"Subject: x\r\n\r\n" + b"a" * 70000 + b"\x00" + b"b" * 70000 + b"\r\n"
        self.assertNul(self.data(message), message)

    def test_no_nul_accepted(self):
        self.assertAccepted(self.data(b"Subject: x\r\n\r\nclean\r\n"), b"Subject: x\r\n\r\nclean\r\n")


class NulDataPedanticTests(NulDataTests):
    """Pedantic: refused with 554 5.6.0; the transaction is reset, the connection stays."""

    pedantic = True

    def assertNul(self, out, message=NUL_MESSAGE):
        self.assertEqual(self.codes(out), [c.C554_TRANSACTION_FAILED], out)
        self.assertIn(f" 5.{c.SE_MSG_OTHER0} ", out)
        self.assertIn("NUL", out)
        self.assertEqual(self.backend.delivered, [])
        self.assertEqual(self.codes(self.send(b"RCPT TO:<x@y.org>\r\n")), [c.C503_BAD_CMD_SEQUENCE])


# -- d) TLS: one configuration on every listener

TLS12_GOOD = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305")
TLS12_BAD = (
    "ECDHE-RSA-AES128-SHA",  # CBC
    "ECDHE-RSA-AES128-SHA256",  # CBC
    "AES128-GCM-SHA256",  # RSA key exchange
    "AES256-SHA",  # RSA key exchange, CBC
    "DHE-RSA-AES128-GCM-SHA256",  # DHE
)


def _client_ctx(version=None, ciphers=None, minimum=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        # The client's own OpenSSL may forbid old versions at its default security level.
        ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    elif minimum is not None:
        ctx.minimum_version = minimum
    return ctx


def _read_until(sock, done):
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def _smtp_last_line(data):
    lines = data.split(b"\r\n")
    return len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" "


def _preamble(sock, kind):
    """The plain-text part before the TLS handshake (STARTTLS) of a listener kind."""
    if kind in ("smtp", "submission"):
        _read_until(sock, _smtp_last_line)
        sock.sendall(b"EHLO client.example\r\n")
        _read_until(sock, _smtp_last_line)
        sock.sendall(b"STARTTLS\r\n")
        reply = _read_until(sock, _smtp_last_line)
        assert reply.startswith(b"220"), reply
    elif kind == "imap":
        _read_until(sock, lambda d: d.endswith(b"\r\n"))
        sock.sendall(b"a STARTTLS\r\n")
        reply = _read_until(sock, lambda d: b"a OK" in d or b"a NO" in d or b"a BAD" in d)
        assert b"a OK" in reply, reply


def _handshake(port, kind, ctx):
    """(TLS version, cipher name) after a handshake, or the SSLError's reason."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        _preamble(raw, kind)
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version(), tls.cipher()[0]
        except ssl.SSLError as e:
            return ("refused", e.reason or str(e))
        except (ConnectionError, OSError) as e:
            return ("refused", str(e))


class TLSConfigTests(TreeBase):
    """Mozilla "intermediate" on every TLS listener, implicit and STARTTLS."""

    @defer.inlineCallbacks
    def setUp(self):
        self.write_config()
        yield self.start()

    def check(self, port_name, kind, good=TLS12_GOOD, bad=TLS12_BAD):
        port = self.ports[port_name]

        def run():
            out = {}
            for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
                out[v.name] = _handshake(port, kind, _client_ctx(v))
            for cipher in good + bad:
                out[cipher] = _handshake(port, kind, _client_ctx(ssl.TLSVersion.TLSv1_2, cipher))
            out["TLSv1.3"] = _handshake(port, kind, _client_ctx(minimum=ssl.TLSVersion.TLSv1_3))
            out["default"] = _handshake(port, kind, _client_ctx())
            return out

        def verify(out):
            # The reasons are the server's alerts: the client did offer what was refused.
            for v in ("TLSv1", "TLSv1_1"):
                self.assertEqual(out[v], ("refused", "TLSV1_ALERT_PROTOCOL_VERSION"), v)
            for cipher in good:
                self.assertEqual(out[cipher], ("TLSv1.2", cipher))
            for cipher in bad:
                self.assertEqual(out[cipher], ("refused", "SSLV3_ALERT_HANDSHAKE_FAILURE"), cipher)
            self.assertEqual(out["TLSv1.3"][0], "TLSv1.3")
            self.assertEqual(out["default"][0], "TLSv1.3")

        return threads.deferToThread(run).addCallback(verify)

    def test_smtp_starttls(self):
        return self.check("smtp", "smtp")

    def test_submission_starttls(self):
        return self.check("submission", "submission")

    def test_submissions(self):
        return self.check("submissions", "tls")

    def test_imap_starttls(self):
        return self.check("imap", "imap")

    def test_imaps(self):
        return self.check("imaps", "tls")

    def test_https(self):
        return self.check("https", "tls")

    def test_ecdsa_certificate(self):
        return self.check(
            "ecdsa_imaps", "tls",
            good=("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "ECDHE-ECDSA-CHACHA20-POLY1305"),
            bad=("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"),
        )

    def test_client_can_offer_old_versions(self):
        """Sanity check of the refusals above: this client really offers TLS 1.0 and
        CBC/RSA suites (an OpenSSL built without them would pass vacuously)."""
        ctx = _client_ctx(ssl.TLSVersion.TLSv1, "AES128-SHA")
        try:
            ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()).do_handshake()
        except ssl.SSLWantReadError:
            pass  # the ClientHello was produced: the client can offer TLS 1.0
        except ssl.SSLError as e:
            raise unittest.SkipTest(f"client OpenSSL cannot offer TLS 1.0: {e}")
