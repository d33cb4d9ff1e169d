"""Benchmark: incoming message authentication (iprev, SPF, DKIM, DMARC) evaluations per second.

Usage::

    .venv/bin/python bench/msgauth.py             # 1 KB and 1 MB, with and without the DNS cache
    .venv/bin/python bench/msgauth.py --quick     # fewer evaluations
    .venv/bin/python bench/msgauth.py --count 2000 --count-large 100 --concurrency 10

Everything runs in this process, on one reactor: a loopback authoritative DNS server
(``moxtw.test.dnsserver.LoopbackDNS``, twisted.names, UDP on 127.0.0.1) serves the zone
of example.org, and ``moxtw.smtpserver.msgauth.authenticate`` evaluates messages from
192.0.2.1 with the real resolver, ``moxtw.dns.resolver.Resolver(servers=[that server])``
(dnspython in its thread pool of 8 threads, as the server uses it).

The zone: PTR of 192.0.2.1 -> mail.example.org, whose A record is 192.0.2.1 (iprev);
``v=spf1 ip4:192.0.2.1 -all`` at example.org (MAIL FROM) and mail.example.org (EHLO);
``v=DMARC1; p=reject`` at _dmarc.example.org; two DKIM keys, RSA 2048 bits (selector
rsa2048) and ed25519 (selector ed1), generated at start with ``moxtw.dkim.keys``.

Each message (1 KB or 1 MB of text, From: example.org) is signed once, before timing,
with ``moxtw.dkim.sign.Signer`` with both selectors (relaxed/relaxed), so every
evaluation verifies two signatures. One evaluation is one ``authenticate()`` call:
iprev, SPF for MAIL FROM and EHLO, and DKIM concurrently, then DMARC (alignment and the
_dmarc lookup). --concurrency evaluations are kept in flight.

"cache": one Resolver with its default TTL cache (10,000 answers) for the whole run;
after the warm-up every lookup is a cache hit, so this is mostly the CPU work.
"no cache": one Resolver with ``cache_size=0`` (its cache stores nothing), so every
lookup of every evaluation goes to the DNS server over UDP (the RSA key record, about
400 bytes, fits in one UDP answer). The "DNS queries/eval" column counts the queries the
server received.

Every result must be pass (iprev, SPF mailfrom and helo, both DKIM signatures, DMARC);
anything else is printed and the script exits 1, without a figure for that row.
"CPU ms/eval" is this process's user+system CPU time divided by evaluations: it includes
the DNS server's work, which runs on the same reactor.
"""

import argparse
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, task  # noqa: E402

from benchlib import loadavg, log  # noqa: E402
from moxtw.dkim.keys import generate_ed25519, generate_rsa, parse_private_key  # noqa: E402
from moxtw.dkim.sign import SelectorKey, Signer  # noqa: E402
from moxtw.dns.resolver import Resolver  # noqa: E402
from moxtw.smtpserver.msgauth import authenticate  # noqa: E402
from moxtw.test.dnsserver import LoopbackDNS  # noqa: E402

DOMAIN = "example.org"
EHLO = "mail.example.org"
REMOTE_IP = "192.0.2.1"
MAILFROM = f"sender@{DOMAIN}"
SIZES = {"1KB": 1024, "1MB": 1024 * 1024}
WARMUP = 20


class BenchError(Exception):
    """A result other than pass, or a failed evaluation: reported, not a figure."""


def zone(keys):
    records = {
        ("1.2.0.192.in-addr.arpa", "PTR"): [EHLO],  # RFC 8601 2.7.3 iprev
        (EHLO, "A"): [REMOTE_IP],
        (DOMAIN, "TXT"): [f"v=spf1 ip4:{REMOTE_IP} -all"],
        (EHLO, "TXT"): [f"v=spf1 ip4:{REMOTE_IP} -all"],
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
    }
    for selector, key in keys.items():
        records[(f"{selector}._domainkey.{DOMAIN}", "TXT")] = [key.dns_record]
    return records


def message(size, signer):
    """A text message of ``size`` bytes (before the signatures), signed."""
    header = (
        f"From: Sender <{MAILFROM}>\r\nTo: rcpt@example.net\r\nSubject: msgauth bench {size}\r\n"
        f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bench.{size}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * (max(size - len(header), len(line)) // len(line) + 1)
    data = header + body[:max(size - len(header), 2)]
    if not data.endswith(b"\r\n"):
        data = data[:-2] + b"\r\n"
    return signer.sign(data) + data


def failures(res):
    """What in one AuthResults is not pass; empty when all passed."""
    bad = []
    if res.iprev is None or res.iprev.result != "pass":
        bad.append(f"iprev={getattr(res.iprev, 'result', None)} ({getattr(res.iprev, 'reason', '')})")
    if res.spf is None or res.spf.mailfrom.result != "pass":
        bad.append(f"spf mailfrom={getattr(getattr(res.spf, 'mailfrom', None), 'result', None)}")
    if res.spf is None or res.spf.helo is None or res.spf.helo.result != "pass":
        bad.append(f"spf helo={getattr(getattr(res.spf, 'helo', None), 'result', None)}")
    if len(res.dkim) != 2:
        bad.append(f"{len(res.dkim)} DKIM results, expected 2")
    for d in res.dkim:
        if d.result != "pass":
            bad.append(f"dkim {d.selector}={d.result} ({d.reason})")
    if res.dmarc is None or res.dmarc.result != "pass":
        bad.append(f"dmarc={getattr(res.dmarc, 'result', None)}")
    return bad


async def evaluate(resolver, data):
    res = await authenticate(resolver, remote_ip=REMOTE_IP, ehlo=EHLO, mailfrom=MAILFROM, data=data)
    bad = failures(res)
    if bad:
        raise BenchError("not pass: " + "; ".join(bad))


async def run_many(resolver, data, count, concurrency):
    """``count`` evaluations with ``concurrency`` in flight; raises the first failure."""
    todo = iter(range(count))

    async def worker():
        for _ in todo:
            await evaluate(resolver, data)

    workers = [defer.Deferred.fromCoroutine(worker()) for _ in range(min(concurrency, count))]
    await defer.gatherResults(workers, consumeErrors=True).addErrback(lambda f: f.value.subFailure)


async def bench_row(reactor, server, data, count, concurrency, cache):
    resolver = Resolver(servers=[server.address], reactor=reactor,
                        cache_size=10000 if cache else 0)
    try:
        await run_many(resolver, data, WARMUP, concurrency)
        server.queries.clear()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        await run_many(resolver, data, count, concurrency)
        elapsed = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return dict(seconds=elapsed, rate=count / elapsed, cpu_ms=cpu / count * 1000,
                    queries=len(server.queries) / count)
    finally:
        resolver.stop()
        server.queries.clear()


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    out = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


async def main(reactor, args):
    keys = {"rsa2048": parse_private_key(generate_rsa(2048), "rsa2048"),
            "ed1": parse_private_key(generate_ed25519(), "ed1")}
    signer = Signer(DOMAIN, [SelectorKey(name, key, header_relaxed=True, body_relaxed=True)
                             for name, key in keys.items()])
    server = LoopbackDNS(zone(keys), reactor=reactor)
    server.start()
    print("== moxtw message authentication benchmark (bench/msgauth.py) ==")
    print(f"nproc: {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
          f"load average at start: {loadavg()} (other work on the machine skews the figures)")
    print(f"DNS: LoopbackDNS at {server.address}; resolver threads 8; concurrency {args.concurrency}; "
          f"{WARMUP} warm-up evaluations per row, not timed")
    print(flush=True)
    rows, errors = [], []
    try:
        for size_name in args.sizes:
            data = message(SIZES[size_name], signer)
            count = args.count if size_name == "1KB" else args.count_large
            for cache in (True, False):
                label = "cache" if cache else "no cache"
                log(f"{size_name} {label}: {count} evaluations")
                try:
                    r = await bench_row(reactor, server, data, count, args.concurrency, cache)
                except BenchError as e:
                    errors.append(f"{size_name} {label}: {e}")
                    rows.append([size_name, f"{len(data)}", label, count, "-", "FAILED", "-", "-"])
                    continue
                rows.append([size_name, f"{len(data)}", label, count, f"{r['seconds']:.2f}",
                             f"{r['rate']:.1f}", f"{r['cpu_ms']:.2f}", f"{r['queries']:.1f}"])
    finally:
        await server.stop()
    print(table(["size", "bytes signed", "DNS", "evaluations", "seconds", "evals/s", "CPU ms/eval",
                 "DNS queries/eval"], rows))
    for e in errors:
        print(f"ERROR: {e}")
    print()
    print(f"load average at end: {loadavg()}")
    print("Each evaluation: iprev + SPF (MAIL FROM and EHLO) + DKIM (2 signatures: RSA-2048 and"
          " ed25519, relaxed/relaxed) + DMARC, all pass. Single runs on a shared machine vary.")
    if errors:
        raise SystemExit(1)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="fewer evaluations (300 of 1 KB, 20 of 1 MB per row)")
    ap.add_argument("--count", type=int, help="evaluations of the 1 KB message per row (default 3000)")
    ap.add_argument("--count-large", type=int, help="evaluations of the 1 MB message per row (default 100)")
    ap.add_argument("--concurrency", type=int, default=10, help="evaluations in flight (default 10)")
    ap.add_argument("--sizes", default="1KB,1MB", help="1KB, 1MB, comma separated (default both)")
    a = ap.parse_args(argv)
    a.count = a.count or (300 if a.quick else 3000)
    a.count_large = a.count_large or (20 if a.quick else 100)
    a.sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    bad = [s for s in a.sizes if s not in SIZES]
    if bad or a.count < 1 or a.count_large < 1 or a.concurrency < 1:
        ap.error(f"--sizes: choose from {', '.join(SIZES)}; counts and --concurrency must be positive")
    return a


if __name__ == "__main__":
    task.react(lambda reactor, args: defer.Deferred.fromCoroutine(main(reactor, args)),
               [parse_args(sys.argv[1:])])
