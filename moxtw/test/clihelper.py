"""Run the ``moxtw`` command as a child process from a trial test, the way an operator
runs it: ``run_moxtw(*args, stdin=b"...", env={...})`` fires with (out, err, exit code)."""

import os
import sys

from twisted.internet import utils

# getProcessOutputAndValue gives the child no standard input: a small Python parent
# feeds it (bytes passed through latin-1, which maps every byte).
_FEED = ("import subprocess, sys; r = subprocess.run(sys.argv[2:], input=sys.argv[1].encode('latin-1')); "
         "sys.exit(r.returncode)")


def run_moxtw(*args, stdin=None, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    if stdin is None:
        return utils.getProcessOutputAndValue(sys.executable, ("-m", "moxtw", *args), env=full_env)
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    return utils.getProcessOutputAndValue(
        sys.executable, ("-c", _FEED, stdin.decode("latin-1"), sys.executable, "-m", "moxtw", *args), env=full_env)
