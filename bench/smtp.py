"""Benchmark: SMTP messages accepted per second over loopback, moxtw against Postfix and aiosmtpd.

Usage::

    python3 bench/smtp.py                 # full run: 10 KB and 1 MB, 1/10/50 sessions, 3 servers
    python3 bench/smtp.py --quick         # 10 KB only, fewer messages
    python3 bench/smtp.py --only moxtw    # one server (repeatable, or comma separated)
    python3 bench/smtp.py --count 1000 --count-large 100 --sessions 1,10,50 --repeat 3

Run as root (the throwaway Postfix instance is started with ``postfix -c DIR start``).
Needs: ``smtp-source`` and ``postfix`` (``apt-get install postfix``, with debconf answer
``postfix postfix/main_mailer_type select No configuration``), ``/work/main/.venv`` with
moxtw installed, and access to the Python package index for a throwaway venv with aiosmtpd
(or ``--aiosmtpd-venv DIR`` pointing at an existing venv that has it).  Stdlib only.

What is measured, per server, message size and number of concurrent sessions:

* Load: Postfix's ``smtp-source [-d] -s SESSIONS -m COUNT -l SIZE`` (with -d persistent
  connections, without it a new connection per message: ``--modes``; one message per
  transaction, one recipient, no pipelining) against 127.0.0.1.  The
  figure is COUNT divided by smtp-source's wall time, i.e. messages whose 250 reply to the
  end of DATA has arrived, per second.  A few warm-up messages are sent first and not
  timed.  Each (size, sessions) pair gets a freshly started server with an empty data
  directory, so memory figures and rate limiters are per row.
* moxtw: ``twistd -n --pidfile= moxtw localserve`` (plain SMTP on 25+offset, any
  recipient accepted into account "mox"); its 250 means the message file is fsynced and
  the SQLite index committed.  After each run the script checks the number of message
  files and of rows in the account's ``message`` table.  Peak memory: the process's
  VmHWM (peak RSS) read from /proc just before stopping it.  Logging is as ``make run``
  has it (``--logger=moxtw.log.twistd_observer``, logfmt lines at localserve's levels:
  a line per delivery, to a file here); that cost is included.
* postfix: a private instance (own config, queue and data directories in the temp dir,
  ``inet_interfaces = loopback-only``, no relaying, no chroot) delivering with virtual(8)
  into one Maildir.  Postfix replies 250 once cleanup(8) has fsynced the queue file;
  delivery into the Maildir (file fsynced by virtual(8)) happens afterwards.  Two figures
  are therefore printed: "accepted" (same definition as for the others: durable in the
  queue, not yet in a mailbox) and "delivered" (COUNT divided by the time from the start
  of the run until the last message file is in Maildir/new).  Memory: Postfix is many
  processes; the figure is the peak of the summed RSS of the master and all its children,
  sampled every 0.25 s (this double counts shared libraries; the PSS column, summed
  proportional set size at the end of the run, does not).
* aiosmtpd: a minimal ``aiosmtpd`` server (in a throwaway venv) whose DATA handler writes
  the message to Maildir/tmp, fsyncs it, renames it into Maildir/new and fsyncs that
  directory, in the default thread pool, before replying 250.  Memory: VmHWM.

The ratio table divides moxtw's messages/s by the others': above 1.00 moxtw is faster.
Nothing is asserted; a failed run (smtp-source error, timeout, missing messages) is
printed as such and never turned into a figure.
"""

import abc
import argparse
import os
import pwd
import grp
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    fs_type, free_port, kill_pid, loadavg, log, port_free, pss_kb, run_cmd, status_kb, stop_child, tail,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, REPO)
from moxtw.test.postfixconf import master_cf  # noqa: E402  (standard library only)
SERVERS = ("moxtw", "postfix", "aiosmtpd")
SIZES = {"10KB": 10 * 1024, "1MB": 1024 * 1024}
SENDER = "bench@example.org"
HELO = "bench-client.example.org"
WARMUP = 5


class BenchError(Exception):
    """A dependency is missing or a server did not come up: reported, not a figure."""


# -- small helpers -------------------------------------------------------------------


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_ready(port, timeout, alive=None, logpath=None, marker=None, what="server"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BenchError(f"{what} exited during startup; last output:\n{tail(logpath) if logpath else ''}")
        marked = True
        if marker and logpath:
            try:
                with open(logpath, "rb") as f:
                    marked = marker.encode() in f.read()
            except OSError:
                marked = False
        if marked and port_accepts(port):
            return
        time.sleep(0.1)
    raise BenchError(
        f"{what} not accepting connections on 127.0.0.1:{port} after {timeout} s; last output:\n"
        + (tail(logpath) if logpath else "")
    )


def count_files(path):
    n = 0
    for _dir, _dirs, files in os.walk(path):
        n += len(files)
    return n


def count_dir(path):
    try:
        with os.scandir(path) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


# -- process memory ------------------------------------------------------------------


def process_tree(root):
    """root and all its descendants, from /proc/*/stat."""
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


def tree_cpu_seconds(root):
    """CPU seconds (user + system) used so far by a process tree: each live process's own
    time plus what it reaped of exited children (cutime/cstime), so Postfix's short-lived
    smtpd/cleanup processes count too once master has waited for them."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


class TreeSampler(threading.Thread):
    """Peak of the summed VmRSS of a process tree, sampled every `interval` seconds."""

    def __init__(self, root, interval=0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_kb = 0
        self.stopping = threading.Event()

    def sample(self):
        total = sum(status_kb(p, "VmRSS") for p in process_tree(self.root))
        self.peak_kb = max(self.peak_kb, total)

    def run(self):
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        self.sample()
        return self.peak_kb


# -- servers -------------------------------------------------------------------------

class Server(abc.ABC):
    name = "?"
    recipient = "?"
    single_process = True

    def check(self):
        """Raise BenchError naming what to install when a dependency is missing."""

    def setup(self, base):
        """Once per invocation."""

    @abc.abstractmethod
    def start(self, workdir):
        """Start a fresh instance with data under workdir; return its SMTP port."""
        ...

    @abc.abstractmethod
    def root_pid(self):
        ...

    @abc.abstractmethod
    def stored(self):
        """Number of messages durably stored in the mailbox right now."""
        ...

    def indexed(self):
        return None

    def settle(self, timeout):
        """Wait until work left over from the messages received is done."""
        time.sleep(0.5)  # processes finishing, master reaping them (their CPU time then counts)

    @abc.abstractmethod
    def stop(self):
        ...

    def version(self):
        return ""


class Moxtw(Server):
    name = "moxtw"
    recipient = "mox@localhost"
    PORTS = (25, 587, 465, 143, 993, 80, 443, 8010)

    def __init__(self, src=None):
        self.twistd = os.path.join(REPO, ".venv", "bin", "twistd")
        self.proc = None
        self.dir = None
        self.env = dict(os.environ)
        if src:  # another checkout (e.g. `git archive HEAD | tar -x -C DIR`) shadows the venv's
            self.env["PYTHONPATH"] = os.path.abspath(src) + (
                os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")

    def check(self):
        if not os.access(self.twistd, os.X_OK):
            raise BenchError(f"{self.twistd} not found: create the venv first (`make run` or "
                             "`python3 -m venv .venv && .venv/bin/pip install -e .`)")

    def version(self):
        py = os.path.join(REPO, ".venv", "bin", "python")
        r = run_cmd([py, "-c", "import sys, twisted, moxtw; print('moxtw', getattr(moxtw, '__version__', '?'),"
                     " 'from', moxtw.__file__.rsplit('/', 2)[0], '/ Twisted', twisted.__version__,"
                     " '/ Python', sys.version.split()[0])"], timeout=60, env=self.env, cwd="/")
        return r.stdout.decode().strip()

    def _offset(self):
        for offset in range(20000, 40000, 97):
            if all(port_free(p + offset) for p in self.PORTS):
                return offset
        raise BenchError("no free port offset for moxtw localserve")

    def start(self, workdir):
        self.dir = os.path.join(workdir, "moxtw")
        offset = self._offset()
        port = 25 + offset
        self.logpath = os.path.join(workdir, "moxtw.log")
        self.logf = open(self.logpath, "wb")
        cmd = [self.twistd, "-n", "--pidfile=", "--logger=moxtw.log.twistd_observer", "moxtw", "localserve", "--dir", self.dir,
               "--ip", "127.0.0.1", "--port-offset", str(offset)]
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=self.env)
        wait_ready(port, 90, alive=lambda: self.proc.poll() is None, logpath=self.logpath,
                   marker="listening:", what="moxtw localserve")
        return port

    def root_pid(self):
        return self.proc.pid

    def _account(self):
        return os.path.join(self.dir, "data", "accounts", "mox")

    def stored(self):
        return count_files(os.path.join(self._account(), "maildir"))

    def _count(self, sql):
        """One count from the account's index (read-only), None when it cannot be read."""
        path = os.path.join(self._account(), "index.db")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                return con.execute(sql).fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return None

    def indexed(self):
        return self._count("SELECT count(*) FROM message")

    def pending_texts(self):
        return self._count("SELECT count(*) FROM message WHERE text_pending = 1") or 0

    def settle(self, timeout):
        """Search texts of large messages are made after the 250: wait for them."""
        deadline = time.monotonic() + timeout
        while self.pending_texts() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)

    def stop(self):
        if self.proc is not None:
            stop_child(self.proc)
            self.proc = None
            self.logf.close()


class Postfix(Server):
    name = "postfix"
    recipient = "user@bench.test"
    single_process = False

    def __init__(self):
        self.postfix = shutil.which("postfix") or "/usr/sbin/postfix"
        self.etc = None
        self.master = None

    def check(self):
        if not os.access(self.postfix, os.X_OK):
            raise BenchError("postfix not found: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix")
        if os.geteuid() != 0:
            raise BenchError("the Postfix comparison must run as root (postfix -c DIR start needs it)")
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
            self.nobody = pwd.getpwnam("nobody")
        except KeyError as e:
            raise BenchError(f"missing user or group {e}: reinstall the postfix package")
        self.master_cf_source = next(
            (p for p in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist") if os.path.exists(p)), None)
        if self.master_cf_source is None:
            raise BenchError("no master.cf template in /etc/postfix or /usr/share/postfix")

    def version(self):
        r = run_cmd(["postconf", "-d", "-h", "mail_version"], timeout=30)
        return "Postfix " + r.stdout.decode().strip()

    def start(self, workdir):
        top = os.path.join(workdir, "postfix")
        self.etc = os.path.join(top, "etc")
        spool = os.path.join(top, "spool")
        lib = os.path.join(top, "lib")
        self.mail = os.path.join(top, "mail")
        for d in (top, self.etc, spool, lib, self.mail):
            os.makedirs(d)
            os.chmod(d, 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(lib, pf.pw_uid, pf.pw_gid)
        os.chown(self.mail, self.nobody.pw_uid, self.nobody.pw_gid)
        self.maillog = os.path.join(top, "maillog")
        port = free_port()
        main_cf = f"""\
compatibility_level = 3.6
config_directory = {self.etc}
queue_directory = {spool}
data_directory = {lib}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
default_transport = error:no outbound mail from the benchmark instance
relay_transport = error:no outbound mail from the benchmark instance
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:{self.nobody.pw_uid}
virtual_gid_maps = static:{self.nobody.pw_gid}
virtual_mailbox_limit = 0
message_size_limit = 104857600
alias_maps =
alias_database =
biff = no
smtpd_banner = $myhostname ESMTP
maillog_file = {self.maillog}
maillog_file_prefixes = {top}
"""
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(master_cf(self.master_cf_source, port))
        self.newdir = os.path.join(self.mail, "bench", "new")
        self.pidfile = os.path.join(spool, "pid", "master.pid")
        for action in ("check", "start"):
            r = run_cmd([self.postfix, "-c", self.etc, action], timeout=60, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise BenchError(f"postfix -c {self.etc} {action} failed ({r.returncode}):\n"
                                 f"{r.stdout.decode(errors='replace')}\n{tail(self.maillog)}")
        deadline = time.monotonic() + 30
        while self.master is None and time.monotonic() < deadline:
            try:
                with open(self.pidfile) as f:
                    self.master = int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        if self.master is None:
            raise BenchError(f"postfix master did not write {self.pidfile}:\n{tail(self.maillog)}")

        def alive():
            try:
                os.kill(self.master, 0)
                return True
            except ProcessLookupError:
                return False
        wait_ready(port, 60, alive=alive, logpath=self.maillog, what="postfix")
        return port

    def root_pid(self):
        return self.master

    def stored(self):
        return count_dir(self.newdir)

    def stop(self):
        if self.etc is None:
            return
        try:
            run_cmd([self.postfix, "-c", self.etc, "stop"], timeout=60, stdin=subprocess.DEVNULL)
        except (subprocess.TimeoutExpired, OSError) as e:
            log(f"postfix stop: {e}")
        if self.master is not None:
            pids = process_tree(self.master)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
                time.sleep(0.1)
            for pid in pids:  # leftovers of our own instance only
                if os.path.exists(f"/proc/{pid}"):
                    kill_pid(pid, grace=2)
        self.etc = None
        self.master = None


AIOSMTPD_SERVER = r'''
"""Minimal durable aiosmtpd server for bench/smtp.py."""
import argparse, asyncio, itertools, os, time
from aiosmtpd.smtp import SMTP

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True)
ap.add_argument("--port", type=int, required=True)
a = ap.parse_args()
for sub in ("tmp", "new", "cur"):
    os.makedirs(os.path.join(a.dir, sub), exist_ok=True)
NEW = os.path.join(a.dir, "new")
counter = itertools.count(1)
PID = os.getpid()


def store(data):
    name = "%d.%d_%d.bench" % (time.time(), PID, next(counter))
    tmp = os.path.join(a.dir, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(NEW, name))
    dfd = os.open(NEW, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        await asyncio.get_running_loop().run_in_executor(None, store, data)
        return "250 2.0.0 stored"


async def main():
    loop = asyncio.get_running_loop()
    handler = Handler()
    srv = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench", data_size_limit=100 * 2**20),
        "127.0.0.1", a.port)
    print("listening: 127.0.0.1:%d" % a.port, flush=True)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
'''


class Aiosmtpd(Server):
    name = "aiosmtpd"
    recipient = "user@bench.test"

    def __init__(self, venv=None):
        self.venv = venv
        self.proc = None

    def setup(self, base):
        if self.venv is None:
            self.venv = os.path.join(base, "aiovenv")
        py = os.path.join(self.venv, "bin", "python")
        if not os.path.exists(py):
            base_py = getattr(sys, "_base_executable", None) or sys.executable
            log(f"creating a throwaway venv for aiosmtpd in {self.venv}")
            r = run_cmd([base_py, "-m", "venv", self.venv], timeout=300)
            if r.returncode != 0:
                raise BenchError(f"python3 -m venv failed (apt-get install python3-venv?):\n{r.stdout.decode()}")
        r = run_cmd([py, "-c", "import aiosmtpd"], timeout=60)
        if r.returncode != 0:
            log("pip install aiosmtpd")
            r = run_cmd([os.path.join(self.venv, "bin", "pip"), "install", "-q", "aiosmtpd"], timeout=600)
            if r.returncode != 0:
                raise BenchError("could not pip install aiosmtpd into the throwaway venv:\n"
                                 + r.stdout.decode(errors="replace")[-2000:])
        self.python = py
        self.script = os.path.join(base, "aiosmtpd_server.py")
        with open(self.script, "w") as f:
            f.write(AIOSMTPD_SERVER)

    def version(self):
        r = run_cmd([self.python, "-c", "import sys, aiosmtpd; print('aiosmtpd', aiosmtpd.__version__,"
                     " '/ Python', sys.version.split()[0])"], timeout=60)
        return r.stdout.decode().strip()

    def start(self, workdir):
        self.maildir = os.path.join(workdir, "aiosmtpd", "Maildir")
        port = free_port()
        self.logpath = os.path.join(workdir, "aiosmtpd.log")
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen([self.python, self.script, "--dir", self.maildir, "--port", str(port)],
                                     cwd=workdir, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_ready(port, 60, alive=lambda: self.proc.poll() is None, logpath=self.logpath,
                   marker="listening:", what="aiosmtpd")
        return port

    def root_pid(self):
        return self.proc.pid

    def stored(self):
        return count_dir(os.path.join(self.maildir, "new"))

    def stop(self):
        if self.proc is not None:
            stop_child(self.proc)
            self.proc = None
            self.logf.close()


# -- load ----------------------------------------------------------------------------

def smtp_source(port, sessions, count, size, recipient, timeout, persistent=True):
    """Run smtp-source; return (seconds, error or None). ``persistent``: -d, one connection
    per session for all its messages; else a new connection for every message."""
    cmd = ["smtp-source"] + (["-d"] if persistent else []) + [
           "-s", str(sessions), "-m", str(count), "-l", str(size),
           "-f", SENDER, "-t", recipient, "-M", HELO, "-S", "moxtw bench", f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, f"timeout after {timeout} s"
    dt = time.monotonic() - t0
    if r.returncode != 0:
        out = r.stdout.decode(errors="replace").strip().splitlines()
        return dt, f"smtp-source exit {r.returncode}: {out[-1] if out else ''}"
    return dt, None


def wait_count(server, expected, timeout):
    deadline = time.monotonic() + timeout
    while True:
        n = server.stored()
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.02)


def bench_one(server, base, size_name, sessions, count, repeat, timeout, mode="persistent"):
    """A fresh server, warm-up, `repeat` timed runs; returns a result dict."""
    size = SIZES[size_name]
    workdir = tempfile.mkdtemp(prefix=f"{server.name}-{size_name}-{sessions}-{mode}-", dir=base)
    os.chmod(workdir, 0o755)
    res = dict(server=server.name, size=size_name, sessions=sessions, mode=mode, count=count, error=None,
               seconds=[], rates=[], delivered_seconds=[], delivered_rates=[], cpu_ms=[],
               stored=None, expected=None, indexed=None, rss_kb=None, pss_kb=None)
    sampler = None
    try:
        port = server.start(workdir)
        sampler = TreeSampler(server.root_pid())
        sampler.start()
        dt, err = smtp_source(port, 1, WARMUP, 1024, server.recipient, timeout)
        if err:
            raise BenchError(f"warm-up failed: {err}")
        expected = WARMUP
        if wait_count(server, expected, timeout) < expected:
            raise BenchError("warm-up messages not stored")
        for _ in range(repeat):
            expected += count
            cpu0 = tree_cpu_seconds(server.root_pid())
            t0 = time.monotonic()
            dt, err = smtp_source(port, sessions, count, size, server.recipient, timeout,
                                  persistent=mode == "persistent")
            if err:
                res["error"] = err
                break
            res["seconds"].append(dt)
            res["rates"].append(count / dt)
            # Work done for these messages after their 250 counts too: Postfix's delivery
            # into the Maildir, moxtw's search texts of large messages.
            n = wait_count(server, expected, timeout)
            if server.name == "postfix":
                if n < expected:
                    res["error"] = f"only {n - expected + count}/{count} delivered to the Maildir within {timeout} s"
                    break
                dd = time.monotonic() - t0
                res["delivered_seconds"].append(dd)
                res["delivered_rates"].append(count / dd)
            server.settle(timeout)
            res["cpu_ms"].append((tree_cpu_seconds(server.root_pid()) - cpu0) * 1000 / count)
        res["expected"] = expected
        res["stored"] = server.stored()
        res["indexed"] = server.indexed()
        if res["error"] is None and res["stored"] != expected:
            res["error"] = f"stored {res['stored']} messages, expected {expected}"
        if res["error"] is None and res["indexed"] is not None and res["indexed"] != expected:
            res["error"] = f"indexed {res['indexed']} messages, expected {expected}"
        pids = process_tree(server.root_pid())
        res["pss_kb"] = sum(pss_kb(p) for p in pids)
        if server.single_process:
            res["rss_kb"] = status_kb(server.root_pid(), "VmHWM")
            sampler.stop()
        else:
            res["rss_kb"] = sampler.stop()
        sampler = None
    except BenchError as e:
        res["error"] = str(e)
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return res


# -- output --------------------------------------------------------------------------

def fmt_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    return "\n".join(out)


def med(xs):
    return statistics.median(xs) if xs else None


def server_table(results):
    postfix = any(r["server"] == "postfix" for r in results)
    headers = ["size", "sessions", "connections", "messages", "seconds", "msg/s"]
    if postfix:
        headers += ["delivered s", "delivered msg/s"]
    headers += ["CPU ms/msg"]
    indexed = any(r["indexed"] is not None for r in results)
    headers += ["stored"] + (["indexed"] if indexed else []) + ["peak RSS MB", "PSS MB"]
    rows = []
    notes = []
    for r in results:
        runs = len(r["rates"])
        row = [r["size"], r["sessions"], r["mode"], f"{r['count']}" + (f"x{runs}" if runs > 1 else ""),
               f"{med(r['seconds']):.2f}" if runs else "-",
               f"{med(r['rates']):.1f}" if runs else "FAILED"]
        if postfix:
            row += [f"{med(r['delivered_seconds']):.2f}" if r["delivered_seconds"] else "-",
                    f"{med(r['delivered_rates']):.1f}" if r["delivered_rates"] else "-"]
        row += [f"{med(r['cpu_ms']):.2f}" if r["cpu_ms"] else "-"]
        st = "-" if r["stored"] is None else f"{r['stored']}/{r['expected']}"
        row += [st] + ([("-" if r["indexed"] is None else r["indexed"])] if indexed else []) + [
                f"{r['rss_kb'] / 1024:.1f}" if r["rss_kb"] else "-",
                f"{r['pss_kb'] / 1024:.1f}" if r["pss_kb"] else "-"]
        rows.append(row)
        if r["error"]:
            notes.append(f"  {r['size']} x {r['sessions']} sessions ({r['mode']}): ERROR: {r['error']}")
    return fmt_table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def ratio_table(by_server):
    mox = {(r["size"], r["sessions"], r["mode"]): r for r in by_server.get("moxtw", [])}
    pf = {(r["size"], r["sessions"], r["mode"]): r for r in by_server.get("postfix", [])}
    aio = {(r["size"], r["sessions"], r["mode"]): r for r in by_server.get("aiosmtpd", [])}

    def ok_rate(r, key="rates"):
        return med(r[key]) if r and not r["error"] else None

    def ok_mem(r):
        return r["rss_kb"] if r and not r["error"] else None

    rows = []
    for key in mox:
        m = mox[key]
        def ok_cpu(r):
            return med(r["cpu_ms"]) if r and not r["error"] else None

        rows.append([key[0], key[1], key[2],
                     ratio(ok_rate(m), ok_rate(pf.get(key))),
                     ratio(ok_rate(m), ok_rate(pf.get(key), "delivered_rates")),
                     ratio(ok_cpu(m), ok_cpu(pf.get(key))),
                     ratio(ok_rate(m), ok_rate(aio.get(key))),
                     ratio(ok_mem(m), ok_mem(aio.get(key)))])
    return fmt_table(["size", "sessions", "connections", "moxtw/postfix accepted", "moxtw/postfix delivered",
                      "CPU moxtw/postfix", "moxtw/aiosmtpd", "RSS moxtw/aiosmtpd"], rows)


def machine_facts(base, servers):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    mem = status_kb_meminfo()
    lines = [
        f"nproc: {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), CPU: {cpu}",
        f"memory: {mem / 1024 / 1024:.1f} GB, kernel: {platform.release()}",
        f"benchmark script Python: {platform.python_version()} ({sys.executable})",
        f"temp dir: {base}, filesystem: {fs_type(base)}",
        f"load average at start: {loadavg()} (other work on the machine skews the figures)",
        f"load generator: {shutil.which('smtp-source')} (Postfix smtp-source, no pipelining)",
    ]
    for s in servers:
        try:
            lines.append(f"{s.name}: {s.version()}")
        except Exception as e:  # a version string is not worth failing for
            lines.append(f"{s.name}: version unknown ({e})")
    return "\n".join(lines)


def status_kb_meminfo():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- main ----------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="SMTP messages/s over loopback: moxtw vs Postfix vs aiosmtpd",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="10 KB only, 200 messages per run")
    ap.add_argument("--only", action="append", help="moxtw, postfix or aiosmtpd (repeatable or comma separated)")
    ap.add_argument("--count", type=int, help="messages per 10 KB run (default 500; 200 with --quick)")
    ap.add_argument("--count-large", type=int, help="messages per 1 MB run (default 50)")
    ap.add_argument("--sessions", default="1,10,50", help="concurrent sessions, comma separated (default 1,10,50)")
    ap.add_argument("--sizes", help="10KB, 1MB, comma separated (default both; 10KB with --quick)")
    ap.add_argument("--modes", default="persistent,new",
                    help="persistent (smtp-source -d: one connection per session) and/or new (a connection"
                    " per message), comma separated (default both)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per row on the same instance; median shown")
    ap.add_argument("--timeout", type=int, default=300, help="seconds allowed for each smtp-source run")
    ap.add_argument("--tmpdir", help="where the temp directory goes (must be a real disk: fsync matters)")
    ap.add_argument("--moxtw-src", help="moxtw source tree to run instead of the venv's (put first on"
                    " PYTHONPATH), e.g. an export of a commit: git archive HEAD | tar -x -C DIR")
    ap.add_argument("--aiosmtpd-venv", help="existing or to-be-created venv with aiosmtpd (kept)")
    a = ap.parse_args(argv)
    only = []
    for o in a.only or SERVERS:
        only += [x.strip() for x in o.split(",") if x.strip()]
    bad = [o for o in only if o not in SERVERS]
    if bad:
        ap.error(f"--only: unknown server {bad}; choose from {', '.join(SERVERS)}")
    a.only = [s for s in SERVERS if s in only]
    a.sessions = [int(x) for x in a.sessions.split(",") if x.strip()]
    a.modes = [x.strip() for x in a.modes.split(",") if x.strip()]
    bad = [x for x in a.modes if x not in ("persistent", "new")]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from persistent, new")
    if a.sizes:
        a.sizes = [x.strip() for x in a.sizes.split(",") if x.strip()]
        bad = [x for x in a.sizes if x not in SIZES]
        if bad:
            ap.error(f"--sizes: unknown {bad}; choose from {', '.join(SIZES)}")
    else:
        a.sizes = ["10KB"] if a.quick else list(SIZES)
    a.count = a.count or (200 if a.quick else 500)
    a.count_large = a.count_large or 50
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    if shutil.which("smtp-source") is None:
        print("smtp-source not found: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix "
              "(debconf: postfix postfix/main_mailer_type select No configuration)", file=sys.stderr)
        return 2

    base = tempfile.mkdtemp(prefix="moxtw-bench-", dir=a.tmpdir)
    os.chmod(base, 0o755)  # Postfix daemons (user postfix, nobody) must traverse it
    if "tmpfs" in fs_type(base):
        log(f"WARNING: {base} is on tmpfs: fsync costs nothing there; use --tmpdir on a real disk")
    candidates = {"moxtw": lambda: Moxtw(a.moxtw_src), "postfix": Postfix, "aiosmtpd": lambda: Aiosmtpd(a.aiosmtpd_venv)}
    servers, skipped = [], []
    by_server = {}
    try:
        for name in a.only:
            s = candidates[name]()
            try:
                s.check()
                s.setup(base)
                servers.append(s)
            except BenchError as e:
                skipped.append(f"{name}: not measured: {e}")
                log(skipped[-1])
        print("== moxtw SMTP benchmark (bench/smtp.py) ==")
        print(machine_facts(base, servers))
        print()
        for s in servers:
            for size_name in a.sizes:
                count = a.count if size_name == "10KB" else a.count_large
                for mode in a.modes:
                    for sessions in a.sessions:
                        n = max(count, sessions)
                        log(f"{s.name}: {size_name} x {n} messages, {sessions} sessions, {mode} connections")
                        r = bench_one(s, base, size_name, sessions, n, a.repeat, a.timeout, mode)
                        by_server.setdefault(s.name, []).append(r)
                        if r["error"]:
                            log(f"  ERROR: {r['error']}")
                        else:
                            extra = (f", delivered {med(r['delivered_rates']):.1f} msg/s"
                                     if r["delivered_rates"] else "")
                            log(f"  {med(r['rates']):.1f} msg/s{extra}, {med(r['cpu_ms']):.2f} ms CPU per message")
        for s in servers:
            print(f"-- {s.name} --")
            print(server_table(by_server.get(s.name, [])))
            print()
        for line in skipped:
            print(line)
        if "moxtw" in by_server and len(by_server) > 1:
            print("-- ratios (moxtw messages/s divided by the other's; > 1.00: moxtw faster;"
                  " RSS: < 1.00 moxtw smaller) --")
            print(ratio_table(by_server))
            print()
        print(f"load average at end: {loadavg()}")
        print()
        print(NOTES)
        return 1 if skipped or any(r["error"] for rs in by_server.values() for r in rs) else 0
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
        shutil.rmtree(base, ignore_errors=True)


NOTES = """\
What the figures mean:
  msg/s            messages of the given payload size (smtp-source -l; plus ~200 bytes of headers)
                   whose 250 reply to DATA was received, divided by smtp-source's wall time; the
                   sessions run in parallel, one recipient each.
  connections      persistent: each session sends all its messages on one connection (-d);
                   new: a new connection (greeting, EHLO, QUIT) for every message.
  CPU ms/msg       CPU time (user + system) of the server's whole process tree during the run
                   and until its work for those messages is done (Postfix: delivered into the
                   Maildir, its exited processes counted through master; moxtw: search texts
                   of large messages made), divided by the number of messages.
  moxtw            250 = message file fsynced and SQLite index committed (localserve, account mox,
                   logging as make run: a line per delivery; localserve does not limit
                   connections per IP, so the new-connection rows are not throttled); stored =
                   files in the maildir, and the index row count is checked against it.
  postfix          msg/s = accepted into the queue (cleanup(8) fsyncs the queue file before 250);
                   delivered = the same messages counted from the start of the run until the last
                   one is in Maildir/new (virtual(8) fsyncs each file; it does not fsync the
                   directory). Compare moxtw with "delivered" for mailbox-to-mailbox work.
  aiosmtpd         250 = file written, fsynced, renamed into Maildir/new and the directory fsynced
                   (thread pool); no parsing, no index, no checks: a floor for a Python server.
  peak RSS MB      moxtw, aiosmtpd: VmHWM of the server process (startup + warm-up + run).
                   postfix: peak of the summed RSS of master and children, sampled every 0.25 s
                   (counts shared libraries once per process); PSS MB: summed proportional set
                   size at the end of the run (shared pages divided among processes).
  Each row is a freshly started server with an empty data directory; 5 warm-up messages of
  1 KB are sent (not timed) before the timed run. Single runs on a shared VM vary: use --repeat."""


if __name__ == "__main__":
    sys.exit(main())
