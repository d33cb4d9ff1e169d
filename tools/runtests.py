"""Run trial and finish with one line: ``N passed, N failed, N skipped``.

Usage: runtests.py TRIAL [TESTS...]. Exits non-zero when a test failed or
errored, or when trial itself did not finish. Before that line it lists the slowest
test modules, timed from trial's output as it arrives (a module's time runs from its
first reported result to the next module's; with TRIAL_JOBS > 1 the figures overlap).
"""

import os
import re
import subprocess
import sys
import time

SUMMARY = re.compile(rb"^(PASSED|FAILED) \((.*)\)\s*$", re.M)
MODULE = re.compile(rb"^(moxtw\.[\w.]+)\s*$")  # trial's tree reporter: a module's heading
SLOWEST = 10


def slowest(marks, end, n=SLOWEST):
    """[(seconds, module)] of the n slowest, from [(time, module)] in output order."""
    spans = {}
    for (t, name), nxt in zip(marks, [m[0] for m in marks[1:]] + [end]):
        spans[name] = spans.get(name, 0.0) + (nxt - t)
    return sorted(((s, m) for m, s in spans.items()), reverse=True)[:n]


def main(argv):
    trial = argv[1]
    tests = argv[2:] or ["moxtw"]
    # Sequential by default: the suite takes well under a minute, and the end-to-end
    # tests start servers and processes of their own. TRIAL_JOBS=N runs N workers.
    jobs = os.environ.get("TRIAL_JOBS", "1")
    cmd = [trial, *(["--jobs", jobs] if jobs != "1" else []), *tests]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines as they happen, for the timings
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    chunks = []
    marks = []
    for line in proc.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        chunks.append(line)
        m = MODULE.match(line)
        if m:
            marks.append((time.monotonic(), m.group(1).decode()))
    rc = proc.wait()
    if marks:
        print(f"slowest test modules (of {len({m for _, m in marks})}):")
        for secs, name in slowest(marks, time.monotonic()):
            print(f"  {secs:7.1f} s  {name}")
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
