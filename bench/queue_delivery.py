"""Benchmark: outgoing delivery throughput, one moxtw instance's queue into another over loopback.

Usage::

    .venv/bin/python bench/queue_delivery.py             # 1,000 messages of 10 KB to 50 domains
    .venv/bin/python bench/queue_delivery.py --quick     # 200 messages
    .venv/bin/python bench/queue_delivery.py --count 2000 --domains 20 --size 1024 --no-tls

(Also run as ``bench/queue.py``, which starts this script; see that file for why the
code lives here and how bench/queue.py keeps the standard library's queue module
working for every script in bench/.)

Needs ``/work/main/.venv`` with moxtw installed; nothing else (no root, no network).

Setup, all under a temp directory (removed at the end unless --keep):

* DNS: a loopback authoritative server (``moxtw.test.dnsserver.LoopbackDNS``, UDP and TCP
  on 127.0.0.1) running on a Twisted reactor in a thread of this process. It serves MX
  records for d0.example ... d49.example, all ``10 mail.b.example``, and
  ``mail.b.example A 127.0.0.1``; for the sender's side, so that B's checks of incoming
  mail pass: ``127.0.0.1 PTR mail.a.example``, ``mail.a.example A 127.0.0.1``, SPF
  ``v=spf1 ip4:127.0.0.1 -all`` at a.example and mail.a.example, ``v=DMARC1; p=reject``
  at _dmarc.a.example and the two DKIM keys the messages are signed with.
* Instance B (receiver): ``twistd -n --logger=moxtw.log.twistd_observer moxtw serve
  --config B`` with its own moxtw.toml/domains.toml and data dir, DNS pointed at the
  loopback server, an SMTP listener on a free port with STARTTLS (self-signed
  certificate; --no-tls: no TLS configured, so none offered), and the 50 domains with a
  catch-all destination ("@dN.example") each into one account "bench". B authenticates
  every incoming message (iprev, SPF, DKIM, DMARC, all pass here) and stores it (message
  file fsynced, index committed) before its 250.
  B's per-IP connection rate limit (300 connections a minute,
  ``moxtw.smtpserver.backend.CONNECTION_LIMITS``) is raised in B's process only: A makes
  one connection per message and every connection comes from 127.0.0.1, so a stock B
  refuses A with 421 after 300 connections in a clock minute and A retries 7.5 minutes
  later. B is therefore started through a tiny ``python -c`` wrapper that sets the limits
  and then runs twistd's ``run()``; --stock-limits runs B unmodified (the run then fails
  as soon as an entry is retried, above 300 messages).
* Instance A (sender): same command, with ``MOXTW_TESTING=1`` in its environment and
  ``TestDirectDeliveryPort`` set to B's SMTP port in its moxtw.toml, so direct delivery
  (MX lookup, A lookup, connect, opportunistic STARTTLS, one transaction) goes to B's port
  instead of 25. Log level info for both (logs go to files in the temp dir).
* Queue fill: before A starts, this process opens A's queue with
  ``moxtw.queue.Queue(A's data dir)`` and ``add``s --count messages of --size bytes (plus
  two DKIM-Signature header fields, RSA-2048 and ed25519, made here with
  ``moxtw.dkim.sign.Signer`` as A's submission path would), each from alice@a.example to
  one recipient, rcptN@d(N mod --domains).example. Filling is not timed.

Timed: A is started; "startup" is from spawning it until its log says it is listening
(the queue opens right after). From then until A's queue.db has no rows left and B has
all messages (files under ``accounts/bench/maildir/cur``), polled every 0.1 s read-only,
is the delivery time; msg/s = count / delivery time (also given including startup).
A delivers with at most 10 attempts in flight (``moxtw.queue.MAX_CONCURRENT``), one
transaction per message (one recipient each).

Two runs, before and after connection reuse (``moxtw.smtpclient.pool``), each with fresh
instances and data: "no reuse" starts A through a wrapper that sets the pool to one
message per connection and no limit on connections per destination (what A did before
reuse existed); "reuse" runs A unmodified (all 50 domains share B as MX host, so their
messages share its connections: at most ``PER_KEY`` at once, up to ``MAX_MESSAGES`` each).
``--mode`` runs only one of them.

Also printed: peak RSS (VmHWM from /proc, read just before stopping) of A and B; SMTP
connections B logged ("new connection", from A's start on) and deliveries A logged
("delivered to"), with the TLS versions A reported; how many of B's "message
authentication" lines say iprev, SPF, DKIM and DMARC pass; B's index row count, checked
against the files. A retried entry (temporary failure) or a missing message fails the
run loudly: no figure is printed for it, and the temp dir with both logs is kept.
"""

import argparse
import collections
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import free_port, fs_type, loadavg, log, status_kb, tail  # noqa: E402

PYTHON = os.path.join(REPO, ".venv", "bin", "python")
TWISTD = os.path.join(REPO, ".venv", "bin", "twistd")
SENDER = "alice@a.example"
ACCOUNT_B = "bench"
POLL = 0.1
FILL_CONCURRENCY = 16
# Run as root (a benchmark machine): stay root, as the moxtw user may not be able to read
# a Python installed under /root.
USER = 'User = "root"' if os.geteuid() == 0 else ""

# Raises B's connection rate limit before twistd builds the service tree (see the
# module docstring); argv after "-c CODE" is twistd's.
B_WRAPPER = """\
import sys
from moxtw.smtpserver import backend
backend.CONNECTION_LIMITS = [(60, 10**9), (3600, 10**9), (86400, 10**9)]
from twisted.scripts.twistd import run
sys.argv[0] = "twistd"
run()
"""

STATIC = """\
DataDir = "data"
LogLevel = "info"
Hostname = "{hostname}"
{user}
{extra}
[DNS]
Servers = ["{dns}"]
[Postmaster]
Account = "{postmaster}"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
{tls}
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
"""

TLS = '[Listeners.main.TLS]\nKeyCerts = [{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}]'

# Connection reuse off in A's process: one message per connection (see the docstring).
A_NO_REUSE_WRAPPER = """\
import sys
from moxtw.smtpclient import pool
pool.MAX_MESSAGES = 1
pool.PER_KEY = 10**9
from twisted.scripts.twistd import run
sys.argv[0] = "twistd"
run()
"""

DYNAMIC_A = """\
[Domains."a.example"]

[Accounts.alice]
Domain = "a.example"
[Accounts.alice.Destinations."alice@a.example"]
"""


def dynamic_b(domains):
    lines = ['[Domains."b.example"]']
    lines += [f'[Domains."{d}"]' for d in domains]
    lines += ["", f"[Accounts.{ACCOUNT_B}]", 'Domain = "b.example"',
              f'[Accounts.{ACCOUNT_B}.Destinations."postmaster@b.example"]']
    lines += [f'[Accounts.{ACCOUNT_B}.Destinations."@{d}"]' for d in domains]
    return "\n".join(lines) + "\n"


class BenchError(Exception):
    """A server did not come up, a delivery was retried or a message is missing:
    reported, never a figure."""


# -- DNS zone and messages -------------------------------------------------------------

def zone(domains, keys):
    records = {
        ("mail.b.example", "A"): ["127.0.0.1"],
        ("b.example", "MX"): [(10, "mail.b.example")],
        ("1.0.0.127.in-addr.arpa", "PTR"): ["mail.a.example"],  # B's iprev check of A
        ("mail.a.example", "A"): ["127.0.0.1"],
        ("a.example", "MX"): [(10, "mail.a.example")],
        ("a.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        ("mail.a.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        ("_dmarc.a.example", "TXT"): ["v=DMARC1; p=reject"],
    }
    for d in domains:
        records[(d, "MX")] = [(10, "mail.b.example")]
    for selector, key in keys.items():
        records[(f"{selector}._domainkey.a.example", "TXT")] = [key.dns_record]
    return records


def make_message(i, rcpt, size, signer):
    header = (
        f"From: Alice <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: queue bench {i}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-ID: <queue-bench.{i}.{time.time_ns()}@a.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = f"Message {i}: the quick brown fox jumps over the lazy dog.\r\n".encode()
    body = (line * (size // len(line) + 1))[:max(size - len(header), len(line))]
    data = header + body
    if not data.endswith(b"\r\n"):
        data = data[:-2] + b"\r\n"
    return signer.sign(data) + data


# -- the reactor of this process (DNS server, queue fill) -----------------------------

class ReactorThread:
    """The global Twisted reactor, run in a daemon thread; the main thread orchestrates."""

    def __init__(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                       name="reactor", daemon=True)

    def start(self):
        self.thread.start()

    def call(self, f, *args, **kwargs):
        """Run f on the reactor thread and wait for its (Deferred's) result."""
        from twisted.internet import threads

        return threads.blockingCallFromThread(self.reactor, f, *args, **kwargs)

    def call_coroutine(self, coro_fn, *args):
        from twisted.internet import defer

        return self.call(lambda: defer.Deferred.fromCoroutine(coro_fn(*args)))

    def stop(self):
        if self.thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self.thread.join(15)


async def fill_queue(reactor, data_dir, messages):
    """Add (message, recipient) pairs to the queue of data_dir, FILL_CONCURRENCY at a time."""
    from twisted.internet import defer

    from moxtw.queue import Queue

    q = Queue(data_dir, reactor=reactor)
    await q.open()
    try:
        sem = defer.DeferredSemaphore(FILL_CONCURRENCY)
        await defer.gatherResults(
            [sem.run(q.add, data, SENDER, [rcpt], sender_account="alice", message_id=f"bench-{i}",
                     subject=f"queue bench {i}") for i, (data, rcpt) in enumerate(messages)],
            consumeErrors=True)
        count, _ = await q.stats()
        return count
    finally:
        await q.close()


# -- moxtw processes -------------------------------------------------------------------

class Instance:
    """One moxtw server tree (config dir, data dir, log file, process)."""

    def __init__(self, name, base, smtp_port):
        self.name = name
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.smtp_port = smtp_port
        self.logpath = os.path.join(base, f"{name}.log")
        self.proc = None
        self.logf = None

    def write_config(self, static, dynamic, tls):
        os.makedirs(self.dir)
        if tls:
            from moxtw.tls import selfsigned

            selfsigned.ensure_localserve_cert(os.path.join(self.dir, "tls"))
        with open(os.path.join(self.dir, "moxtw.toml"), "w") as f:
            f.write(static)
        with open(os.path.join(self.dir, "domains.toml"), "w") as f:
            f.write(dynamic)

    def start(self, env=None, wrapper=None):
        args = ["-n", "--pidfile=", "--logger=moxtw.log.twistd_observer", "moxtw", "serve",
                "--config", self.dir]
        cmd = [PYTHON, "-c", wrapper, *args] if wrapper else [TWISTD, *args]
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=dict(os.environ, **(env or {})))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def listening(self):
        """Whether the log says the listeners are up: ports are bound before that line.
        (No test connection: B would count it.)"""
        try:
            with open(self.logpath, "rb") as f:
                return b"listening for" in f.read()
        except OSError:
            return False

    def wait_listening(self, timeout, interval=0.01):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited during startup; its log:\n{tail(self.logpath, 30)}")
            if self.listening():
                return time.monotonic()
            time.sleep(interval)
        raise BenchError(f"{self.name} not listening after {timeout} s; its log:\n{tail(self.logpath, 30)}")

    def peak_rss_kb(self):
        return status_kb(self.proc.pid, "VmHWM") if self.alive() else 0

    def stop(self, grace=30.0):
        """SIGTERM, wait, SIGKILL: only the process we started (its own session)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for {grace} s: SIGKILL")
                    self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def log_size(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def log_lines(self, needle, offset=0):
        """Lines of the log from byte ``offset`` on that contain ``needle``."""
        try:
            with open(self.logpath, "rb") as f:
                f.seek(offset)
                return [line for line in f.read().decode("utf-8", "replace").splitlines() if needle in line]
        except OSError:
            return []


def queue_state(data_dir):
    """(rows left, rows with failed attempts, one last_error) from A's queue.db, read-only;
    None when the database cannot be read right now."""
    path = os.path.join(data_dir, "queue.db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            left = con.execute("SELECT count(*) FROM msg").fetchone()[0]
            retried, error = con.execute(
                "SELECT count(*), max(last_error) FROM msg WHERE attempts > 0").fetchone()
            return left, retried, error
        finally:
            con.close()
    except sqlite3.Error:
        return None


def stored_files(data_dir):
    n = 0
    for _dir, _dirs, files in os.walk(os.path.join(data_dir, "accounts", ACCOUNT_B, "maildir", "cur")):
        n += len(files)
    return n


def indexed(data_dir):
    path = os.path.join(data_dir, "accounts", ACCOUNT_B, "index.db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM message").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


# -- the run ---------------------------------------------------------------------------

def run(a, base, rt, reuse=True):
    from moxtw.dkim.keys import generate_ed25519, generate_rsa, parse_private_key
    from moxtw.dkim.sign import SelectorKey, Signer
    from moxtw.test.dnsserver import LoopbackDNS

    domains = [f"d{i}.example" for i in range(a.domains)]
    keys = {"rsa2048": parse_private_key(generate_rsa(2048), "rsa2048"),
            "ed1": parse_private_key(generate_ed25519(), "ed1")}
    signer = Signer("a.example", [SelectorKey(n, k, header_relaxed=True, body_relaxed=True)
                                  for n, k in keys.items()])

    dns = LoopbackDNS(zone(domains, keys), reactor=rt.reactor)
    rt.call(dns.start)
    res = dict(dns=dns.address)
    A = Instance("a", base, free_port())
    B = Instance("b", base, free_port())
    instances = [A, B]
    try:
        B.write_config(
            STATIC.format(hostname="mail.b.example", extra="", user=USER, dns=dns.address, postmaster=ACCOUNT_B,
                          tls="" if a.no_tls else TLS, smtp=B.smtp_port),
            dynamic_b(domains), tls=not a.no_tls)
        A.write_config(
            STATIC.format(hostname="mail.a.example", extra=f"TestDirectDeliveryPort = {B.smtp_port}", user=USER,
                          dns=dns.address, postmaster="alice", tls="", smtp=A.smtp_port),
            DYNAMIC_A, tls=False)

        log(f"filling A's queue with {a.count} messages of {a.size} bytes")
        t = time.monotonic()
        messages = [(make_message(i, f"rcpt{i}@{domains[i % len(domains)]}", a.size, signer),
                     f"rcpt{i}@{domains[i % len(domains)]}") for i in range(a.count)]
        queued = rt.call_coroutine(fill_queue, rt.reactor, A.data, messages)
        res["fill_seconds"] = time.monotonic() - t
        res["message_bytes"] = len(messages[0][0])
        del messages
        if queued != a.count:
            raise BenchError(f"queue holds {queued} entries after adding {a.count}")

        log("starting B")
        B.start(wrapper=None if a.stock_limits else B_WRAPPER)
        B.wait_listening(120)

        log("starting A: timing")
        b_offset = B.log_size()  # B's log from here on: A's connections only, not our probe
        t_spawn = time.monotonic()
        A.start(env={"MOXTW_TESTING": "1"}, wrapper=None if reuse else A_NO_REUSE_WRAPPER)
        t_ready = A.wait_listening(120)
        deadline = t_ready + a.timeout
        last = None
        while True:
            for inst in instances:
                if not inst.alive():
                    raise BenchError(f"{inst.name} exited during the run; its log:\n{tail(inst.logpath, 30)}")
            state = queue_state(A.data)
            stored = stored_files(B.data)
            now = time.monotonic()
            if state is not None:
                left, retried, error = state
                if retried:
                    raise BenchError(f"{retried} queue entries failed temporarily and wait for a retry"
                                     f" ({left} left, {stored} stored at B); an error: {error}")
                if left == 0 and stored >= a.count:
                    t_done = now
                    break
                last = (left, stored)
            if now > deadline:
                raise BenchError(f"not done after {a.timeout} s: queue {last[0] if last else '?'} left,"
                                 f" B stored {stored}/{a.count}")
            time.sleep(POLL)

        res["startup"] = t_ready - t_spawn
        res["seconds"] = t_done - t_ready
        res["rate"] = a.count / res["seconds"]
        res["rate_with_startup"] = a.count / (t_done - t_spawn)
        res["rss_a"] = A.peak_rss_kb()
        res["rss_b"] = B.peak_rss_kb()
        res["stored"] = stored_files(B.data)
        res["indexed"] = indexed(B.data)
        if res["stored"] != a.count or res["indexed"] != a.count:
            raise BenchError(f"B has {res['stored']} message files and {res['indexed']} index rows,"
                             f" expected {a.count}")
        res["connections_b"] = len(B.log_lines("new connection from", b_offset))
        auth = B.log_lines('msg="message authentication"', b_offset)
        res["auth_b"] = len(auth)
        res["auth_pass_b"] = sum(1 for line in auth if all(
            f in line.split() for f in ("spf=pass", "dkim=a.example", "dmarc=pass", "iprev=pass")))
        delivered = A.log_lines('msg="delivered to ')
        res["delivered_a"] = len(delivered)
        res["reused_a"] = sum(1 for line in delivered if "reused=true" in line.split())
        res["tls"] = collections.Counter(
            (m.group(1) if m else "?") for m in (re.search(r"\btls=(\S+)", line) for line in delivered))
        return res
    finally:
        for inst in instances:
            inst.stop()
        try:
            rt.call(dns.stop)
        except Exception as e:  # the figures are printed regardless
            log(f"stopping the DNS server: {e}")


def report(a, base, runs):
    print("== moxtw outgoing queue benchmark (bench/queue_delivery.py) ==")
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    first = next(iter(runs.values()))
    print(f"nproc: {len(os.sched_getaffinity(0))}, CPU: {cpu}, kernel {platform.release()}, "
          f"Python {platform.python_version()}")
    print(f"temp dir: {base}, filesystem: {fs_type(base)}")
    print(f"load average at start: {first.get('load_start', '?')} (other work on the machine skews the figures)")
    print("DNS: LoopbackDNS in the benchmark process; B's connection rate limit: "
          + ("stock (300/min per IP)" if a.stock_limits else "raised for this run"))
    print(f"messages: {a.count} x {a.size} bytes + DKIM signatures = {first['message_bytes']} bytes each,"
          f" to {a.domains} domains (one MX host, B), one recipient each;"
          f" STARTTLS: {'no' if a.no_tls else 'yes (opportunistic)'}")
    print()
    names = list(runs)
    rows = [
        ("queue fill (not timed)", lambda r: f"{r['fill_seconds']:.1f} s"),
        ("A startup (spawn to listening)", lambda r: f"{r['startup']:.2f} s"),
        ("delivery time (listening to queue empty + all stored at B)", lambda r: f"{r['seconds']:.2f} s"),
        ("messages delivered per second", lambda r: f"{r['rate']:.1f}"),
        ("  including A's startup", lambda r: f"{r['rate_with_startup']:.1f}"),
        ("B: SMTP connections from A", lambda r: f"{r['connections_b']}"),
        ("A: deliveries logged / on a reused connection", lambda r: f"{r['delivered_a']} / {r['reused_a']}"),
        ("peak RSS of A (VmHWM)", lambda r: f"{r['rss_a'] / 1024:.1f} MB"),
        ("peak RSS of B (VmHWM)", lambda r: f"{r['rss_b'] / 1024:.1f} MB"),
        ("B: message files / index rows", lambda r: f"{r['stored']} / {r['indexed']}"),
        ("B: messages authenticated / all pass", lambda r: f"{r['auth_b']} / {r['auth_pass_b']}"),
        ("A: TLS of the deliveries", lambda r: ", ".join(f"{k} x{v}" for k, v in sorted(r["tls"].items())) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    colw = [max(len(n), max(len(f(runs[n])) for _, f in rows)) for n in names]
    print(" " * width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, colw)))
    for k, f in rows:
        print(k.ljust(width) + "  " + "  ".join(f(runs[n]).rjust(w) for n, w in zip(names, colw)))
    print()
    print(f"load average at end: {loadavg()}")
    print("A runs at most 10 deliveries at once; both servers log at info level to files."
          " Single runs on a shared machine vary: repeat before comparing.")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="200 messages")
    ap.add_argument("--count", type=int, help="messages (default 1000; 200 with --quick)")
    ap.add_argument("--size", type=int, default=10 * 1024, help="message size before signing (default 10240)")
    ap.add_argument("--domains", type=int, default=50, help="recipient domains (default 50)")
    ap.add_argument("--no-tls", action="store_true", help="B offers no STARTTLS")
    ap.add_argument("--stock-limits", action="store_true",
                    help="run B without raising its 300/min connection limit per IP")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed for the delivery")
    ap.add_argument("--tmpdir", help="where the temp directory goes (a real disk: fsync matters)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (configs, data, logs)")
    ap.add_argument("--mode", choices=["both", "no-reuse", "reuse"], default="both",
                    help="connection reuse off, on, or both runs (default)")
    a = ap.parse_args(argv)
    a.count = a.count or (200 if a.quick else 1000)
    if a.count < 1 or a.domains < 1 or a.size < 200:
        ap.error("--count and --domains must be positive, --size at least 200")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    for path in (PYTHON, TWISTD):
        if not os.access(path, os.X_OK):
            print(f"{path} not found: create the venv first (python3 -m venv .venv && "
                  ".venv/bin/pip install -e .)", file=sys.stderr)
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)

    base = tempfile.mkdtemp(prefix="moxtw-bench-queue-", dir=a.tmpdir)
    if "tmpfs" in fs_type(base):
        log(f"WARNING: {base} is on tmpfs: fsync costs nothing there; use --tmpdir on a real disk")
    load_start = loadavg()
    rt = ReactorThread()
    rt.start()
    failed = True
    try:
        runs = {}
        for mode in (["no-reuse", "reuse"] if a.mode == "both" else [a.mode]):
            log(f"run: {mode}")
            sub = os.path.join(base, mode)
            os.makedirs(sub)
            runs[mode] = run(a, sub, rt, reuse=mode == "reuse")
            runs[mode]["load_start"] = load_start
        report(a, base, runs)
        failed = False
        return 0
    except BenchError as e:
        print(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        return 130
    finally:
        rt.stop()
        if a.keep or failed:
            log(f"kept {base} (configs, data, a.log, b.log); remove it when done")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
