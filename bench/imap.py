"""Benchmark: IMAP on a large mailbox over loopback, moxtw against Dovecot.

Usage::

    python3 bench/imap.py                  # 100,000 messages, 2,000 IDLE connections, both servers
    python3 bench/imap.py --quick          # 5,000 messages, 200 IDLE connections, 20 IDLE deliveries
    python3 bench/imap.py --only moxtw     # one server (moxtw or dovecot)
    python3 bench/imap.py --messages 20000 --connections 500 --repeat 5
    python3 bench/imap.py --stress         # only imaptest's stress run, clients 10 and 50

Run as root (the throwaway Dovecot instance is started with ``dovecot -c CONF -F`` and its
mail belongs to user nobody).  Needs ``/work/main/.venv`` with moxtw installed and
``dovecot`` (``apt-get install dovecot-imapd``).  Stdlib only.

What is done, per server, in this order:

* Fill: the same generated messages (varied senders, subjects, threads, text/plain,
  multipart/alternative and a few base64 attachments, about 3 KB on average; seeded, so
  every run has the same corpus) go into the INBOX before the server starts.  moxtw: a
  helper process in the venv calls ``Store(data).open_account("mox")`` and
  ``append_many`` (each file fsynced, index committed, as on delivery).  Dovecot: files
  written straight into ``Maildir/cur`` (``,S=size:2,flags``); Dovecot indexes them on the
  first SELECT.  The fill time is printed but is not a comparison.
* SELECT INBOX: "first" is the first SELECT after the server started (Dovecot: builds its
  index from the Maildir; moxtw: its index was built at delivery); "warm" is the median of
  the next runs, each on a fresh connection.
* UID FETCH 1:* (FLAGS), FETCH 1:* (ENVELOPE), UID SEARCH HEADER Subject "xyzzy",
  UID SEARCH HEADER Message-ID "<...>" (one message's), UID SEARCH BODY "plugh" and
  UID SEARCH TEXT "plugh" on the selected INBOX: "first" run and median of the rest.  The
  time is from sending the command to receiving its tagged OK, read by a minimal socket
  client (counts responses, skips literals, parses nothing else), so client overhead is
  small and the same for both servers.  The number of FETCH responses and of SEARCH hits
  is checked against the corpus.
* APPEND: messages of 10 KB, one at a time on one connection (synchronizing literal,
  wait for the tagged OK), into a new mailbox; appends per second.
* IDLE latency: one client logged in, INBOX selected, in IDLE; a message is delivered and
  the time until "* n EXISTS" arrives on the IDLE connection (read by a thread that
  timestamps each line) is taken; median and worst of --deliveries.  moxtw: delivered over
  SMTP (localserve's plain SMTP port, one persistent smtplib connection; the clock starts
  before MAIL FROM).  Dovecot: (a) ``dovecot-lda`` run as a process per message (clock
  starts before it is spawned), (b) a file written to ``Maildir/tmp`` and renamed into
  ``Maildir/new`` (what an external MDA does; Dovecot notices through inotify).
* Memory per idle connection: --connections clients each LOGIN, SELECT INBOX and IDLE
  (16 at a time).  Memory of the server's whole process tree before the first and after
  the last (2 s settle) gives the per-connection figure: summed RSS and summed PSS
  (proportional set size: shared pages divided among processes, the fair figure for
  Dovecot's one-process-per-connection model; equal to RSS for single-process moxtw, give
  or take).  moxtw's IMAP server limits connections to 300 per minute per IP, so the idle
  clients (for both servers) bind their sockets to 127.0.0.2, 127.0.0.3, ... (200 each;
  all of 127/8 is loopback on Linux).  Opening stops early if the server tree's summed PSS
  passes --max-server-mb; the figure is then per connection actually opened.

With --stress, only Dovecot's imaptest stress run (``$MOXTW_IMAPTEST`` or
``../shared/imaptest/imaptest``): random commands from 10 and then 50 concurrent clients
for --stress-secs seconds on a one-message INBOX that imaptest fills from an mbox of 300
messages with distinct Message-IDs; imaptest's commands per second (median of --repeat)
and its consistency errors (all runs), per server, and moxtw / Dovecot.

Each server gets a fresh data directory; nothing is asserted.  A failed step is printed as
such and never turned into a figure.
"""

import abc
import argparse
import base64
import concurrent.futures
import os
import platform
import pwd
import queue
import random
import re
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    fs_type, free_port, kill_pid, loadavg, log, port_free, pss_kb, run_cmd, status_kb, stop_child, tail,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = ("moxtw", "dovecot")
USER, PASSWORD = "mox@localhost", "moxmoxmox"
SUBJECT_MARK, BODY_MARK = "xyzzy", "plugh"
APPEND_SIZE = 10 * 1024
SETUP_THREADS = 16
PER_SOURCE_IP = 200


class BenchError(Exception):
    """A dependency is missing, a server did not come up or a step failed: reported, not a figure."""


# -- the corpus ----------------------------------------------------------------------

def subject_hit(i):
    return i % 997 == 0


def body_hit(i):
    return i % 1009 == 0


_CONS = "bcdfgklmnprstv"  # no h, x, y, z: no generated word contains a search mark
_VOWELS = "aeiou"


def _vocabulary():
    r = random.Random(42)
    syl = [c + v for c in _CONS for v in _VOWELS] + [c + v + c2 for c in _CONS[:6] for v in _VOWELS for c2 in "lnrst"]
    words = set()
    while len(words) < 4000:
        words.add("".join(r.choice(syl) for _ in range(r.choice((1, 2, 2, 2, 3, 3, 4)))))
    words = sorted(words)
    assert not any(SUBJECT_MARK in w or BODY_MARK in w for w in words)
    names = [w.capitalize() for w in words[:300]]
    domains = [f"{w}.{tld}" for w, tld in zip(words[300:500], ("com", "org", "net", "example", "de", "nl") * 40)]
    return words, names, domains


WORDS, NAMES, DOMAINS = _vocabulary()
EPOCH = datetime(2023, 1, 2, 8, 0, tzinfo=timezone.utc)


def _address(r):
    first, last = r.choice(NAMES), r.choice(NAMES)
    return f'"{first} {last}" <{first.lower()}.{last.lower()}@{r.choice(DOMAINS)}>'


def _para(r, nbytes):
    out, n = [], 0
    while n < nbytes:
        sentence = " ".join(r.choice(WORDS) for _ in range(r.randint(4, 14)))
        sentence = sentence.capitalize() + r.choice((".", ".", ".", "?", "!"))
        out.append(sentence)
        n += len(sentence) + 1
    # wrap at about 72 characters
    lines, line = [], ""
    for w in " ".join(out).split(" "):
        if line and len(line) + 1 + len(w) > 72:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return "\n".join(lines)


def _msgid(i):
    return f"<{i}.{i * 2654435761 % 4294967296:08x}@{DOMAINS[i % len(DOMAINS)]}>"


def make_message(i, body_size=None):
    """Message number i of the corpus: (bytes with LF line endings, maildir flag letters, date)."""
    r = random.Random(i * 7919 + 17)
    date = EPOCH + timedelta(seconds=i * 600 + r.randint(0, 599))
    tz = timezone(timedelta(hours=r.choice((-7, -5, 0, 1, 2, 9))))
    words = [r.choice(WORDS) for _ in range(r.randint(2, 9))]
    if subject_hit(i):
        words.insert(r.randint(0, len(words)), SUBJECT_MARK)
    subject = " ".join(words).capitalize()
    reply = i > 10 and r.random() < 0.3
    if reply:
        subject = "Re: " + subject
    hdr = [
        f"Return-Path: <bounce-{i}@{r.choice(DOMAINS)}>",
        f"Received: from mail.{r.choice(DOMAINS)} (mail.{r.choice(DOMAINS)} [192.0.2.{r.randint(1, 254)}])\n"
        f"\tby mx.localhost with ESMTPS id {i:x}; {date.astimezone(tz).strftime('%a, %d %b %Y %H:%M:%S %z')}",
        f"From: {_address(r)}",
        "To: Mox <mox@localhost>" + (f", {_address(r)}" if r.random() < 0.3 else ""),
    ]
    if r.random() < 0.2:
        hdr.append(f"Cc: {_address(r)}")
    hdr += [
        f"Subject: {subject}",
        f"Date: {date.astimezone(tz).strftime('%a, %d %b %Y %H:%M:%S %z')}",
        f"Message-ID: {_msgid(i)}",
    ]
    if reply:
        parent = r.randint(max(0, i - 500), i - 1)
        hdr += [f"In-Reply-To: {_msgid(parent)}", f"References: {_msgid(parent // 2)} {_msgid(parent)}"]
    if r.random() < 0.1:
        hdr.append(f"List-Id: <{r.choice(WORDS)}.lists.{r.choice(DOMAINS)}>")
    hdr.append("MIME-Version: 1.0")
    if body_size is None:
        x = r.random()
        body_size = r.randint(200, 2000) if x < 0.7 else r.randint(2000, 8000)
    text = _para(r, body_size)
    if body_hit(i):
        cut = r.randint(0, len(text))
        cut = text.rfind(" ", 0, cut) + 1
        text = text[:cut] + BODY_MARK + " " + text[cut:]
    kind = r.random()
    if kind < 0.8:
        hdr += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"]
        body = text + "\n"
    else:
        b = f"----=_Part_{i}_{r.randint(0, 10**9)}"
        hdr.append(f'Content-Type: multipart/{"alternative" if kind < 0.96 else "mixed"}; boundary="{b}"')
        html = "<html><body><p>" + text.replace("\n\n", "</p><p>") + "</p></body></html>"
        parts = [f"--{b}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"]
        if kind < 0.96:
            parts.append(f"--{b}\nContent-Type: text/html; charset=utf-8\n\n{html}\n")
        else:
            raw = r.randbytes(r.randint(8000, 30000))
            enc = base64.b64encode(raw).decode()
            enc = "\n".join(enc[k:k + 76] for k in range(0, len(enc), 76))
            name = r.choice(WORDS) + ".pdf"
            parts.append(f"--{b}\nContent-Type: application/pdf; name=\"{name}\"\n"
                         f"Content-Disposition: attachment; filename=\"{name}\"\n"
                         f"Content-Transfer-Encoding: base64\n\n{enc}\n")
        body = "".join(parts) + f"--{b}--\n"
    flags = ""
    x = r.random()
    if x < 0.1:
        flags = "RS"
    elif x < 0.75:
        flags = "S"
    if r.random() < 0.05:
        flags = "F" + flags
    data = ("\n".join(hdr) + "\n\n" + body).encode()
    return data, flags, date


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def write_corpus(directory, n):
    """Message files 0..n-1 and meta.tsv (flags, unix date); returns total bytes."""
    os.makedirs(directory)
    total = 0
    with open(os.path.join(directory, "meta.tsv"), "w") as meta:
        for i in range(n):
            data, flags, date = make_message(i)
            with open(os.path.join(directory, str(i)), "wb") as f:
                f.write(data)
            meta.write(f"{i}\t{flags}\t{int(date.timestamp())}\t{len(data)}\n")
            total += len(data)
    return total


def read_meta(directory):
    out = []
    with open(os.path.join(directory, "meta.tsv")) as f:
        for line in f:
            i, flags, ts, size = line.rstrip("\n").split("\t")
            out.append((int(i), flags, int(ts), int(size)))
    return out


# -- process memory ------------------------------------------------------------------


def process_tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_memory(root):
    """(summed RSS kB, summed PSS kB, number of processes) of root and its descendants."""
    pids = process_tree(root)
    return (sum(status_kb(p, "VmRSS") for p in pids), sum(pss_kb(p) for p in pids), len(pids))


# -- a minimal IMAP client -----------------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


class Client:
    """Blocking IMAP client on a raw socket: sends commands, reads to the tagged reply.

    Untagged responses are counted (and optionally kept); literals are skipped over by
    their announced size. Big responses without literals are scanned with bytes.count,
    so reading 100,000 FETCH lines costs the client little."""

    def __init__(self, port, timeout=600, source_ip=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source_ip, 0) if source_ip else None)
        self.buf = bytearray()
        self.pos = 0
        self.ntag = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise BenchError(f"IMAP greeting: {greeting[:200]!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        if self.pos > 1 << 20:
            del self.buf[:self.pos]
            self.pos = 0
        data = self.sock.recv(1 << 20)
        if not data:
            raise BenchError("server closed the connection")
        self.buf += data

    def _line(self):
        """One logical line (literals inlined), without CRLF."""
        parts = []
        while True:
            nl = self.buf.find(b"\r\n", self.pos)
            while nl < 0:
                self._fill()
                nl = self.buf.find(b"\r\n", self.pos)
            line = bytes(self.buf[self.pos:nl])
            self.pos = nl + 2
            parts.append(line)
            m = _LITERAL.search(line)
            if not m:
                return b"\r\n".join(parts) if len(parts) > 1 else parts[0]
            n = int(m.group(1))
            while len(self.buf) - self.pos < n:
                self._fill()
            parts.append(bytes(self.buf[self.pos:self.pos + n]))
            self.pos += n

    def send(self, data):
        self.sock.sendall(data)

    def command(self, cmd, keep=False, literal=None):
        """Send `cmd` (str); returns (untagged count, untagged lines if keep, bytes read)."""
        self.ntag += 1
        tag = f"T{self.ntag}".encode()
        if literal is None:
            self.send(tag + b" " + cmd.encode() + b"\r\n")
        else:
            self.send(tag + b" " + cmd.encode() + f" {{{len(literal)}}}\r\n".encode())
            line = self._line()
            if not line.startswith(b"+"):
                raise BenchError(f"{cmd}: expected continuation, got {line[:200]!r}")
            self.send(literal + b"\r\n")
        start = self.pos
        got = 0
        untagged = 0
        lines = []
        tagsp = tag + b" "
        while True:
            if keep:
                line = self._line()
                if line.startswith(tagsp):
                    return self._done(cmd, line, untagged, lines, got + self.pos - start)
                if line.startswith(b"* "):
                    untagged += 1
                    lines.append(line)
                continue
            # fast path: complete lines without literals are counted in C
            end = self.buf.rfind(b"\r\n", self.pos)
            if end < 0:
                got += self.pos - start
                self._fill()
                start = self.pos
                continue
            region = bytes(self.buf[self.pos:end + 2])
            if b"}\r\n" not in region:
                t = region.find(b"\r\n" + tagsp)
                if region.startswith(tagsp):
                    t = -2
                if t == -1:
                    untagged += region.count(b"\r\n* ") + region.startswith(b"* ")
                    self.pos = end + 2
                    continue
                head = region[:t + 2]
                untagged += head.count(b"\r\n* ") + head.startswith(b"* ")
                self.pos += t + 2
                line = self._line()
                return self._done(cmd, line, untagged, lines, got + self.pos - start)
            # slow path until past this region's literals
            while self.pos < end + 2:
                line = self._line()
                if line.startswith(tagsp):
                    return self._done(cmd, line, untagged, lines, got + self.pos - start)
                if line.startswith(b"* "):
                    untagged += 1

    def _done(self, cmd, line, untagged, lines, nbytes):
        status = line.split(b" ", 2)[1:2]
        if status != [b"OK"]:
            raise BenchError(f"{cmd[:60]}: {line[:300].decode(errors='replace')}")
        return untagged, lines, nbytes


def exists_of(lines):
    for line in lines:
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            return int(m.group(1))
    return None


def search_hits(lines):
    for line in lines:
        if line.startswith(b"* SEARCH"):
            return len(line.split()) - 2
    return None


def login(port, source_ip=None, timeout=600):
    c = Client(port, timeout=timeout, source_ip=source_ip)
    c.command(f'LOGIN {USER} "{PASSWORD}"')
    return c


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# -- servers -------------------------------------------------------------------------

class Server(abc.ABC):
    name = "?"

    def check(self):
        """Raise BenchError naming what to install when a dependency is missing."""

    @abc.abstractmethod
    def fill(self, corpus, meta):
        ...

    @abc.abstractmethod
    def start(self):
        """Start; return the IMAP port."""
        ...

    @abc.abstractmethod
    def root_pid(self):
        ...

    @abc.abstractmethod
    def deliverers(self):
        """[(label, callable(data) that delivers one message to the INBOX, or raises)]."""
        ...

    @abc.abstractmethod
    def stop(self):
        ...

    def version(self):
        return ""


FILL_HELPER = r'''
import os, sys, time
from datetime import datetime, timezone
from twisted.internet import defer, task
from moxtw.store import Store
from moxtw.store.model import INBOX

data_dir, corpus, concurrency, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Filling is not measured: skip the per-file fsyncs (SQLite still syncs each commit), then
# one sync() at the end so that write-back does not disturb the measurements.
os.fsync = lambda fd: None
LETTERS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged"}
meta = []
with open(os.path.join(corpus, "meta.tsv")) as f:
    for line in f:
        i, flags, ts, size = line.rstrip("\n").split("\t")
        meta.append((int(i), tuple(LETTERS[c] for c in flags), int(ts)))

@defer.inlineCallbacks
def main(reactor):
    store = Store(data_dir, reactor=reactor)
    acc = yield store.open_account("mox")
    if (yield acc.mailbox(INBOX)) is None:
        yield acc.create_mailbox(INBOX)
    todo = iter(range(0, len(meta), chunk))
    done = [0]
    t0 = time.monotonic()

    @defer.inlineCallbacks
    def worker():
        for start in todo:
            items = []
            for i, flags, ts in meta[start:start + chunk]:
                with open(os.path.join(corpus, str(i)), "rb") as f:
                    items.append((f.read(), flags, datetime.fromtimestamp(ts, timezone.utc)))
            yield acc.append_many(INBOX, items)
            before = done[0]
            done[0] += len(items)
            if done[0] // 10000 != before // 10000:
                print(f"filled {done[0]} in {time.monotonic() - t0:.0f} s", flush=True)

    yield defer.gatherResults([worker() for _ in range(concurrency)], consumeErrors=True)
    mb = yield acc.mailbox(INBOX)
    print(f"inbox now has {mb.total if hasattr(mb, 'total') else '?'} messages", flush=True)
    yield store.close()
    os.sync()

task.react(main)
'''


class Moxtw(Server):
    name = "moxtw"
    PORTS = (25, 587, 465, 143, 993, 80, 443, 8010)

    def __init__(self, base, src=None):
        self.twistd = os.path.join(REPO, ".venv", "bin", "twistd")
        self.python = os.path.join(REPO, ".venv", "bin", "python")
        self.dir = os.path.join(base, "moxtw")
        self.logpath = os.path.join(base, "moxtw.log")
        self.proc = None
        self.smtp = None
        self.env = dict(os.environ)
        if src:
            self.env["PYTHONPATH"] = os.path.abspath(src) + (
                os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")

    def check(self):
        if not os.access(self.twistd, os.X_OK):
            raise BenchError(f"{self.twistd} not found: create the venv first (`make run` or "
                             "`python3 -m venv .venv && .venv/bin/pip install -e .`)")

    def version(self):
        r = run_cmd([self.python, "-c", "import sys, twisted, moxtw; print('moxtw', getattr(moxtw, '__version__', '?'),"
                     " 'from', moxtw.__file__.rsplit('/', 2)[0], '/ Twisted', twisted.__version__,"
                     " '/ Python', sys.version.split()[0])"], timeout=60, env=self.env, cwd="/")
        return r.stdout.decode().strip()

    def _offset(self):
        for offset in range(20000, 40000, 97):
            if all(port_free(p + offset) for p in self.PORTS):
                return offset
        raise BenchError("no free port offset for moxtw localserve")

    def fill(self, corpus, meta, concurrency=4, chunk=250):
        code = ("import sys; from moxtw import localserve; "
                "localserve.prepare(sys.argv[1], ip='127.0.0.1', port_offset=int(sys.argv[2]))")
        r = run_cmd([self.python, "-c", code, self.dir, "30000"], timeout=300, env=self.env, cwd=self.dir
                    if os.path.isdir(self.dir) else "/")
        if r.returncode != 0:
            raise BenchError(f"localserve.prepare failed:\n{r.stdout.decode(errors='replace')[-3000:]}")
        data_dir = os.path.join(self.dir, "data")
        if not os.path.isdir(data_dir):
            raise BenchError(f"localserve.prepare made no {data_dir}")
        fill_log = os.path.join(os.path.dirname(self.dir), "moxtw-fill.log")
        with open(fill_log, "wb") as out:
            p = subprocess.Popen([self.python, "-c", FILL_HELPER, data_dir, corpus, str(concurrency), str(chunk)],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                 cwd="/", start_new_session=True)
            try:
                rc = p.wait()
            finally:
                if p.poll() is None:
                    stop_child(p, grace=20.0)
        if rc != 0:
            raise BenchError(f"moxtw fill helper failed ({rc}):\n{tail(fill_log, 30)}")

    def start(self):
        offset = self._offset()
        self.imap_port = 143 + offset
        self.smtp_port = 25 + offset
        self.logf = open(self.logpath, "ab")
        cmd = [self.twistd, "-n", "--pidfile=", "moxtw", "localserve", "--dir", self.dir,
               "--ip", "127.0.0.1", "--port-offset", str(offset)]
        self.proc = subprocess.Popen(cmd, cwd=os.path.dirname(self.dir), stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=self.env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"moxtw localserve exited during startup:\n{tail(self.logpath)}")
            with open(self.logpath, "rb") as f:
                if b"listening:" in f.read():
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"moxtw localserve did not print 'listening:' in 120 s:\n{tail(self.logpath)}")
            time.sleep(0.1)
        return self.imap_port

    def root_pid(self):
        return self.proc.pid

    def deliverers(self):
        def smtp_deliver(data):
            if self.smtp is None:
                self.smtp = smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="bench.localhost", timeout=60)
                self.smtp.ehlo()
            self.smtp.sendmail("bench@example.org", ["mox@localhost"], crlf(data))
        return [("SMTP to localserve", smtp_deliver)]

    def stop(self):
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.smtp = None
        if self.proc is not None:
            stop_child(self.proc, grace=20.0)
            self.proc = None
            self.logf.close()


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, base, connections):
        self.top = os.path.join(base, "dovecot")
        self.dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.lda = "/usr/lib/dovecot/dovecot-lda"
        self.conf = os.path.join(self.top, "dovecot.conf")
        self.logpath = os.path.join(self.top, "dovecot.log")
        self.maildir = os.path.join(self.top, "mail", USER, "Maildir")
        self.connections = connections
        self.proc = None
        self.seq = 0

    def check(self):
        if not os.access(self.dovecot, os.X_OK):
            raise BenchError("dovecot not found: DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd")
        if not os.access("/usr/lib/dovecot/imap", os.X_OK):
            raise BenchError("Dovecot's IMAP server is missing: DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd")
        if os.geteuid() != 0:
            raise BenchError("the Dovecot comparison must run as root (dovecot -c CONF -F)")
        try:
            self.owner = pwd.getpwnam("nobody")
            pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
        except KeyError as e:
            raise BenchError(f"missing user {e}: reinstall the dovecot-core package")

    def version(self):
        r = run_cmd([self.dovecot, "--version"], timeout=30)
        return "Dovecot " + r.stdout.decode().strip()

    def _config(self, port):
        limit = self.connections + 200
        uid, gid = self.owner.pw_uid, self.owner.pw_gid
        home = os.path.join(self.top, "mail", USER)
        with open(os.path.join(self.top, "passwd"), "w") as f:
            f.write(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n")
        conf = f"""\
# throwaway configuration written by bench/imap.py
base_dir = {self.top}/run
state_dir = {self.top}/state
log_path = {self.logpath}
info_log_path = {self.logpath}
instance_name = moxtw-bench-{os.getpid()}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.top}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.top}/passwd
}}
default_process_limit = {limit}
default_client_limit = {2 * limit + 1000}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = {limit}
}}
service imap {{
  process_limit = {limit}
}}
service anvil {{
  client_limit = {2 * limit + 1000}
}}
service auth {{
  client_limit = {2 * limit + 1000}
}}
protocol imap {{
  mail_max_userip_connections = {limit}
}}
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    def fill(self, corpus, meta):
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub))
        uid, gid = self.owner.pw_uid, self.owner.pw_gid
        now = int(time.time())
        cur = os.path.join(self.maildir, "cur")
        for i, flags, ts, size in meta:
            name = f"{ts}.M{i}P1.bench,S={size}:2,{''.join(sorted(flags))}"
            path = os.path.join(cur, name)
            shutil.copyfile(os.path.join(corpus, str(i)), path)
            os.chown(path, uid, gid)
            os.utime(path, (now, ts))  # maildir: the file's mtime is the INTERNALDATE
        for d, _dirs, files in os.walk(os.path.join(self.top, "mail")):
            os.chown(d, uid, gid)

    def start(self):
        os.chmod(self.top, 0o755)
        port = free_port()
        self._config(port)
        self.port = port
        self.proc = subprocess.Popen([self.dovecot, "-c", self.conf, "-F"], cwd=self.top,
                                     stdout=open(os.path.join(self.top, "stdout.log"), "wb"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"dovecot exited during startup ({self.proc.returncode}):\n"
                                 f"{tail(os.path.join(self.top, 'stdout.log'))}\n{tail(self.logpath)}")
            try:
                Client(port, timeout=5).close()
                break
            except (OSError, BenchError):
                if time.monotonic() > deadline:
                    raise BenchError(f"dovecot not accepting IMAP on 127.0.0.1:{port} after 60 s:\n{tail(self.logpath)}")
                time.sleep(0.1)
        return port

    def root_pid(self):
        return self.proc.pid

    def deliverers(self):
        uid, gid = self.owner.pw_uid, self.owner.pw_gid

        def lda(data):
            r = subprocess.run([self.lda, "-c", self.conf, "-d", USER, "-f", "bench@example.org"], input=data,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if r.returncode != 0:
                raise BenchError(f"dovecot-lda exited {r.returncode}: {r.stdout.decode(errors='replace')[-500:]}")

        def maildir(data):
            self.seq += 1
            name = f"{int(time.time())}.M{self.seq}P{os.getpid()}.bench"
            tmp = os.path.join(self.maildir, "tmp", name)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(self.maildir, "new", name))

        return [("dovecot-lda", lda), ("file into Maildir/new", maildir)]

    def stop(self):
        if self.proc is None:
            return
        pids = process_tree(self.proc.pid)
        stop_child(self.proc, grace=20.0)
        for pid in pids[1:]:  # leftovers of our own instance only
            if os.path.exists(f"/proc/{pid}"):
                kill_pid(pid, grace=2)
        self.proc = None


# -- measurements --------------------------------------------------------------------

class Result:
    def __init__(self, server):
        self.server = server
        self.rows = {}     # key -> dict(first=, rest=[...], unit=, note=)
        self.info = []
        self.errors = []

    def add(self, key, first=None, rest=(), note=""):
        self.rows[key] = dict(first=first, rest=list(rest), note=note)

    def value(self, key, which):
        row = self.rows.get(key)
        if row is None:
            return None
        if which == "first":
            return row["first"]
        return statistics.median(row["rest"]) if row["rest"] else None


def measure_fetch_like(res, port, key, cmd, expect, repeat, select="INBOX", timeout=600, check="untagged"):
    c = login(port, timeout=timeout)
    try:
        c.command(f"SELECT {select}")
        runs, note = [], ""
        for k in range(repeat):
            keep = check == "search"
            dt, (n, lines, nbytes) = timed(lambda: c.command(cmd, keep=keep))
            runs.append(dt)
            got = search_hits(lines) if keep else n
            if got != expect:
                note = f"got {got}, expected {expect}"
            elif not note:
                note = (f"{got} hits" if keep else f"{n} responses, {nbytes / 1e6:.1f} MB")
            log(f"  {res.server}: {key}: {dt:.3f} s ({note})")
        res.add(key, runs[0], runs[1:], note)
    finally:
        c.close()


def measure_select(res, port, expect, repeat, timeout):
    runs = []
    note = ""
    for k in range(repeat):
        c = login(port, timeout=timeout)
        try:
            dt, (n, lines, nbytes) = timed(lambda: c.command("SELECT INBOX", keep=True))
        finally:
            c.close()
        ex = exists_of(lines)
        runs.append(dt)
        if ex != expect:
            note = f"EXISTS {ex}, expected {expect}"
        elif not note:
            note = f"EXISTS {ex}"
        log(f"  {res.server}: SELECT #{k + 1}: {dt:.3f} s ({note})")
    res.add("SELECT INBOX", runs[0], runs[1:], note)


def measure_append(res, port, count, timeout):
    data = crlf(make_message(10**7, body_size=APPEND_SIZE - 900)[0])
    c = login(port, timeout=timeout)
    try:
        c.command("CREATE Appended")
        msgs = []
        for k in range(count):
            m = data.replace(b"Message-ID: <", f"Message-ID: <append{k}.".encode(), 1)
            msgs.append(m)
        t0 = time.perf_counter()
        for m in msgs:
            c.command("APPEND Appended", literal=m)
        dt = time.perf_counter() - t0
        n, lines, _ = c.command("STATUS Appended (MESSAGES)", keep=True)
        got = re.search(rb"MESSAGES (\d+)", b" ".join(lines))
        got = int(got.group(1)) if got else None
        note = f"{count} x {len(data)} bytes in {dt:.2f} s" + ("" if got == count else f"; STATUS says {got}")
        res.add("APPEND /s", count / dt, (), note)
        log(f"  {res.server}: APPEND: {count / dt:.1f}/s ({note})")
    finally:
        c.close()


class IdleWatcher(threading.Thread):
    """Reads an IDLE connection; puts (monotonic time, n) for each EXISTS on a queue."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.q = queue.Queue()

    def run(self):
        try:
            while True:
                line = self.client._line()
                t = time.perf_counter()
                m = re.match(rb"\* (\d+) EXISTS", line)
                if m:
                    self.q.put((t, int(m.group(1))))
        except Exception as e:  # connection closed at the end, or an error: reported by the waiter
            self.q.put((None, e))


def measure_idle_latency(res, server, port, deliveries, timeout):
    for label, deliver in server.deliverers():
        key = f"IDLE EXISTS latency ({label}) ms"
        c = login(port, timeout=timeout)
        watcher = None
        try:
            n, lines, _ = c.command("SELECT INBOX", keep=True)
            count = exists_of(lines)
            c.ntag += 1
            c.send(f"T{c.ntag} IDLE\r\n".encode())
            line = c._line()
            if not line.startswith(b"+"):
                raise BenchError(f"IDLE: {line[:200]!r}")
            watcher = IdleWatcher(c)
            watcher.start()
            lat, after_ok = [], 0
            for k in range(deliveries):
                data = make_message(2 * 10**7 + k, body_size=1500)[0]
                time.sleep(0.05)
                t0 = time.perf_counter()
                deliver(data)
                t_ok = time.perf_counter()
                while True:
                    try:
                        t, got = watcher.q.get(timeout=60)
                    except queue.Empty:
                        raise BenchError(f"{label}: no EXISTS within 60 s after delivery {k + 1}")
                    if t is None:
                        raise BenchError(f"{label}: IDLE connection: {got}")
                    if got >= count + 1:
                        break
                count = got
                lat.append((t - t0) * 1000)
                after_ok += t > t_ok
            note = (f"{deliveries} deliveries; median {statistics.median(lat):.1f}, worst {max(lat):.1f}, "
                    f"best {min(lat):.1f}; EXISTS after the delivery returned: {after_ok}/{deliveries}")
            res.add(key, statistics.median(lat), [max(lat)], note)
            log(f"  {res.server}: {key}: {note}")
        except (BenchError, OSError, smtplib.SMTPException, subprocess.SubprocessError) as e:
            res.errors.append(f"{key}: {e}")
            log(f"  {res.server}: {key}: ERROR {e}")
        finally:
            try:
                c.send(b"DONE\r\n")
            except OSError:
                pass
            c.close()
            if watcher is not None:
                watcher.join(5)


def measure_idle_memory(res, server, port, connections, max_server_mb, timeout):
    root = server.root_pid()
    time.sleep(2)
    rss0, pss0, np0 = tree_memory(root)
    clients = []
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def one(k):
        if stop.is_set():
            return
        ip = f"127.0.0.{2 + k // PER_SOURCE_IP}"
        try:
            c = login(port, source_ip=ip, timeout=timeout)
            c.command("SELECT INBOX")
            c.ntag += 1
            c.send(f"T{c.ntag} IDLE\r\n".encode())
            line = c._line()
            if not line.startswith(b"+"):
                raise BenchError(f"IDLE: {line[:200]!r}")
        except (BenchError, OSError) as e:
            with lock:
                errors.append(f"connection {k} from {ip}: {e}")
                if len(errors) >= 10:
                    stop.set()
            return
        with lock:
            clients.append(c)
            if len(clients) % 100 == 0:
                rss, pss, _ = tree_memory(root)
                log(f"  {res.server}: {len(clients)} idle connections, server tree RSS {rss / 1024:.0f} MB, "
                    f"PSS {pss / 1024:.0f} MB")
                if pss / 1024 > max_server_mb:
                    errors.append(f"stopped at {len(clients)} connections: server PSS {pss / 1024:.0f} MB "
                                  f"> --max-server-mb {max_server_mb}")
                    stop.set()

    t0 = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(SETUP_THREADS) as ex:
            list(ex.map(one, range(connections)))
        setup = time.perf_counter() - t0
        time.sleep(2)
        rss1, pss1, np1 = tree_memory(root)
        n = len(clients)
        # all still there?
        alive = 0
        for c in clients:
            try:
                c.sock.setblocking(False)
                try:
                    if c.sock.recv(1, socket.MSG_PEEK) == b"":
                        continue
                except BlockingIOError:
                    pass
                alive += 1
            finally:
                c.sock.setblocking(True)
        note = (f"{n} connections opened in {setup:.1f} s ({alive} still open); tree RSS {rss0 / 1024:.0f} -> "
                f"{rss1 / 1024:.0f} MB, PSS {pss0 / 1024:.0f} -> {pss1 / 1024:.0f} MB, processes {np0} -> {np1}")
        if errors:
            res.errors.append(f"idle connections: {len(errors)} problem(s), first: {errors[0]}")
        if n:
            res.add("idle conn RSS KB/conn", (rss1 - rss0) / n, (), note)
            res.add("idle conn PSS KB/conn", (pss1 - pss0) / n, (), "(same run)")
        log(f"  {res.server}: {note}")
    finally:
        for c in clients:
            c.close()


def bench_server(server, corpus, meta, a):
    res = Result(server.name)
    n = len(meta)
    try:
        log(f"{server.name}: filling INBOX with {n} messages")
        dt, _ = timed(lambda: server.fill(corpus, meta))
        res.info.append(f"fill: {n} messages in {dt:.1f} s ({n / dt:.0f}/s; not a comparison: different methods)")
        log(f"  {res.info[-1]}")
        dt, port = timed(server.start)
        res.info.append(f"start-up: {dt:.2f} s")
        rss, pss, nproc = tree_memory(server.root_pid())
        res.info.append(f"after start-up: tree RSS {rss / 1024:.1f} MB, PSS {pss / 1024:.1f} MB, {nproc} processes")
        steps = [
            ("SELECT", lambda: measure_select(res, port, n, a.repeat + 1, a.timeout)),
            ("FLAGS", lambda: measure_fetch_like(res, port, "UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)",
                                                 n, a.repeat, timeout=a.timeout)),
            ("ENVELOPE", lambda: measure_fetch_like(res, port, "FETCH 1:* (ENVELOPE)", "FETCH 1:* (ENVELOPE)",
                                                    n, a.repeat, timeout=a.timeout)),
            ("SEARCH header", lambda: measure_fetch_like(
                res, port, "UID SEARCH HEADER Subject", f'UID SEARCH HEADER Subject "{SUBJECT_MARK}"',
                sum(map(subject_hit, range(n))), a.repeat, timeout=a.timeout, check="search")),
            ("SEARCH Message-ID", lambda: measure_fetch_like(
                res, port, "UID SEARCH HEADER Message-ID", f'UID SEARCH HEADER Message-ID "{_msgid(n // 2)}"',
                1, a.repeat, timeout=a.timeout, check="search")),
            ("SEARCH body", lambda: measure_fetch_like(
                res, port, "UID SEARCH BODY", f'UID SEARCH BODY "{BODY_MARK}"',
                sum(map(body_hit, range(n))), a.repeat, timeout=a.timeout, check="search")),
            ("SEARCH text", lambda: measure_fetch_like(
                res, port, "UID SEARCH TEXT", f'UID SEARCH TEXT "{BODY_MARK}"',
                sum(map(body_hit, range(n))), a.repeat, timeout=a.timeout, check="search")),
            ("APPEND", lambda: measure_append(res, port, a.appends, a.timeout)),
            ("IDLE latency", lambda: measure_idle_latency(res, server, port, a.deliveries, a.timeout)),
            ("IDLE memory", lambda: measure_idle_memory(res, server, port, a.connections, a.max_server_mb,
                                                        a.timeout)),
        ]
        for name, step in steps:
            try:
                step()
            except (BenchError, OSError) as e:
                res.errors.append(f"{name}: {e}")
                log(f"  {server.name}: {name}: ERROR {e}")
            if server.proc is None or server.proc.poll() is not None:
                res.errors.append(f"server exited after step {name}; log tail:\n{tail(server.logpath)}")
                break
        rss, pss, nproc = tree_memory(server.root_pid())
        res.info.append(f"at the end: tree RSS {rss / 1024:.1f} MB, PSS {pss / 1024:.1f} MB, {nproc} processes"
                        + (f", peak RSS (VmHWM) {status_kb(server.root_pid(), 'VmHWM') / 1024:.1f} MB"
                           if server.name == "moxtw" else ""))
    except BenchError as e:
        res.errors.append(str(e))
        log(f"{server.name}: ERROR {e}")
    finally:
        server.stop()
    return res


# -- output --------------------------------------------------------------------------

def fmt_table(headers, rows, left=(0,)):
    """Columns right-aligned except those in `left` (negative: from the end)."""
    n = len(headers)
    left = {i % n for i in left}
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


# key, label of the first column, of the second, unit formatter, better when lower?
ROWS = [
    ("SELECT INBOX", "first after start", "warm (median)", "s", True),
    ("UID FETCH 1:* (FLAGS)", "first", "median of rest", "s", True),
    ("FETCH 1:* (ENVELOPE)", "first", "median of rest", "s", True),
    ("UID SEARCH HEADER Subject", "first", "median of rest", "s", True),
    ("UID SEARCH HEADER Message-ID", "first", "median of rest", "s", True),
    ("UID SEARCH BODY", "first", "median of rest", "s", True),
    ("UID SEARCH TEXT", "first", "median of rest", "s", True),
    ("APPEND /s", "appends/s", "", "/s", False),
    ("IDLE EXISTS latency (SMTP to localserve) ms", "median", "worst", "ms", True),
    ("IDLE EXISTS latency (dovecot-lda) ms", "median", "worst", "ms", True),
    ("IDLE EXISTS latency (file into Maildir/new) ms", "median", "worst", "ms", True),
    ("idle conn RSS KB/conn", "KB/conn", "", "KB", True),
    ("idle conn PSS KB/conn", "KB/conn", "", "KB", True),
]


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f}"
    if unit in ("ms", "/s"):
        return f"{v:.1f}"
    return f"{v:.0f}"


def server_table(res):
    rows = []
    for key, l1, l2, unit, _ in ROWS:
        row = res.rows.get(key)
        if row is None:
            continue
        rest = res.value(key, "rest")
        rows.append([key, f"{fmt(row['first'], unit)} {unit}", f"{fmt(rest, unit)} {unit}" if rest is not None else "",
                     f"{l1}" + (f" / {l2}" if l2 else ""), row["note"]])
    return fmt_table(["measurement", "value", "value 2", "meaning", "check / detail"], rows, left=(0, -2, -1))


def ratio_table(by):
    mox, dove = by.get("moxtw"), by.get("dovecot")
    rows = []
    pairs = [(k, k, l1, l2, unit, low) for k, l1, l2, unit, low in ROWS if not k.startswith("IDLE EXISTS")]
    idle_m = "IDLE EXISTS latency (SMTP to localserve) ms"
    for dk in ("IDLE EXISTS latency (dovecot-lda) ms", "IDLE EXISTS latency (file into Maildir/new) ms"):
        pairs.append((idle_m, dk, "median", "worst", "ms", True))
    for mk, dk, l1, l2, unit, low in pairs:
        if mk not in mox.rows and dk not in dove.rows:
            continue
        cells = [mk if mk == dk else f"IDLE latency: moxtw SMTP vs {dk.split('(')[1].split(')')[0]}"]
        for which, label in (("first", l1), ("rest", l2)):
            if not label:
                cells += ["", "", ""]
                continue
            m, d = mox.value(mk, which), dove.value(dk, which)
            cells += [fmt(m, unit), fmt(d, unit), f"{m / d:.2f}" if m is not None and d else "-"]
        cells.append(f"{l1}" + (f" / {l2}" if l2 else "") + ("; < 1.00: moxtw better" if low else
                                                            "; > 1.00: moxtw better"))
        rows.append(cells)
    return fmt_table(["measurement", "moxtw", "dovecot", "ratio", "moxtw 2", "dovecot 2", "ratio 2",
                      "columns; ratio = moxtw / dovecot"], rows, left=(0, -1))


def machine_facts(base, servers, a, corpus_bytes, n):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1])
    lines = [
        f"nproc: {len(os.sched_getaffinity(0))}, CPU: {cpu}, memory: {mem / 1024 / 1024:.1f} GB, "
        f"kernel: {platform.release()}",
        f"benchmark script Python: {platform.python_version()} ({sys.executable})",
        f"temp dir: {base}, filesystem: {fs_type(base)}",
        f"load average at start: {loadavg()} (other work on the machine skews the figures)",
        f"corpus: {n} messages, {corpus_bytes / 1e6:.1f} MB (LF line endings), {a.repeat} timed runs per "
        f"command, {a.appends} appends of {APPEND_SIZE // 1024} KB, {a.deliveries} IDLE deliveries, "
        f"{a.connections} idle connections",
    ]
    for s in servers:
        try:
            lines.append(f"{s.name}: {s.version()}")
        except Exception as e:  # a version string is not worth failing for
            lines.append(f"{s.name}: version unknown ({e})")
    return "\n".join(lines)


NOTES = """\
What the figures mean:
  times            seconds from sending the command to reading its tagged OK, over loopback, on a
                   connection that has INBOX selected (SELECT: a fresh logged-in connection).
                   "first" is the first run after the server started; for Dovecot the first SELECT
                   builds its index from the Maildir (moxtw's index was built at delivery) and the
                   first FETCH ENVELOPE / SEARCH read message files into its cache.
  SEARCH           HEADER Subject "xyzzy" (about 1 in 997 subjects), HEADER Message-ID (one
                   message), BODY "plugh" (about 1 in 1009 bodies) and TEXT "plugh" (header or
                   body): substring searches; the hit count is checked against the corpus.
                   Dovecot has no full-text index configured (the Debian default): it reads files.
  APPEND /s        sequential APPENDs of 10 KB on one connection, each waiting for its tagged OK
                   (moxtw: file and index fsynced; Dovecot: default mail_fsync=optimized).
  IDLE latency     milliseconds from starting a delivery until "* n EXISTS" reached the IDLE client.
                   moxtw: SMTP transaction on a persistent connection; Dovecot: dovecot-lda process
                   per message (includes its start-up), or a file renamed into Maildir/new.
                   Dovecot waits a fixed 0.5 s after a change before notifying (NOTIFY_DELAY_MSECS
                   in src/lib-storage/mailbox-watch.c), so its figure is about 500 ms by design.
  KB/conn          growth of the server's process tree memory (summed RSS; summed PSS) divided by
                   the idle connections opened (LOGIN, SELECT INBOX, IDLE). Dovecot runs one imap
                   process per connection (default client_limit=1, no hibernation), so its RSS
                   counts shared libraries again per process; PSS divides them.
  ratio            moxtw / dovecot: for times and memory below 1.00 moxtw is better, for appends/s
                   above 1.00. Single runs on a shared VM vary: use --repeat."""


# -- imaptest stress ---------------------------------------------------------------

STRESS_CLIENTS = (10, 50)


def find_imaptest():
    path = os.environ.get("MOXTW_IMAPTEST") or os.path.join(REPO, "..", "shared", "imaptest", "imaptest")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        raise BenchError(f"imaptest not found at {path} (set MOXTW_IMAPTEST)")
    return path


def write_stress_mbox(path, count=300):
    """Messages with distinct Message-IDs: imaptest's consistency checks need them."""
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"From sender@example.org Fri Feb 22 17:06:23 2008\nFrom: sender{i % 17}@example.org\n"
                    f"To: {USER}\nSubject: stress {i} topic {i % 23}\nMessage-ID: <stress{i}@example.org>\n"
                    f"Date: Fri, 22 Feb 2008 17:{i % 60:02d}:23 +0200\n\nbody {i}\n" + "filler line\n" * (i % 40) + "\n")


def imaptest_stress(binary, port, mbox, clients, secs, timeout):
    """(commands per second, error lines) of one imaptest stress run."""
    r = subprocess.run([binary, "host=127.0.0.1", f"port={port}", f"user={USER}", f"pass={PASSWORD}",
                        f"mbox={mbox}", f"clients={clients}", f"secs={secs}", "logout=0"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    text = r.stdout.decode("utf-8", "replace")
    errors = [line for line in text.splitlines() if "Error:" in line]
    lines = text.splitlines()
    if "Totals:" not in lines:
        raise BenchError(f"imaptest printed no totals (exit {r.returncode}): {text[-500:]}")
    rows = lines[lines.index("Totals:") + 1:]
    counts = [ln for ln in rows if ln.strip() and all(w.isdigit() for w in ln.split())]
    if not counts:
        raise BenchError(f"imaptest totals without counts: {text[-500:]}")
    return sum(int(w) for w in counts[-1].split()) / secs, errors


def run_stress(a, candidates, base):
    """imaptest's stress run (random commands from concurrent clients, with its
    consistency checks) against each server: commands/s, median of --repeat runs, and the
    error count of all runs."""
    binary = find_imaptest()
    mbox = os.path.join(base, "stress.mbox")
    write_stress_mbox(mbox)
    print("== imaptest stress (bench/imap.py --stress) ==")
    print(f"imaptest {binary}; clients {', '.join(map(str, STRESS_CLIENTS))}; {a.stress_secs} s per run; "
          f"median of {a.repeat}; an mbox of 300 messages with distinct Message-IDs")
    results = {}
    for name in a.only:
        s = candidates[name]()
        try:
            s.check()
            corpus = os.path.join(base, f"corpus-{name}")
            write_corpus(corpus, 1)
            s.fill(corpus, read_meta(corpus))
            port = s.start()
            for clients in STRESS_CLIENTS:
                rates, errors = [], 0
                for i in range(a.repeat):
                    rate, errs = imaptest_stress(binary, port, mbox, clients, a.stress_secs, a.stress_secs * 4 + 120)
                    rates.append(rate)
                    errors += len(errs)
                    log(f"{name} clients={clients} run {i + 1}: {rate:.0f} commands/s, {len(errs)} errors"
                        + (f" (first: {errs[0][:160]})" if errs else ""))
                results[(name, clients)] = (statistics.median(rates), errors)
        except BenchError as e:
            print(f"{name}: not measured: {e}")
        finally:
            s.stop()
    print()
    print(f"{'server':<10}{'clients':>8}{'commands/s':>12}{'errors':>8}{'vs dovecot':>12}")
    for (name, clients), (rate, errors) in sorted(results.items()):
        peer = results.get(("dovecot", clients))
        ratio = f"{rate / peer[0]:.2f}" if peer and name != "dovecot" and peer[0] else ""
        print(f"{name:<10}{clients:>8}{rate:>12.0f}{errors:>8}{ratio:>12}")
    return 0 if results and all(e == 0 for _, e in results.values()) else 1


# -- main ----------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="IMAP on a large mailbox over loopback: moxtw vs Dovecot",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    ap.add_argument("--quick", action="store_true",
                    help="5,000 messages, 200 idle connections, 20 IDLE deliveries, 200 appends")
    ap.add_argument("--only", action="append", help="moxtw or dovecot (repeatable or comma separated)")
    ap.add_argument("--messages", type=int, help="messages in the INBOX (default 100000; 5000 with --quick)")
    ap.add_argument("--connections", type=int, help="idle connections (default 2000; 200 with --quick)")
    ap.add_argument("--deliveries", type=int, help="IDLE latency samples per delivery method (default 50; 20 with --quick)")
    ap.add_argument("--appends", type=int, help="APPENDs timed (default 500; 200 with --quick)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each command (default 3)")
    ap.add_argument("--timeout", type=int, default=900, help="socket timeout in seconds for each command")
    ap.add_argument("--max-server-mb", type=int, default=12000,
                    help="stop opening idle connections when the server tree's summed PSS passes this (default 12000)")
    ap.add_argument("--tmpdir", help="where the temp directory goes (a real disk: fsync matters)")
    ap.add_argument("--moxtw-src", help="moxtw source tree to run instead of the venv's (put first on PYTHONPATH)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (for looking at logs)")
    ap.add_argument("--stress", action="store_true",
                    help="only imaptest's stress run (clients 10 and 50) against each server, commands/s and errors")
    ap.add_argument("--stress-secs", type=int, default=20, help="seconds per stress run (default 20)")
    a = ap.parse_args(argv)
    only = []
    for o in a.only or SERVERS:
        only += [x.strip() for x in o.split(",") if x.strip()]
    bad = [o for o in only if o not in SERVERS]
    if bad:
        ap.error(f"--only: unknown server {bad}; choose from {', '.join(SERVERS)}")
    a.only = [s for s in SERVERS if s in only]
    a.messages = a.messages or (5000 if a.quick else 100000)
    a.connections = a.connections if a.connections is not None else (200 if a.quick else 2000)
    a.deliveries = a.deliveries or (20 if a.quick else 50)
    a.appends = a.appends or (200 if a.quick else 500)
    if a.repeat < 2:
        ap.error("--repeat: at least 2 (the first run is reported separately)")
    return a


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(need, soft)))
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want != resource.RLIM_INFINITY and want < need:
        log(f"WARNING: open files limit {want} (hard {hard}) is below the {need} needed; raise it with ulimit -Hn")


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    raise_nofile(2 * a.connections + 1000)

    base = tempfile.mkdtemp(prefix="moxtw-bench-imap-", dir=a.tmpdir)
    os.chmod(base, 0o755)  # Dovecot's processes (user nobody, dovenull) must traverse it
    if "tmpfs" in fs_type(base):
        log(f"WARNING: {base} is on tmpfs: fsync costs nothing there; use --tmpdir on a real disk")
    candidates = {"moxtw": lambda: Moxtw(base, a.moxtw_src), "dovecot": lambda: Dovecot(base, a.connections)}
    if a.stress:
        try:
            return run_stress(a, candidates, base)
        except BenchError as e:
            print(f"stress not run: {e}")
            return 1
        finally:
            if not a.keep:
                shutil.rmtree(base, ignore_errors=True)
    servers, skipped, results = [], [], {}
    try:
        for name in a.only:
            s = candidates[name]()
            try:
                s.check()
                servers.append(s)
            except BenchError as e:
                skipped.append(f"{name}: not measured: {e}")
                log(skipped[-1])
        corpus = os.path.join(base, "corpus")
        log(f"writing the corpus: {a.messages} messages")
        dt, corpus_bytes = timed(lambda: write_corpus(corpus, a.messages))
        log(f"  corpus written in {dt:.1f} s, {corpus_bytes / 1e6:.1f} MB")
        meta = read_meta(corpus)
        print("== moxtw IMAP benchmark (bench/imap.py) ==")
        print(machine_facts(base, servers, a, corpus_bytes, a.messages), flush=True)
        print()
        for s in servers:
            results[s.name] = bench_server(s, corpus, meta, a)
            if a.keep:
                pass
            elif s.name == "dovecot":
                # the Maildir is large; the next server should not pay for its page cache
                shutil.rmtree(s.top, ignore_errors=True)
            else:
                shutil.rmtree(s.dir, ignore_errors=True)
        for s in servers:
            res = results[s.name]
            print(f"-- {s.name} --")
            for line in res.info:
                print(f"  {line}")
            print(server_table(res))
            for e in res.errors:
                print(f"  ERROR: {e}")
            print()
        for line in skipped:
            print(line)
        if "moxtw" in results and "dovecot" in results:
            print("-- moxtw / dovecot --")
            print(ratio_table(results))
            print()
        print(f"load average at end: {loadavg()}")
        print()
        print(NOTES)
        return 1 if skipped or any(r.errors for r in results.values()) else 0
    except KeyboardInterrupt:
        log("interrupted: stopping servers and removing temp files")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for s in servers:
            try:
                s.stop()
            except Exception as e:
                log(f"stopping {s.name}: {e}")
        if a.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
