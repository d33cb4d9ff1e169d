"""verifydata: check an account's message files against its index.

Run after a crash (or any time; it only reads unless asked to fix). Findings come in two
kinds: *errors* are states the store never produces on its own (a row whose file is missing
or has the wrong size, counts that do not add up, a damaged database) and mean data needs
attention; *notes* are leftovers of operations that were interrupted before they were
acknowledged (files in tmp/, files without an index row, full-text rows of removed
messages), which are safe to remove with ``fix=True``.
"""

import os
import re
from dataclasses import dataclass

from moxtw.db.findings import Findings
from moxtw.store import schema
from moxtw.store.account import message_file

_NUMERIC = re.compile(r"^\d+$")


@dataclass
class Report(Findings):
    account: str = ""
    messages: int = 0


def verify_account(path, fix=False):
    """Verify one account directory. Blocking: run off the reactor thread."""
    name = os.path.basename(os.path.normpath(path))
    report = Report(account=name)
    maildir = os.path.join(path, "maildir")
    db = os.path.join(path, "index.db")
    if not os.path.exists(db):
        report.errors.append(f"{db}: index database missing")
        return report
    conn = schema.connect(db)
    try:
        _verify(conn, maildir, report, fix)
    finally:
        conn.close()
    return report


def _verify(conn, maildir, report, fix):
    check = conn.execute("PRAGMA integrity_check").fetchall()
    if [tuple(r) for r in check] != [("ok",)]:
        report.errors.append("database integrity check: " + "; ".join(r[0] for r in check))
        return
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != schema.LATEST:
        report.notes.append(f"schema version {version}, current is {schema.LATEST}; opening upgrades it")
        if version < 5:
            return  # the checks below need the tables of version 5
    rows = conn.execute("SELECT id, mailbox_id, uid, size, modseq FROM message").fetchall()
    report.messages = len(rows)
    ids = set()
    mailboxes = {r["id"]: r for r in conn.execute("SELECT * FROM mailbox")}
    for r in rows:
        ids.add(r["id"])
        where = f"message {r['id']} (mailbox {r['mailbox_id']}, uid {r['uid']})"
        if r["mailbox_id"] not in mailboxes:
            report.errors.append(f"{where}: mailbox does not exist")
        path = message_file(maildir, r["id"])
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            report.errors.append(f"{where}: file {path} missing")
            continue
        if size != r["size"]:
            report.errors.append(f"{where}: file is {size} bytes, index says {r['size']}")

    # Files without rows: deliveries interrupted between rename and COMMIT, or expunged
    # messages whose file removal after COMMIT was interrupted.
    # Files of expunged messages kept for IMAP sessions (moxtw.store.hold, schema 6).
    held = set()
    if version >= 6:
        held = {r[0] for r in conn.execute("SELECT id FROM held_file")}
    cur = os.path.join(maildir, "cur")
    for shard in _listdir(cur):
        sdir = os.path.join(cur, shard)
        for fname in _listdir(sdir):
            fpath = os.path.join(sdir, fname)
            if _NUMERIC.match(fname) and int(fname) in held:
                report.notes.append(
                    f"{fpath}: expunged, kept while IMAP sessions may fetch it (removed when they"
                    " let go, or when the account is next opened)"
                )
                if fix:
                    os.unlink(fpath)
                    report.fixed.append(f"removed {fpath}")
                continue
            if not _NUMERIC.match(fname) or int(fname) not in ids:
                report.notes.append(f"{fpath}: file without index row (unacknowledged delivery or interrupted removal)")
                if fix:
                    os.unlink(fpath)
                    report.fixed.append(f"removed {fpath}")
    tmp = os.path.join(maildir, "tmp")
    for fname in _listdir(tmp):
        fpath = os.path.join(tmp, fname)
        report.notes.append(f"{fpath}: temporary file of an unacknowledged delivery")
        if fix:
            os.unlink(fpath)
            report.fixed.append(f"removed {fpath}")

    # Counts are updated in the same transaction as every change: they must match.
    counts = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            "SELECT mailbox_id, count(*), sum(seen = 0), sum(deleted), sum(size), max(uid),"
            " max(modseq) FROM message GROUP BY mailbox_id"
        )
    }
    for mid, mb in mailboxes.items():
        total, unseen, deleted, size, maxuid, maxmodseq = counts.get(mid, (0, 0, 0, 0, 0, 0))
        have = (mb["total"], mb["unseen"], mb["deleted"], mb["size"])
        want = (total, unseen, deleted, size)
        if have != want:
            report.errors.append(
                f"mailbox {mb['name']!r}: counts (total, unseen, deleted, size) are {have}, messages say {want}"
            )
            if fix:
                conn.execute(
                    "UPDATE mailbox SET total = ?, unseen = ?, deleted = ?, size = ? WHERE id = ?",
                    (*want, mid),
                )
                report.fixed.append(f"mailbox {mb['name']!r}: counts recomputed")
        if maxuid and mb["uidnext"] <= maxuid:
            report.errors.append(f"mailbox {mb['name']!r}: uidnext {mb['uidnext']} not above uid {maxuid}")
        if maxmodseq and mb["modseq"] < maxmodseq:
            report.errors.append(f"mailbox {mb['name']!r}: modseq {mb['modseq']} below a message's {maxmodseq}")
    state = conn.execute("SELECT modseq, quota_used FROM account_state").fetchone()
    if state is None:
        report.errors.append("account_state row missing")
        return
    total_size = conn.execute("SELECT coalesce(sum(size), 0) FROM message").fetchone()[0]
    if state["quota_used"] != total_size:
        report.errors.append(f"quota usage {state['quota_used']} differs from message sizes {total_size}")
        if fix:
            conn.execute("UPDATE account_state SET quota_used = ?", (total_size,))
            report.fixed.append("quota usage recomputed")
    maxmod = conn.execute("SELECT max(modseq) FROM message").fetchone()[0] or 0
    if state["modseq"] < maxmod:
        report.errors.append(f"account modseq {state['modseq']} below a message's {maxmod}")
    try:
        conn.execute("INSERT INTO message_search (message_search) VALUES ('integrity-check')")
    except Exception as e:
        report.errors.append(f"search text index inconsistent: {e}")
        if fix:
            conn.execute("INSERT INTO message_search (message_search) VALUES ('rebuild')")
            report.fixed.append("search text index rebuilt")
    stray_search = conn.execute(
        "SELECT count(*) FROM message_search WHERE rowid NOT IN (SELECT id FROM message)"
    ).fetchone()[0]
    if stray_search:
        report.errors.append(f"{stray_search} search text rows without message")
        if fix:
            conn.execute("DELETE FROM message_search WHERE rowid NOT IN (SELECT id FROM message)")
            report.fixed.append("removed search text rows without message")
    unindexed = conn.execute(
        "SELECT count(*) FROM message WHERE text_indexed = 1"
        " AND id NOT IN (SELECT rowid FROM message_search)"
    ).fetchone()[0]
    if unindexed:
        # The index prefilter of SEARCH skips these messages (only NOT and unnarrowed
        # searches read their files): an error; --fix makes them searched in their files.
        report.errors.append(f"{unindexed} messages marked as indexed without search text")
        if fix:
            conn.execute(
                "UPDATE message SET text_indexed = 0 WHERE text_indexed = 1"
                " AND id NOT IN (SELECT rowid FROM message_search)"
            )
            report.fixed.append("messages without search text are searched in their files")
    if version >= 10:
        pending = conn.execute("SELECT count(*) FROM message WHERE text_pending = 1").fetchone()[0]
        if pending:
            # Acknowledged before their search texts were made (large messages): SEARCH
            # reads their files until the account's indexer, run when it is opened, is done.
            report.notes.append(f"{pending} messages waiting for their search texts (made when the account is opened)")
    stray_fts = conn.execute(
        "SELECT count(*) FROM message_text WHERE rowid NOT IN (SELECT id FROM message)"
    ).fetchone()[0]
    if stray_fts:
        report.errors.append(f"{stray_fts} full-text rows without message")
        if fix:
            conn.execute("DELETE FROM message_text WHERE rowid NOT IN (SELECT id FROM message)")
            report.fixed.append("removed full-text rows without message")


def verify_data(data_dir, fix=False):
    """Verify every account under a data directory; returns [Report]."""
    accounts = os.path.join(data_dir, "accounts")
    return [verify_account(os.path.join(accounts, n), fix=fix) for n in sorted(_listdir(accounts))]


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
