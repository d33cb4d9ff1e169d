"""Network fuzzer: grammar-aware, mutated SMTP sessions and IMAP commands against a live
moxtw on loopback (issue 10, item 8).

Usage::

    .venv/bin/python bench/fuzz.py                         # 600 s, 8 sessions, random seed
    .venv/bin/python bench/fuzz.py --seconds 60 --seed 1 --sessions 4
    .venv/bin/python bench/fuzz.py --replay 123456789      # one session again, by its seed
    .venv/bin/python bench/fuzz.py --keep                  # keep the data dir (log, stderr)

The grammar, the clients and the checks are in ``moxtw/test/fuzzlib.py`` (shared with
``moxtw/test/test_fuzz.py``, which runs the same for 60 s in CI).  The server runs from
the venv in a child process with its config, data, ``server.log`` and
``server.stderr`` in a temporary directory.  Prints the counts (sessions, commands,
replies by class) and every finding with the seed of the session(s) involved and their
transcript; the exit code is 1 when there are findings.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import log  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, REPO)
from moxtw.test import fuzzlib  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=None, help="run seed (default: random)")
    p.add_argument("--sessions", type=int, default=8, help="concurrent client sessions")
    p.add_argument("--replay", type=int, default=None, help="run only the session with this seed")
    p.add_argument("--dir", default=None,
                   help="where to make the run's directory (default: the system's temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--transcript", type=int, default=60, help="transcript entries shown per finding")
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    # In --dir, a new directory of its own: nothing there is reused or removed.
    d = tempfile.mkdtemp(prefix="moxtw-fuzz-", dir=a.dir)
    server = fuzzlib.Server(os.path.join(d, "server"))
    log(f"seed {seed}; server in {server.dir}")
    server.start()
    log(f"server pid {server.proc.pid}, ports {server.ports}")
    try:
        if a.replay is not None:
            kind, port, steps = fuzzlib.make_session(a.replay)
            log(f"replaying session {a.replay}: {kind} on {port}, {len(steps)} steps")
        report = fuzzlib.run(server, a.replay is not None and 60 or a.seconds, seed,
                             sessions=a.sessions, progress=log, replay=a.replay)
    finally:
        server.stop()
    print(report.summary())
    if a.replay is not None and report.ok():
        print("transcript of the replayed session is in the findings only; none found")
    if not report.ok():
        print(report.format_findings(a.transcript))
    if a.keep or not report.ok():
        log(f"kept {d} (server.log, server.stderr)")
    else:
        shutil.rmtree(d, ignore_errors=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
