"""The network fuzzer (issue 10 item 8) for a short budget: grammar-aware, mutated SMTP
and IMAP sessions against a live server process for MOXTW_FUZZ_SECONDS (default 60),
failing on a SERVERBUG reply, a hang, a crash, or a ``level=critical`` line, traceback
or unhandled error in the server's log. The grammar and the checks are in
:mod:`moxtw.test.fuzzlib`; ``bench/fuzz.py`` runs the same for longer.

Each CI run uses a different run seed (MOXTW_FUZZ_SEED fixes it), printed with every
finding, so findings can be replayed with ``bench/fuzz.py --replay SESSION_SEED``.
MOXTW_FUZZ_SECONDS=0 skips the test.
"""

import os
import random
import shutil
import tempfile

from twisted.trial import unittest

from moxtw.test import fuzzlib

SECONDS = float(os.environ.get("MOXTW_FUZZ_SECONDS", "60"))
SESSIONS = 4


class FuzzTest(unittest.TestCase):
    def test_fuzz(self):
        if SECONDS <= 0:
            raise unittest.SkipTest("MOXTW_FUZZ_SECONDS=0")
        seed = int(os.environ.get("MOXTW_FUZZ_SEED") or random.randrange(1 << 32))
        d = tempfile.mkdtemp(prefix="moxtw-fuzz-")
        server = fuzzlib.Server(os.path.join(d, "server"))
        server.start()
        try:
            report = fuzzlib.run(server, SECONDS, seed, sessions=SESSIONS)
        finally:
            server.stop()
        if not report.ok():
            self.fail(f"{report.summary()}\n{report.format_findings(40)}\n"
                      f"(server log and stderr kept in {d})")
        shutil.rmtree(d, ignore_errors=True)
        # A run that sent nothing would pass without testing anything.
        self.assertGreater(report.commands, 50, report.summary())
        self.assertGreater(report.by_kind["imap"], 0, report.summary())
        self.assertGreater(report.by_kind["smtp"] + report.by_kind["submission"], 0, report.summary())

    test_fuzz.timeout = SECONDS + 6 * fuzzlib.HANG_TIMEOUT + 120
