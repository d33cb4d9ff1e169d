"""Benchmark: ``moxtw import maildir`` of a generated Maildir, beside Dovecot's
``doveadm import`` on the same tree where Dovecot is installed.

Usage: python3 bench/import.py [--count 200000] [--dir D] [--keep]

The tree has a realistic size mix (60% 1-5 KB, 30% 5-50 KB, 9% 50-300 KB, 1% 300 KB-1 MB),
random flags and a few folders. moxtw imports offline (no server running), with its full
search index; the figures are wall time, messages per second and the peak RSS of the
import process (from getrusage of the child). mox's users waited 8 hours for 196,000
messages (mox issue #380); the goal here is under 10 minutes and 300 MB.
Dovecot: ``doveadm -c CONF import -u bench maildir:TREE "" all`` into a Maildir, timed
the same way, when ``doveadm`` exists (apt-get install dovecot-core). Stdlib only.
"""

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ["", ".Sent", ".Archive", ".Lists.python", ".Lists.debian"]
WORDS = ("mail server message delivery python twisted account folder invoice meeting report "
         "tomorrow thanks regards please update review attached schedule budget").split()


def size_of(rng):
    r = rng.random()
    if r < 0.60:
        return rng.randrange(1024, 5 * 1024)
    if r < 0.90:
        return rng.randrange(5 * 1024, 50 * 1024)
    if r < 0.99:
        return rng.randrange(50 * 1024, 300 * 1024)
    return rng.randrange(300 * 1024, 1024 * 1024)


def generate(root, count, seed=1):
    rng = random.Random(seed)
    for f in FOLDERS:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(root, f, sub), exist_ok=True)
    total = 0
    t0 = time.time()
    for i in range(count):
        folder = FOLDERS[0] if rng.random() < 0.6 else rng.choice(FOLDERS[1:])
        want = size_of(rng)
        head = (f"From: sender{i % 5000}@example{i % 97}.org\nTo: you@example.com\n"
                f"Subject: {' '.join(rng.sample(WORDS, 4))} {i}\nMessage-ID: <bench{i}@example.org>\n"
                f"Date: Mon, 2 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain\n\n")
        line = " ".join(rng.sample(WORDS, 10)) + "\n"
        body = line * max(1, (want - len(head)) // len(line))
        data = (head + body).encode()
        letters = "".join(sorted(rng.sample("FRS", rng.randrange(0, 3))))
        name = f"{1700000000 + i}.M{i}P1.bench:2,{letters}"
        with open(os.path.join(root, folder, "cur", name), "wb") as f:
            f.write(data)
        total += len(data)
        if i and i % 20000 == 0:
            print(f"  generated {i} messages ({total / 1e9:.2f} GB, {time.time() - t0:.0f} s)", flush=True)
    return total


def child_peak_rss_mb(before):
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def python():
    """The project's virtualenv Python (make .venv/.installed), else this one."""
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


def run_moxtw(top, tree, count):
    config = subprocess.run(
        [python(), "-c", "import sys; from moxtw.config import write_localserve_config as w; print(w(sys.argv[1]))",
         os.path.join(top, "moxtw")], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    t0 = time.monotonic()
    proc = subprocess.run([python(), "-m", "moxtw", "import", "maildir", "mox", "Inbox", tree,
                           "--top-level", "--config", config], capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit("moxtw import failed")
    print("  " + proc.stdout.strip().splitlines()[0])
    return wall, usage.ru_maxrss / 1024


def run_dovecot(top, tree, count):
    doveadm = shutil.which("doveadm")
    if doveadm is None:
        return None, "doveadm not installed (apt-get install dovecot-core)"
    home = os.path.join(top, "dovecot", "home")
    os.makedirs(home)
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    conf = os.path.join(top, "dovecot", "dovecot.conf")
    with open(os.path.join(top, "dovecot", "passwd"), "w") as f:
        f.write(f"bench:{{PLAIN}}x:{nobody.pw_uid}:{nobody.pw_gid}::{home}::\n")
    with open(conf, "w") as f:
        f.write(f"""base_dir = {top}/dovecot/run
state_dir = {top}/dovecot/state
log_path = {top}/dovecot/log
instance_name = moxtw-bench-import-{os.getpid()}
protocols =
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {top}/dovecot/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {top}/dovecot/passwd
}}
""")
    # Dovecot writes its index files (dovecot-uidlist) into the source maildir too.
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", tree], check=True)
    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    # doveadm looks users up through the auth service of a running Dovecot.
    master = subprocess.Popen([dovecot, "-c", conf, "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(top, "dovecot", "run", "auth-userdb")):
                break
            time.sleep(0.1)
        t0 = time.monotonic()
        proc = subprocess.run([doveadm, "-c", conf, "import", "-u", "bench", f"maildir:{tree}", "", "all"],
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        status = subprocess.run([doveadm, "-c", conf, "mailbox", "status", "-u", "bench", "messages", "*"],
                                capture_output=True, text=True)
        imported = sum(int(m) for m in re.findall(r"messages=(\d+)", status.stdout))
    finally:
        master.terminate()
        master.wait(30)
    if proc.returncode != 0 or imported != count:
        return None, f"doveadm import failed ({imported} of {count} imported): {proc.stderr.strip()[:300]}"
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=200000)
    p.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--only", choices=("moxtw", "dovecot"), help="run one importer only")
    a = p.parse_args()
    top = a.dir or tempfile.mkdtemp(prefix="moxtw-bench-import-")
    os.makedirs(top, exist_ok=True)
    os.chmod(top, 0o755)  # Dovecot's auth and mail processes (other users) reach into it
    tree = os.path.join(top, "Maildir")
    try:
        print(f"generating {a.count} messages in {tree}", flush=True)
        total = generate(tree, a.count)
        print(f"  {total / 1e9:.2f} GB, mean {total / a.count / 1024:.1f} KB", flush=True)
        rows = []
        if a.only != "dovecot":
            print("moxtw import (offline, with search index)", flush=True)
            wall, rss = run_moxtw(top, tree, a.count)
            rows = [("moxtw", wall, rss)]
        dwall, drss = None, "not run (--only moxtw)"
        if a.only != "moxtw":
            print("dovecot doveadm import", flush=True)
            dwall, drss = run_dovecot(top, tree, a.count)
        print()
        print(f"{'':10} {'seconds':>9} {'msg/s':>9} {'MB/s':>7} {'peak RSS MB':>12}")
        for name, w, r in rows:
            print(f"{name:10} {w:9.1f} {a.count / w:9.0f} {total / 1e6 / w:7.1f} {r:12.0f}")
        if dwall is None:
            print(f"dovecot    {drss}")
        else:
            print(f"{'dovecot':10} {dwall:9.1f} {a.count / dwall:9.0f} {total / 1e6 / dwall:7.1f} "
                  f"{'(max of children)':>12}")
            if rows:
                print(f"moxtw / dovecot speed: {dwall / wall:.2f}x")
        if rows:
            print(f"goal: {a.count} messages under 600 s and 300 MB: "
                  f"{'met' if wall < 600 * a.count / 200000 and rss < 300 else 'NOT met'}")
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
