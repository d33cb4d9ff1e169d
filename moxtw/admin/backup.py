"""``moxtw backup DEST``: a consistent copy of the configuration and the data directory,
taken while the server runs (through the control socket) or stopped.

DEST gets ``config/`` (the config files, DataDir pointed at ``../data``) and ``data/``.
Every SQLite database is copied with SQLite's online backup API (a consistent snapshot,
while writers go on). Message files are immutable: they are hard-linked when DEST is on
the same file system, else copied. An account's expunged files are not removed while
its index and files are copied (``pause_removals``), so every message in the copied
index has its file. Queue entries finished after the queue's snapshot have no file any
more: they are dropped from the copy, as they are done. Other files (TLS keys and
certificates, DKIM keys) are copied. Temporary files, the control socket and SQLite's
-wal/-shm files are skipped. Afterwards the copy is checked like ``moxtw verifydata``.
Blocking; run in a thread.
"""

import errno
import os
import shutil
import sqlite3

import tomlkit

from moxtw.config.load import STATIC_FILE

SKIP_DIRS = {"tmp"}
SKIP_FILES = {"ctl"}


class BackupError(Exception):
    pass


def _link_or_copy(src, dst, counts):
    try:
        os.link(src, dst)
        counts["linked"] += 1
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)
        counts["copied"] += 1


def backup_sqlite(src, dst):
    """Copy one database with the online backup API (RFC-free: sqlite.org/backup.html)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            # One step (pages=-1): an incremental copy restarts at each write of another
            # connection and may never end under load; one read transaction does not
            # block WAL writers.
            source.backup(target, pages=-1)
            # The copy stands alone: no WAL to go with it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()


def _copy_tree(src, dst, counts, link_dirs=()):
    """Copy ``src`` to ``dst``: databases by backup API, files under ``link_dirs``
    linked, the rest copied; temporary directories and the socket skipped."""
    for top, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        rel = os.path.relpath(top, src)
        out = os.path.join(dst, rel) if rel != "." else dst
        os.makedirs(out, mode=0o700, exist_ok=True)
        linking = any(os.path.commonpath([top, d]) == d for d in link_dirs)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name in SKIP_FILES and rel == ".":
                continue
            if name.endswith(("-wal", "-shm", "-journal")):
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            target = os.path.join(out, name)
            if name.endswith(".db"):
                backup_sqlite(path, target)
                counts["databases"] += 1
            elif linking:
                try:
                    _link_or_copy(path, target, counts)
                except FileNotFoundError:
                    counts["vanished"] += 1
            else:
                try:
                    shutil.copy2(path, target)
                    counts["copied"] += 1
                except FileNotFoundError:
                    counts["vanished"] += 1


def _drop_finished_queue_entries(data):
    """Queue rows of the copy whose message file is not in the copy: delivered or dropped
    after the snapshot, so finished; removed from the copy."""
    db = os.path.join(data, "queue.db")
    if not os.path.exists(db):
        return 0
    conn = sqlite3.connect(db)
    try:
        ids = [r[0] for r in conn.execute("SELECT DISTINCT base_id FROM msg")]
        gone = [i for i in ids if not os.path.exists(os.path.join(data, "queue", str(i)))]
        for i in gone:
            conn.execute("DELETE FROM msg WHERE base_id = ?", (i,))
        conn.commit()
        return len(gone)
    finally:
        conn.close()


def _copy_config(config_dir, config_dst, data_dir, counts):
    """The config directory's regular files (key and certificate files behind symbolic
    links by content), without a data directory inside it (``DataDir = "data"``: that is
    copied as data), sockets, FIFOs and lock files."""
    data_real = os.path.realpath(data_dir)
    seen = {os.path.realpath(config_dir)}
    # Directories behind links are copied by content too (config/tls -> /etc/letsencrypt/
    # live/...), each real directory once (no loops).
    for top, dirs, files in os.walk(config_dir, followlinks=True):
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(top, d))
            if real != data_real and real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        rel = os.path.relpath(top, config_dir)
        out = config_dst if rel == "." else os.path.join(config_dst, rel)
        os.makedirs(out, mode=0o700, exist_ok=True)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.endswith(".lock") or not os.path.isfile(path):
                continue
            shutil.copy2(path, os.path.join(out, name))
            counts["copied"] += 1


def _prune_to_index(account_dst):
    """Remove message files of the copy that its index does not name (deliveries after
    the snapshot): the copy is then exactly the snapshot."""
    db = os.path.join(account_dst, "index.db")
    cur = os.path.join(account_dst, "maildir", "cur")
    if not os.path.exists(db) or not os.path.isdir(cur):
        return 0
    conn = sqlite3.connect(db)
    try:
        known = {r[0] for r in conn.execute("SELECT id FROM message")}
        known |= {r[0] for r in conn.execute("SELECT id FROM held_file")}
    finally:
        conn.close()
    removed = 0
    for shard in os.listdir(cur):
        d = os.path.join(cur, shard)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if not name.isdigit() or int(name) not in known:
                os.unlink(os.path.join(d, name))
                removed += 1
    return removed


def _rewrite_data_dir(config_dst):
    path = os.path.join(config_dst, STATIC_FILE)
    with open(path, encoding="utf-8") as f:
        doc = tomlkit.parse(f.read())
    if doc.get("DataDir") != "../data":
        doc["DataDir"] = "../data"
        with open(path, "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(doc))


def backup(config_dir, data_dir, dest, pause=None):
    """Write the backup to ``dest`` (must not exist, or be empty). ``pause(name)``
    returns a resume callable for the account ``name`` (the running server's
    ``Account.pause_removals``); None when the server is stopped. Returns counts."""
    if os.path.exists(dest) and os.listdir(dest):
        raise BackupError(f"{dest} exists and is not empty")
    real_dest = os.path.realpath(dest)
    for d in (config_dir, data_dir):
        r = os.path.realpath(d)
        if real_dest == r or real_dest.startswith(r + os.sep):
            raise BackupError(f"{dest} is inside {d}")
    os.makedirs(dest, mode=0o700, exist_ok=True)
    counts = {"databases": 0, "linked": 0, "copied": 0, "vanished": 0, "accounts": 0, "queue_finished": 0}
    config_dst = os.path.join(dest, "config")
    data_dst = os.path.join(dest, "data")
    _copy_config(config_dir, config_dst, data_dir, counts)
    _rewrite_data_dir(config_dst)
    os.makedirs(data_dst, mode=0o700)
    if not os.path.isdir(data_dir):
        return counts  # never started: nothing but the config

    accounts_dir = os.path.join(data_dir, "accounts")
    # Everything but the accounts: databases (queue.db first, then its files), TLS, ACME.
    for name in sorted(os.listdir(data_dir)):
        src = os.path.join(data_dir, name)
        if name == "accounts" or name in SKIP_FILES or name in SKIP_DIRS:
            continue
        if os.path.isdir(src):
            continue
        if name.endswith(".db"):
            backup_sqlite(src, os.path.join(data_dst, name))
            counts["databases"] += 1
        elif not name.endswith(("-wal", "-shm", "-journal")) and os.path.isfile(src):
            shutil.copy2(src, os.path.join(data_dst, name))
            counts["copied"] += 1
    for name in sorted(os.listdir(data_dir)):
        src = os.path.join(data_dir, name)
        if name != "accounts" and name not in SKIP_DIRS and os.path.isdir(src):
            _copy_tree(src, os.path.join(data_dst, name), counts,
                       link_dirs=(os.path.join(data_dir, "queue"),))
    counts["queue_finished"] = _drop_finished_queue_entries(data_dst)

    if os.path.isdir(accounts_dir):
        for name in sorted(os.listdir(accounts_dir)):
            src = os.path.join(accounts_dir, name)
            if not os.path.isdir(src):
                continue
            resume = pause(name) if pause is not None else None
            try:
                # The index first, then the files: with removals paused, every message of
                # the snapshot still has its file; files of later deliveries are extra
                # (verifydata notes them), never missing.
                dst = os.path.join(data_dst, "accounts", name)
                os.makedirs(dst, mode=0o700)
                if os.path.exists(os.path.join(src, "index.db")):
                    backup_sqlite(os.path.join(src, "index.db"), os.path.join(dst, "index.db"))
                    counts["databases"] += 1
                for sub in sorted(os.listdir(src)):
                    p = os.path.join(src, sub)
                    if sub == "index.db" or sub.endswith(("-wal", "-shm", "-journal")):
                        continue
                    if os.path.isdir(p):
                        _copy_tree(p, os.path.join(dst, sub), counts, link_dirs=(os.path.join(src, "maildir"),))
                    elif sub.endswith(".db"):
                        backup_sqlite(p, os.path.join(dst, sub))
                        counts["databases"] += 1
                    elif os.path.isfile(p):
                        shutil.copy2(p, os.path.join(dst, sub))
                        counts["copied"] += 1
                counts["extra"] = counts.get("extra", 0) + _prune_to_index(dst)
                counts["accounts"] += 1
            finally:
                if resume is not None:
                    resume()
    return counts


def run_and_verify(config_dir, data_dir, dest, pause=None):
    """backup(), then the checks of verifydata on the copy; the counts with
    ``verify``: [(what, ok, [errors])]."""
    from moxtw.queue.verify import verify_queue
    from moxtw.store.verify import verify_data

    counts = backup(config_dir, data_dir, dest, pause)
    data_dst = os.path.join(dest, "data")
    reports = verify_data(data_dst)
    if os.path.exists(os.path.join(data_dst, "queue.db")):
        reports.append(verify_queue(data_dst))
    counts["verify"] = [
        (f"account {r.account}: {r.messages} messages" if hasattr(r, "account") else f"queue: {r.entries} entries",
         r.ok, list(r.errors)) for r in reports]
    return counts
