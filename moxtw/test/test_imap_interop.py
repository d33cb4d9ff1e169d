"""Interoperability with real IMAP sync clients: mbsync (isync) and offlineimap3.

Each test starts the real service tree (``moxtw.app.makeService``) on free loopback ports,
fills an account through the store (a few hundred messages with varied flags, nested and
non-ASCII mailboxes, a ~1 MB message, 8-bit and binary-ish content), then runs the client
as a subprocess (in a thread, with a timeout, HOME in a temp dir) against it:

1. initial sync server -> local Maildir, compared file by file (bytes and Maildir flags);
2. local changes (flags, deletions, moves between folders, new messages, a new folder)
   -> server, verified through the store API;
3. server changes (flags, expunges, deliveries, moves, a new mailbox) -> local;
4. another full sync changes nothing on either side.

Both over IMAPS (implicit TLS, verified against the test CA) and plain IMAP + STARTTLS.
The clients' protocol traces (mbsync ``-Dn``, offlineimap ``-d imap`` except for the
initial download, see OfflineIMAP.argv) are kept in the test's temp dir
(``_trial_temp/.../temp/*.log``); failures quote their tail.

Client-specific transformations allowed when comparing:

- both clients store messages with LF line endings in Maildir (IMAP uses CRLF);
- mbsync 1.4 adds an ``X-TUID:`` header to every message it uploads (even with UIDPLUS);
  offlineimap adds ``X-OfflineIMAP:`` when the server lacks UIDPLUS. Such headers are
  ignored on either side.
- mbsync 1.4 names local folders by their modified UTF-7 IMAP names (1.5 converts to
  UTF-8); offlineimap does with ``utf8foldernames``.
- mbsync maps the ``$Forwarded`` keyword to the Maildir flag ``P`` (its own test);
  offlineimap does not map keywords by default. Keywords a client cannot represent must
  survive on the server for messages it did not move.

The binaries come from the Debian packages ``isync`` and ``offlineimap3``; tests skip when
they are missing.
"""

import abc
import base64
import itertools
import os
import signal
import re
import shutil
import subprocess
import time

from twisted.internet import defer, threads
from twisted.python import log as tlog
from twisted.trial import unittest

from moxtw.test.test_imap_e2e import LOGIN, PASSWORD, IMAPTestBase

MBSYNC = shutil.which("mbsync")
OFFLINEIMAP = shutil.which("offlineimap")
CLIENT_TIMEOUT = 90

# Maildir info flags per IMAP flag (server flags are canonical system flags and keywords
# in their registered spelling, see moxtw.store.model).
MAILDIR_FLAGS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
# mbsync also maps $Forwarded <-> "P" (MbsyncKeywordTests checks it on its own too).
MBSYNC_FLAGS = {**MAILDIR_FLAGS, "$Forwarded": "P"}
FLAGSETS = [
    (),
    ("\\Seen",),
    ("\\Seen", "\\Flagged"),
    ("\\Seen", "\\Answered"),
    ("\\Draft",),
    ("\\Flagged",),
    ("\\Seen", "$Forwarded"),
    ("\\Seen", "\\Answered", "\\Flagged"),
    ("\\Seen", "$label1"),
]

MAILBOX_COUNTS = {
    "Inbox": 140,
    "Archive": 60,
    "Projects": 10,
    "Projects/moxtw": 40,
    "Réunions/Été 2024": 30,
}
SMALL_COUNTS = {"Inbox": 12, "Projects/moxtw": 5, "Réunions/Été 2024": 4}

MSGID_RE = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.I | re.M)
CLIENT_HEADERS = re.compile(rb"^(X-TUID|X-OfflineIMAP):[^\n]*\n", re.I | re.M)


# -- the corpus


def mutf7_encode(name):
    """RFC 3501 5.1.3 modified UTF-7 (written here rather than taken from the server)."""
    out, run = [], []

    def flush():
        if run:
            b = base64.b64encode("".join(run).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + b.decode().replace("/", ",") + "-")
            run.clear()

    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            run.append(c)
    flush()
    return "".join(out)


def mutf7_decode(name):
    def one(m):
        if not m.group(1):
            return "&"
        b = m.group(1).replace(",", "/")
        return base64.b64decode(b + "=" * (-len(b) % 4)).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", one, name)


def msgid(data):
    m = MSGID_RE.search(data.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0])
    return m.group(1).decode() if m else None


def make_message(tag, subject=None, body=None, headers=b"", date=None):
    """A CRLF message with Message-ID <tag@example.net>."""
    subject = subject if subject is not None else f"message {tag}".encode()
    body = body if body is not None else f"Body of {tag}.\r\nSecond line.\r\n".encode()
    date = date or "Mon, 01 Jan 2024 10:00:00 +0100"
    return (
        b"From: Bob <bob@example.net>\r\nTo: mjl@example.org\r\n"
        + b"Subject: " + subject + b"\r\n"
        + f"Date: {date}\r\nMessage-ID: <{tag}@example.net>\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )


def special_messages():
    """(tag, data, flags) for the awkward ones; they all go to Inbox."""
    out = []
    # ~1 MB of text.
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/-\r\n"
    big = line * (1024 * 1024 // len(line) + 1)
    out.append(("big", make_message("big", b"a large one", big), ("\\Seen",)))
    # 8-bit: raw UTF-8 in headers and body, some Latin-1 bytes too.
    body8 = "Grüße aus Köln, ½ € — ☕ 日本語\r\n".encode() * 20 + b"latin1: caf\xe9 na\xefve\r\n"
    out.append(
        (
            "eightbit",
            make_message(
                "eightbit",
                "Grüße ☕".encode(),
                body8,
                b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n",
            ),
            ("\\Flagged",),
        )
    )
    # Binary-ish: every byte but NUL, CR and LF (not allowed bare in an IMAP literal or
    # not representable in a Maildir with LF line endings), in lines.
    raw = bytes(b for b in range(1, 256) if b not in (10, 13))
    out.append(
        (
            "binaryish",
            make_message(
                "binaryish",
                b"binary-ish",
                (raw + b"\r\n") * 40,
                b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: binary\r\n",
            ),
            (),
        )
    )
    # No final line ending.
    out.append(("noeol", make_message("noeol", b"no eol", b"last line without newline"), ("\\Seen",)))
    # Multipart with a base64 attachment and a folded header.
    mp = (
        b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--b1\r\nContent-Type: application/octet-stream; name=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n" * 50
        + b"--b1--\r\n"
    )
    out.append(
        (
            "multipart",
            make_message(
                "multipart",
                b"a folded\r\n subject line",
                mp,
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=b1\r\n",
            ),
            ("\\Answered", "\\Seen"),
        )
    )
    return out


def corpus(counts):
    """{mailbox: [(data, flags, received)]}"""
    out = {}
    n = 0
    for mailbox, count in counts.items():
        items = []
        for i in range(count):
            tag = f"m{n}"
            n += 1
            body = (f"Message {tag} in {mailbox}.\r\n" + "filler text line\r\n" * (i % 17)).encode()
            items.append((make_message(tag, body=body), FLAGSETS[n % len(FLAGSETS)], None))
        out[mailbox] = items
    out.setdefault("Inbox", []).extend((data, flags, None) for _, data, flags in special_messages())
    return out


# -- inspecting both sides


class Msg:
    def __init__(self, data, flags, uid=None, path=None):
        self.data = data
        self.flags = flags
        self.uid = uid
        self.path = path

    def __repr__(self):
        return f"Msg(uid={self.uid}, flags={self.flags}, path={self.path}, size={len(self.data)})"


@defer.inlineCallbacks
def server_state(acc):
    """{mailbox: {message-id: Msg}}; duplicates of a Message-ID get a "#n" suffix."""
    out = {}
    for mb in (yield acc.mailboxes()):
        msgs = {}
        for m in (yield acc.messages(mb.id)):
            with acc.open_message(m.id) as f:
                data = f.read()
            key = msgid(data) or f"uid{m.uid}"
            while key in msgs:
                key += "#dup"
            msgs[key] = Msg(data, frozenset(m.flags), uid=m.uid)
        out[mb.name] = msgs
    return out


@defer.inlineCallbacks
def server_fingerprint(acc):
    """Everything a sync could change on the server."""
    out = {}
    for mb in (yield acc.mailboxes()):
        msgs = yield acc.messages(mb.id)
        out[mb.name] = (
            mb.uidvalidity,
            mb.uidnext,
            mb.modseq,
            tuple((m.uid, m.modseq, m.flags) for m in msgs),
        )
    return out


def maildir_flags(name):
    _, sep, info = name.rpartition(":2,")
    return frozenset(info) if sep else frozenset()


def local_state(root, decode=lambda name: name):
    """{mailbox: {message-id: Msg}} from a Maildir++-less tree of nested maildirs."""
    out = {}
    for dirpath, dirnames, _ in os.walk(root):
        if not ("cur" in dirnames and "new" in dirnames):
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        name = "Inbox" + rel[5:] if rel.upper().split("/")[0] == "INBOX" else rel
        name = decode(name)
        msgs = {}
        for sub in ("new", "cur"):
            for fn in sorted(os.listdir(os.path.join(dirpath, sub))):
                path = os.path.join(dirpath, sub, fn)
                with open(path, "rb") as f:
                    data = f.read()
                key = msgid(data) or fn
                while key in msgs:
                    key += "#dup"
                msgs[key] = Msg(data, maildir_flags(fn), path=path)
        out[name] = msgs
    return out


def local_fingerprint(root):
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            path = os.path.join(dirpath, fn)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def strip_client_headers(data):
    head, sep, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    return CLIENT_HEADERS.sub(b"", head + b"\n")[:-1] + sep + body


def as_local(server_data):
    return strip_client_headers(server_data)


def expected_maildir_flags(server_flags, flagmap):
    return frozenset(flagmap[f] for f in server_flags if f in flagmap)


_local_seq = itertools.count(1)


def add_local_message(folder_dir, tag, subject, flags=""):
    """Write a new message into a local maildir folder (LF line endings), as a mail
    client would; returns (Message-ID, data)."""
    data = make_message(tag, subject.encode()).replace(b"\r\n", b"\n")
    base = f"{int(time.time())}.{os.getpid()}_{next(_local_seq)}.localtest"
    if flags:
        path = os.path.join(folder_dir, "cur", f"{base}:2,{flags}")
    else:
        path = os.path.join(folder_dir, "new", base)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder_dir, sub), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return f"<{tag}@example.net>", data


def set_maildir_flags(path, flags):
    d, fn = os.path.split(path)
    base = fn.rpartition(":2,")[0] if ":2," in fn else fn
    new = os.path.join(os.path.dirname(d), "cur", f"{base}:2,{''.join(sorted(flags))}")
    os.rename(path, new)
    return new


# -- the clients


class Client(abc.ABC):
    name = None
    binary = None
    flagmap = MAILDIR_FLAGS
    # Local folder names from server names (and back).
    encode_name = staticmethod(lambda name: name)
    decode_name = staticmethod(lambda name: name)
    inbox_dir = "INBOX"

    def __init__(self, test, mode):
        self.test = test
        self.mode = mode  # "imaps" or "starttls"
        self.home = os.path.abspath(test.mktemp())
        self.root = os.path.join(self.home, "Mail")
        os.makedirs(self.root)
        self.runs = 0
        self.synced = False  # a sync succeeded (the initial download is done)

    def env(self):
        return {
            "HOME": self.home,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": self.home,
        }

    def run(self):
        """Run one full sync in a thread; fires with (returncode, log path)."""
        self.runs += 1
        log = os.path.join(self.home, f"{self.name}-{self.runs}.log")
        argv = self.argv(log)

        def go():
            started = time.monotonic()
            with open(log, "ab") as out:
                try:
                    p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                       cwd=self.home, timeout=CLIENT_TIMEOUT)
                    rc = p.returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
            return rc, log, time.monotonic() - started

        return threads.deferToThread(go)

    @abc.abstractmethod
    def move_local(self, path, dest_folder):
        ...

    def tls_race(self, log, rc=0):
        return False


class Mbsync(Client):
    name = "mbsync"
    binary = MBSYNC
    flagmap = MBSYNC_FLAGS
    # isync 1.4 keeps the IMAP (modified UTF-7) names for Maildir folders; 1.5 converts.
    encode_name = staticmethod(mutf7_encode)
    decode_name = staticmethod(mutf7_decode)

    def write_config(self, ports, ca):
        tls = "IMAPS" if self.mode == "imaps" else "STARTTLS"
        port = ports["imaps"] if self.mode == "imaps" else ports["imap"]
        self.config = os.path.join(self.home, ".mbsyncrc")
        with open(self.config, "w") as f:
            f.write(
                f"""
IMAPAccount moxtw
Host localhost
Port {port}
User {LOGIN}
Pass "{PASSWORD}"
SSLType {tls}
CertificateFile {ca}
Timeout 30

IMAPStore far
Account moxtw

MaildirStore near
Path {self.root}/
Inbox {self.root}/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
Remove None
SyncState *
CopyArrivalDate yes
"""
            )

    def argv(self, log):
        return [self.binary, "-c", self.config, "-Dn", "-a"]

    def move_local(self, path, dest_dir):
        # mbsync keeps the message's UID in the file name (",U=n"); a file moved to another
        # folder must lose it (mutt and others do the same), or it would claim a foreign UID.
        fn = os.path.basename(path)
        fn = re.sub(r",U=\d+", "", fn)
        dest = os.path.join(dest_dir, "cur", fn)
        os.rename(path, dest)
        return dest


class OfflineIMAP(Client):
    name = "offlineimap"
    binary = OFFLINEIMAP
    inbox_dir = "Inbox"  # as the server lists it

    def write_config(self, ports, ca):
        if self.mode == "imaps":
            tls = f"ssl = yes\nsslcacertfile = {ca}\nremoteport = {ports['imaps']}\n"
        else:
            # Note: offlineimap 8.0 calls imaplib2's starttls() without arguments, so the
            # certificate is not verified after STARTTLS (sslcacertfile is for ssl = yes).
            tls = f"ssl = no\nstarttls = yes\nremoteport = {ports['imap']}\n"
        self.config = os.path.join(self.home, ".offlineimaprc")
        with open(self.config, "w") as f:
            f.write(
                f"""
[general]
accounts = moxtw
metadata = {self.home}/.offlineimap
ui = basic
socktimeout = 15
fsync = false

[Account moxtw]
localrepository = local
remoterepository = remote
utf8foldernames = yes

[Repository local]
type = Maildir
localfolders = {self.root}
sep = /

[Repository remote]
type = IMAP
remotehost = localhost
remoteuser = {LOGIN}
remotepass = {PASSWORD}
{tls}
maxconnections = 1
holdconnectionopen = no
createfolders = True
expunge = yes
"""
            )

    def argv(self, log):
        argv = [self.binary, "-c", self.config, "-o", "-u", "basic"]
        if self.synced:
            # The IMAP trace ("-d imap"), but not on the initial download: with it,
            # offlineimap 8.0 formats each fetched message for its log with the email
            # package, which crashes on raw 8-bit headers ('memoryview' object has no
            # attribute 'decode': offlineimap registers its modified UTF-7 codec for every
            # unknown codec name, "unknown-8bit" included).
            argv += ["-d", "imap"]
        return argv

    def tls_race(self, log, rc=0):
        """offlineimap's STARTTLS fails now and then, with TLS 1.3 only (0 of 40 runs
        with the server limited to TLS 1.2, ~1 in 6 with TLS 1.3): the session is upgraded
        fine on the server, which then never receives the client's first command. imaplib2
        (2.x/3.05) reads and writes one ssl.SSLSocket from two threads (reader and writer),
        and the TLS 1.3 NewSessionTicket messages that arrive right after the handshake
        make the reader thread call SSL_read while the writer is in SSL_write of
        "CAPABILITY"; OpenSSL objects are not safe for that. Symptoms: "command:
        CAPABILITY => no response", "[SSL] internal error", "sslv3 alert unexpected
        message". With implicit TLS the client writes nothing before the greeting, so
        IMAPS is not affected. The same race can also crash the client outright
        (SIGSEGV inside OpenSSL) right after "Establishing connection", before it logged
        anything else: that counts too."""
        if self.mode != "starttls":
            return False
        with open(log, "rb") as f:
            text = f.read()
        if b"Failed to start TLS connection: command: CAPABILITY" in text:
            return True
        last = text.strip().splitlines()[-1] if text.strip() else b""
        return rc == -signal.SIGSEGV and last.startswith(b"Establishing connection to ")

    def move_local(self, path, dest_dir):
        # offlineimap notices the folder's FMD5 in the name no longer matches and uploads
        # the message to the new folder; the source copy counts as deleted.
        dest = os.path.join(dest_dir, "cur", os.path.basename(path))
        os.rename(path, dest)
        return dest


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


# -- the tests


class SyncTestBase(IMAPTestBase):
    timeout = 240
    client_class = None
    mode = "imaps"
    counts = MAILBOX_COUNTS

    @defer.inlineCallbacks
    def setUp(self):
        if self.client_class is None or self.client_class.binary is None:
            name = self.client_class.name if self.client_class else "client"
            pkg = {"mbsync": "isync", "offlineimap": "offlineimap3"}.get(name, name)
            raise unittest.SkipTest(f"{name} not installed (Debian package {pkg})")
        yield IMAPTestBase.setUp(self)
        self.client = self.client_class(self, self.mode)
        self.client.write_config(self.ports, self.ca)
        for mailbox, items in corpus(self.counts).items():
            if (yield self.acc.mailbox(mailbox)) is None:
                yield self.acc.create_mailbox(mailbox)
            yield self.acc.append_many(mailbox, items)

    @defer.inlineCallbacks
    def sync(self, what):
        for _ in range(3):
            rc, log, secs = yield self.client.run()
            if not self.client.tls_race(log, rc):
                break
            # See OfflineIMAP.tls_race: a client bug, before login, so nothing changed yet.
            tlog.msg(f"{self.client.name}: STARTTLS race in the client, retrying ({log})")
        out = tail(log)
        if rc != 0 and self.client.tls_race(log, rc):
            # Three times the client's own STARTTLS race (see OfflineIMAP.tls_race), before
            # any IMAP command reached us: nothing about moxtw can be learned from this run.
            raise unittest.SkipTest(f"{self.client.name}: STARTTLS race in the client 3 times ({log})")
        if rc != 0:
            self.fail(f"{self.client.name} {what}: exit {rc}; log {log}:\n{out}")
        if self.client.name == "offlineimap":
            with open(log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            errors = [l for l in text.splitlines() if "ERROR" in l or "Traceback" in l]
            if errors:
                self.fail(f"offlineimap {what}: errors; log {log}:\n" + "\n".join(errors[:20]) + "\n" + out)
        self.client.synced = True
        return log

    def assertInSync(self, server, local, what, allow_new_parents=False):
        """Every server mailbox has a local folder with the same messages, bytes and flags."""
        problems = []
        flagmap = self.client.flagmap
        for mailbox, smsgs in sorted(server.items()):
            lmsgs = local.get(mailbox)
            if lmsgs is None and not smsgs and allow_new_parents:
                # A parent the server created for a folder the client just created;
                # the client learns of it on its next sync.
                continue
            if lmsgs is None:
                problems.append(f"mailbox {mailbox!r}: missing locally (local: {sorted(local)})")
                continue
            missing = sorted(set(smsgs) - set(lmsgs))
            extra = sorted(set(lmsgs) - set(smsgs))
            if missing:
                problems.append(f"{mailbox}: {len(missing)} not local: {missing[:5]}")
            if extra:
                problems.append(f"{mailbox}: {len(extra)} only local: {extra[:5]}")
            for key in sorted(set(smsgs) & set(lmsgs)):
                s, l = smsgs[key], lmsgs[key]
                want = as_local(s.data)
                got = strip_client_headers(l.data)
                if want != got:
                    problems.append(
                        f"{mailbox} {key}: content differs (server {len(want)} bytes, local "
                        f"{len(got)} bytes at {l.path}; first difference at "
                        f"{next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))})"
                    )
                wf = expected_maildir_flags(s.flags, flagmap)
                if wf != l.flags:
                    problems.append(
                        f"{mailbox} {key}: flags server {sorted(s.flags)} -> want {sorted(wf)}, "
                        f"local {sorted(l.flags)} ({os.path.basename(l.path)})"
                    )
        for mailbox in sorted(set(local) - set(server)):
            if local[mailbox]:
                problems.append(f"local folder {mailbox!r} with {len(local[mailbox])} messages not on server")
        if problems:
            self.fail(f"{what}: {len(problems)} problems:\n" + "\n".join(problems[:40]))

    def local_state(self):
        return local_state(self.client.root, self.client.decode_name)

    def folder_dir(self, mailbox):
        if mailbox == "Inbox":
            # mbsync: the configured "Inbox" path; offlineimap: the name as listed.
            return os.path.join(self.client.root, self.client.inbox_dir)
        return os.path.join(self.client.root, *self.client.encode_name(mailbox).split("/"))

    @defer.inlineCallbacks
    def initial_sync(self):
        yield self.sync("initial sync")
        server = yield server_state(self.acc)
        self.assertEqual(
            sum(len(m) for m in server.values()),
            sum(self.counts.values()) + len(special_messages()),
        )
        local = self.local_state()
        self.assertInSync(server, local, "after initial sync")
        return server, local

    @defer.inlineCallbacks
    def assert_idempotent(self):
        srv = yield server_fingerprint(self.acc)
        loc = local_fingerprint(self.client.root)
        yield self.sync("idempotent sync")
        srv2 = yield server_fingerprint(self.acc)
        loc2 = local_fingerprint(self.client.root)
        changed_srv = {k: (srv.get(k), srv2.get(k)) for k in set(srv) | set(srv2) if srv.get(k) != srv2.get(k)}
        self.assertEqual(changed_srv, {}, "server changed by a sync without changes")
        changed_loc = sorted(k for k in set(loc) | set(loc2) if loc.get(k) != loc2.get(k))
        self.assertEqual(changed_loc, [], "local files changed by a sync without changes")

    def local_changes(self, server, local):
        """Change the local Maildirs; return the expected server state (as_local data,
        maildir flag letters) per mailbox."""
        flagmap = self.client.flagmap
        expect = {
            mb: {k: [as_local(m.data), expected_maildir_flags(m.flags, flagmap), m.flags] for k, m in msgs.items()}
            for mb, msgs in server.items()
        }
        keys = {mb: sorted(local[mb]) for mb in local}
        inbox = keys["Inbox"]
        # Flags: add F to some, clear S on others, set R+S on others.
        for k in inbox[0:30:3]:
            m = local["Inbox"][k]
            new = set(m.flags) ^ {"F"}
            set_maildir_flags(m.path, new)
            expect["Inbox"][k][1] = frozenset(new)
        for k in keys["Projects/moxtw"][1:20:4]:
            m = local["Projects/moxtw"][k]
            new = (set(m.flags) - {"S"}) | {"R"}
            set_maildir_flags(m.path, new)
            expect["Projects/moxtw"][k][1] = frozenset(new)
        # Deletions.
        for mb, sel in (("Inbox", inbox[31:36]), ("Archive", keys["Archive"][2:5])):
            for k in sel:
                os.unlink(local[mb][k].path)
                del expect[mb][k]
        # Moves between folders.
        for src, dst, sel in (
            ("Inbox", "Archive", inbox[40:45]),
            ("Réunions/Été 2024", "Projects/moxtw", keys["Réunions/Été 2024"][0:3]),
            ("Projects/moxtw", "Inbox", keys["Projects/moxtw"][30:32]),
        ):
            for k in sel:
                self.client.move_local(local[src][k].path, self.folder_dir(dst))
                # A moved message is uploaded anew: keywords Maildir cannot carry are lost.
                expect[dst][k] = expect[src].pop(k)[:2] + [None]
        # New messages, also in a new nested folder. Its parent is made a (empty) maildir
        # too: offlineimap creates "Local" on the server along with "Local/Neu", then
        # fails with "getfolder() asked for a nonexisting folder 'Local'" when there is no
        # such local maildir.
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.folder_dir("Local"), sub))
        expect["Local"] = {}
        for mb, tag, flags in (
            ("Inbox", "local1", ""),
            ("Inbox", "local2", "S"),
            ("Inbox", "local3", "FS"),
            ("Réunions/Été 2024", "local4", "RS"),
            ("Local/Neu", "local5", "S"),
            ("Local/Neu", "local6", ""),
        ):
            key, data = add_local_message(self.folder_dir(mb), tag, f"local {tag} ☕", flags)
            expect.setdefault(mb, {})[key] = [data, frozenset(flags), None]
        return expect

    def assertServerMatches(self, server, expect, what):
        problems = []
        for mailbox in sorted(set(expect) | set(server)):
            want, got = expect.get(mailbox, {}), server.get(mailbox)
            if got is None:
                problems.append(f"mailbox {mailbox!r} missing on server")
                continue
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            if missing:
                problems.append(f"{mailbox}: {len(missing)} missing on server: {missing[:6]}")
            if extra:
                problems.append(f"{mailbox}: {len(extra)} unexpected on server: {extra[:6]}")
            for k in sorted(set(want) & set(got)):
                data, letters, orig = want[k]
                m = got[k]
                if as_local(m.data) != data:
                    problems.append(f"{mailbox} {k}: content differs ({len(m.data)} bytes on server)")
                if b"\n" in m.data.replace(b"\r\n", b""):
                    problems.append(f"{mailbox} {k}: bare LF stored on server")
                have = expected_maildir_flags(m.flags, self.client.flagmap)
                if have != letters:
                    problems.append(f"{mailbox} {k}: server flags {sorted(m.flags)}, want {sorted(letters)}")
                elif orig is not None and letters == expected_maildir_flags(orig, self.client.flagmap):
                    # Unchanged: keywords the client cannot represent must survive.
                    if m.flags != orig and not set(orig) <= set(m.flags):
                        problems.append(f"{mailbox} {k}: flags {sorted(orig)} became {sorted(m.flags)}")
        if problems:
            self.fail(f"{what}: {len(problems)} problems:\n" + "\n".join(problems[:40]))

    @defer.inlineCallbacks
    def server_changes(self, server):
        acc = self.acc
        inbox = yield acc.mailbox("Inbox")
        uids = sorted(m.uid for m in server["Inbox"].values())
        yield acc.store_flags(inbox.id, uids[0:8:2], "add", ["\\Flagged", "\\Seen"])
        yield acc.store_flags(inbox.id, uids[1:9:2], "remove", ["\\Seen", "\\Flagged"])
        yield acc.store_flags(inbox.id, uids[10:12], "add", ["\\Answered", "$Forwarded"])
        yield acc.expunge(inbox.id, uids[20:24])
        for i in range(5):
            yield acc.deliver("Inbox", make_message(f"srv{i}", f"server {i}".encode()),
                              flags=FLAGSETS[i % len(FLAGSETS)])
        archive = yield acc.mailbox("Archive")
        auids = sorted(m.uid for m in server["Archive"].values())
        yield acc.move(archive.id, auids[:3], "Projects")
        yield acc.create_mailbox("Neu/Ordner ü")
        yield acc.deliver("Neu/Ordner ü", make_message("srvnew1"), flags=("\\Seen",))
        yield acc.deliver("Neu/Ordner ü", make_message("srvnew2"))

    @defer.inlineCallbacks
    def full_scenario(self):
        started = time.monotonic()
        server, local = yield self.initial_sync()
        # Phase 2: local -> server.
        expect = self.local_changes(server, local)
        yield self.sync("sync of local changes")
        server2 = yield server_state(self.acc)
        self.assertServerMatches(server2, expect, "server after local changes")
        self.assertInSync(server2, self.local_state(), "after local changes", allow_new_parents=True)
        # Phase 3: server -> local.
        yield self.server_changes(server2)
        yield self.sync("sync of server changes")
        server3 = yield server_state(self.acc)
        self.assertIn("<srvnew2@example.net>", server3["Neu/Ordner ü"])
        local3 = self.local_state()
        self.assertIn("Neu/Ordner ü", local3)
        self.assertInSync(server3, local3, "after server changes")
        # Phase 4.
        yield self.assert_idempotent()
        self.log_time(started)

    @defer.inlineCallbacks
    def short_scenario(self):
        started = time.monotonic()
        yield self.initial_sync()
        yield self.assert_idempotent()
        self.log_time(started)

    def log_time(self, started):
        tlog.msg(f"{self.id()}: scenario took {time.monotonic() - started:.1f}s")


class MbsyncIMAPSTests(SyncTestBase):
    client_class = Mbsync
    mode = "imaps"

    def test_sync_roundtrip(self):
        return self.full_scenario()


class MbsyncSTARTTLSTests(SyncTestBase):
    client_class = Mbsync
    mode = "starttls"
    counts = SMALL_COUNTS

    def test_initial_and_idempotent(self):
        return self.short_scenario()


class OfflineIMAPIMAPSTests(SyncTestBase):
    client_class = OfflineIMAP
    mode = "imaps"

    def test_sync_roundtrip(self):
        return self.full_scenario()


class OfflineIMAPSTARTTLSTests(SyncTestBase):
    client_class = OfflineIMAP
    mode = "starttls"
    counts = SMALL_COUNTS

    def test_initial_and_idempotent(self):
        return self.short_scenario()


class MbsyncKeywordTests(SyncTestBase):
    """mbsync (isync 1.4) maps the IANA keyword $Forwarded to the Maildir flag "P"."""

    client_class = Mbsync
    counts = {"Inbox": 6}

    @defer.inlineCallbacks
    def test_forwarded_flag(self):
        yield self.acc.deliver("Inbox", make_message("fwd"), flags=("\\Seen", "$Forwarded"))
        yield self.sync("initial sync")
        local = self.local_state()["Inbox"]
        # isync compares flag names byte for byte with its table ("$Forwarded"); keywords are
        # case-insensitive in IMAP, but a server that answers "$forwarded" loses the flag.
        self.assertEqual(
            sorted(local["<fwd@example.net>"].flags), ["P", "S"],
            "server $Forwarded not seen by mbsync as Maildir P; FETCH FLAGS sent: "
            + ", ".join(sorted({m.group(0).decode() for m in re.finditer(
                rb"\$forwarded", open(os.path.join(self.client.home, "mbsync-1.log"), "rb").read(), re.I)})),
        )
        # Local P -> server $Forwarded, and no flapping afterwards.
        m = local["<m0@example.net>"]
        set_maildir_flags(m.path, set(m.flags) | {"P"})
        yield self.sync("sync of local P")
        server = yield server_state(self.acc)
        self.assertIn("$forwarded", {f.lower() for f in server["Inbox"]["<m0@example.net>"].flags})
        yield self.assert_idempotent()
        local = self.local_state()["Inbox"]
        self.assertIn("P", local["<m0@example.net>"].flags)
