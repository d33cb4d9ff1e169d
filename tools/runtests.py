"""Run trial and finish with one line: ``N passed, N failed, N skipped``.

Usage: runtests.py TRIAL [TESTS...]. Exits non-zero when a test failed or
errored, or when trial itself did not finish.
"""

import os
import re
import subprocess
import sys

SUMMARY = re.compile(rb"^(PASSED|FAILED) \((.*)\)\s*$", re.M)


def main(argv):
    trial = argv[1]
    tests = argv[2:] or ["moxtw"]
    # Sequential by default: the suite takes well under a minute, and the end-to-end
    # tests start servers and processes of their own. TRIAL_JOBS=N runs N workers.
    jobs = os.environ.get("TRIAL_JOBS", "1")
    cmd = [trial, *(["--jobs", jobs] if jobs != "1" else []), *tests]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    for line in proc.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        chunks.append(line)
    rc = proc.wait()
    output = b"".join(chunks)
    found = SUMMARY.findall(output)
    if not found:
        print("0 passed, 1 failed")
        print(f"trial exited {rc} without a summary", file=sys.stderr)
        return 1
    counts = dict(
        (k.decode(), int(v))
        for k, v in re.findall(rb"(\w+)=(\d+)", found[-1][1])
    )
    passed = counts.get("successes", 0)
    failed = (
        counts.get("failures", 0)
        + counts.get("errors", 0)
        + counts.get("unexpectedSuccesses", 0)
    )
    skipped = counts.get("skips", 0)
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 0 if failed == 0 and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
