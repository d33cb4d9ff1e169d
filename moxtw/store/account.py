"""One account's mailboxes and messages: maildir-written files plus an SQLite index.

Message files are written once (``maildir/tmp``, fsync, rename to ``maildir/cur/<shard>/<id>``,
fsync of the directory) and never modified; flags, mailbox membership, UIDs and everything
else are rows in ``index.db``. Every write is one index transaction on the account's writer
thread (see ``moxtw.db.worker``) and its Deferred fires only after the COMMIT is on disk.
Reads run on a second thread. Protocol code never touches files or SQLite directly: it calls
the methods here, which all return Deferreds.
"""

import functools
import ipaddress
import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import NamedTuple

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from moxtw import durable
from moxtw import message as msgparse
from moxtw import metrics
from moxtw.db.worker import Worker
from moxtw.message import binary as msgbinary
from moxtw.message import searchtext
from moxtw.message.imap import format_envelope
from moxtw.sasl import credentials
from moxtw.store import changes as ch
from moxtw.store.hold import ExpungeHold
from moxtw.store.recent import RecentTracker
from moxtw.store import junkflags, msgthread
from moxtw.store.errors import (
    MailboxExists,
    MailboxHasChildren,
    MailboxNotAllowed,
    MailboxNotFound,
    MetadataTooLarge,
    MetadataTooMany,
    NoSuchMessage,
    OutgoingLimitExceeded,
    QuotaExceeded,
)
from moxtw.store.model import (
    CANONICAL,
    DEFAULT_MAILBOXES,
    FLAG_COLUMNS,
    INBOX,
    SPECIAL_USES,
    Mailbox,
    Message,
    Placed,
    check_new_mailbox_name,
    display_keyword,
    flags_tuple,
    normalize_mailbox_name,
    parents,
    split_flags,
    to_unix,
)
from moxtw.store.spool import Spool, prepare_in_thread

log = Logger(namespace="moxtw.store")

SHARD_SIZE = 1000
FTS_MAX = 1024 * 1024  # characters of text kept in the full-text index per message
# APPENDed messages larger than this, and every delivered message, are acknowledged
# before their search texts are made: the indexer (Account._index_pending) adds them
# after the commit, many messages in one transaction (full-text indexes cost several
# times less per message in batches). Until then SEARCH reads their files.
INDEX_LATER_SIZE = 64 * 1024
# Messages and characters of text the indexer makes in one transaction.
INDEX_BATCH = 200
INDEX_BATCH_TEXT = 2 * 1024 * 1024
# Seconds the indexer waits for more messages before a batch that is not full: under a
# stream of deliveries it then indexes them by the hundred, not one by one.
INDEX_DELAY = 0.2
# A (head, message) smaller than this is joined before parsing (larger ones are written
# in two pieces, never joined in memory).
JOIN_SIZE = 64 * 1024
MAX_NEEDLE = 200  # characters of a SEARCH string looked up in the trigram index
MAX_TRIGRAMS = 16  # trigrams of a SEARCH string looked up
METADATA_MAX_VALUE = 64 * 1024  # bytes of one METADATA value (RFC 5464 4.3: MAXSIZE)
METADATA_MAX_ENTRIES = 1000  # METADATA entries of an account (RFC 5464 4.3: TOOMANY)
METADATA_MAX_TOTAL = 1024 * 1024  # bytes of all METADATA values of an account


def shard_dir(maildir, msg_id):
    return os.path.join(maildir, "cur", str(msg_id // SHARD_SIZE))


def message_file(maildir, msg_id):
    return os.path.join(shard_dir(maildir, msg_id), str(msg_id))


@functools.lru_cache(maxsize=1024)
def mask_ip(ip):
    """Masked forms of a remote IP used by reputation: (/32,/26,/21) or (/64,/48,/32),
    as ipaddress writes the networks. Cached: senders come back, and ip_network is slow."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ("", "", "")
    width = addr.max_prefixlen
    value = int(addr)
    out = []
    for b in (32, 26, 21) if addr.version == 4 else (64, 48, 32):
        net = value & ~((1 << (width - b)) - 1)
        out.append(f"{type(addr)(net).compressed}/{b}")
    return tuple(out)


class Prepared:
    """A message file written to tmp/ and fsynced, with its parsed summary. ``index_later``:
    the summary has no texts; the account's indexer makes them after the commit."""

    def __init__(self, tmp_path, size, summary, index_later=False):
        self.tmp_path = tmp_path
        self.size = size
        self.summary = summary
        self.index_later = index_later

    def discard(self):
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


def write_tmp(maildir, data, later=False):
    """Repair line endings, parse, write to tmp/ and fsync. Runs off the reactor thread.
    ``data``: the message as bytes, a (head, message) tuple (header fields to put before
    the message, such as Return-Path and Received), or a finished Spool (already in tmp/).
    ``later``: no search texts now whatever the size (deliveries: the indexer makes them)."""
    if isinstance(data, Spool):
        return _prepare_spooled(maildir, data, later)
    if isinstance(data, tuple):
        head, body = (msgparse.fix_line_endings(bytes(piece)) for piece in data)
        if len(head) + len(body) <= JOIN_SIZE or body[:1] in (b" ", b"\t"):
            # A first line that continues the head's last field parses only joined.
            data = head + body
        else:
            # A large message is not joined with its head in memory: parsed alone (the
            # head's fields are trace fields, in no summary item), its part offsets moved
            # past the head, and written in two pieces.
            summary = msgparse.summary(body, search_text=False, texts=False)
            summary.part_json = _shift_part_json(summary.part_json, len(head), True)
            path = os.path.join(maildir, "tmp", f"{time.time_ns()}.{uuid.uuid4().hex}")
            durable.write_new(path, (head, body))
            return Prepared(path, len(head) + len(body), summary, True)
    data = msgparse.fix_line_endings(bytes(data))
    later = later or len(data) > INDEX_LATER_SIZE
    summary = msgparse.summary(data, search_text=not later, texts=not later)
    path = os.path.join(maildir, "tmp", f"{time.time_ns()}.{uuid.uuid4().hex}")
    durable.write_new(path, data)
    return Prepared(path, len(data), summary, later)


def _shift_part_json(d, n, root=False):
    """A part tree (Part.to_json) with its offsets moved ``n`` bytes on, for header
    fields put before the message: the root's header still starts at 0."""
    d = dict(d)
    for key in ("b", "e") if root else ("h", "b", "e"):
        d[key] = d.get(key, 0) + n
    if "c" in d:
        d["c"] = [_shift_part_json(c, n) for c in d["c"]]
    if "m" in d:
        d["m"] = _shift_part_json(d["m"], n)
    return d


def _spool_binary_as_text(spool):
    with open(spool.path, "rb") as f:
        data = f.read()
    converted = msgbinary.binary_parts_as_base64(data)
    if converted is not data:
        # Written beside and renamed over: the spool file is whole at every moment.
        tmp = spool.path + ".b64"
        with open(tmp, "wb") as f:
            f.write(converted)
        os.replace(tmp, spool.path)
        spool.size = len(converted)
    return spool


def _prepare_spooled(maildir, spool, later=False):
    """A spooled message is parsed and fsynced where it is, not copied; only one whose
    line endings need repair (rare: clients send CRLF) is written anew."""
    with open(spool.path, "rb") as f:
        data = f.read()
    fixed = msgparse.fix_line_endings(data)
    if fixed is not data:
        os.unlink(spool.path)
        return write_tmp(maildir, fixed, later)
    later = later or len(data) > INDEX_LATER_SIZE
    summary = msgparse.summary(data, search_text=not later, texts=not later)
    fd = os.open(spool.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return Prepared(spool.path, len(data), summary, later)


class Account:
    """An open account. Obtain through ``Store.open_account``."""

    def __init__(self, name, path, reactor, threadpool=None):
        self.name = name
        self.path = path
        self.maildir = os.path.join(path, "maildir")
        self.db_path = os.path.join(path, "index.db")
        self.bus = ch.ChangeBus()
        # \Recent for IMAP4rev1 sessions; told of each commit before the subscribers.
        self.recent = RecentTracker()
        # Expunged messages that sessions not yet told of it may still FETCH.
        self.hold = ExpungeHold(self._remove_held)
        self._removing = set()
        # moxtw backup: expunged files stay while it copies the account (pause_removals).
        self._removal_lock = threading.Lock()
        self._removals_paused = 0
        self._paused_paths = []
        # Maximum total size of all messages in bytes; 0 means no limit. Set from config
        # (QuotaMessageSize) by whoever opens the account, and updated on reload.
        self.quota = 0
        # AutomaticJunkFlags of the account (moxtw.store.junkflags), set from config.
        self.junk_rules = junkflags.JunkFlagRules()
        # RejectsMailbox of the account's config: messages leaving it are no longer
        # rejects (their flags then count for reputation and training).
        self.rejects_mailbox = ""
        self._reactor = reactor
        self._threadpool = threadpool
        self._writer = Worker(
            self.db_path,
            reactor,
            f"store-w-{name}",
            writer=True,
            on_committed=self._committed,
            store_metrics=True,
        )
        self._reader = Worker(self.db_path, reactor, f"store-r-{name}", writer=False)
        self._indexing = None  # Deferred of the running indexer (_index_pending)
        self._index_again = False
        self._closing = False

    # -- helpers

    def _in_thread(self, fn, *args):
        if self._threadpool is None:
            return threads.deferToThread(fn, *args)
        return threads.deferToThreadPool(self._reactor, self._threadpool, fn, *args)

    def _write(self, fn):
        return self._writer.submit(fn)

    def spool(self):
        """A Spool in this account's tmp/ for a message being received; pass it to
        ``append``/``append_many`` as the data once ``finish()`` fired."""
        return Spool(self.maildir, self._in_thread)

    def _read(self, fn):
        return self._reader.submit(lambda conn, ctx: fn(conn))

    @defer.inlineCallbacks
    def close(self):
        self._closing = True
        if self._indexing is not None:
            yield self.indexing_done()
        yield self.removals_done()
        yield defer.gatherResults([self._writer.stop(), self._reader.stop()])

    def message_path(self, msg_id):
        """Path of a message file; files are immutable, readers may open them any time."""
        return message_file(self.maildir, msg_id)

    def open_message(self, msg_id):
        """Open a message file for streaming (binary, read-only)."""
        return open(self.message_path(msg_id), "rb")

    # -- messages: delivery and append

    def deliver(self, mailbox, data, flags=(), received=None, facts=None, origin=None):
        """Deliver an incoming message into ``mailbox`` (created when missing).

        ``data`` is the message as bytes, or (head, message): header fields to put
        before it (write_tmp). Returns a Deferred firing with the Message once file and
        index are durable.
        """
        started = time.monotonic()

        def done(result):
            ok = not isinstance(result, Failure)
            metrics.STORE_DELIVERIES.labels(result="ok" if ok else "error").inc()
            if ok:
                metrics.STORE_DELIVERY_DURATION.observe(time.monotonic() - started)
                return result[0]
            return result

        return self._add(mailbox, [(data, flags, received)], facts, origin, create=True,
                         index_later=True).addBoth(done)

    def append(self, mailbox, data, flags=(), received=None, origin=None):
        """IMAP APPEND: like deliver, but the mailbox must exist (MailboxNotFound)."""
        return self._add(mailbox, [(data, flags, received)], None, origin, create=False).addCallback(
            lambda msgs: msgs[0]
        )

    def binary_as_text(self, data):
        """A message APPENDed as a literal8 (RFC 3516 4.4), bytes or a finished Spool,
        with its binary parts re-encoded as base64 (``moxtw.message.binary``) so that
        storing keeps them byte-exact; Deferred of the bytes, or of the same Spool with
        its file rewritten when a part changed. Runs off the reactor thread."""
        if isinstance(data, Spool):
            return prepare_in_thread(self._reactor, _spool_binary_as_text, data)
        return self._in_thread(msgbinary.binary_parts_as_base64, bytes(data))

    def append_many(self, mailbox, items, origin=None, create=False, imported=None):
        """MULTIAPPEND (RFC 3502): [(data, flags, received)], all or nothing. Returns
        the Messages as a Placed (with the mailbox's UIDVALIDITY, for APPENDUID).
        ``imported``: (source, [key per item]) recorded in the same transaction
        (moxtw import; see :meth:`imported_keys`); ``create``: make a missing mailbox."""
        return self._add(mailbox, list(items), None, origin, create=create, imported=imported)

    def read(self, fn):
        """Run ``fn(conn)`` on the account's reader thread (read-only; for tools such
        as the export, which reads a snapshot in one transaction); Deferred of its result."""
        return self._read(fn)

    def write(self, fn):
        """Run ``fn(conn, ctx)`` in a write transaction (group-committed; for the junk
        trainer's bookkeeping, not for messages or flags); Deferred of its result once
        committed."""
        return self._write(fn)

    def imported_keys(self, source, keys):
        """Deferred of the subset of ``keys`` already imported from ``source``."""
        keys = list(keys)
        return self._read(lambda conn: _present(
            conn, "SELECT key FROM imported WHERE source = ? AND key IN ({})", (source,), keys))

    def message_ids_present(self, message_ids):
        """Deferred of the subset of ``message_ids`` (Message-ID values) some stored
        message of the account has."""
        ids = [m for m in message_ids if m]
        return self._read(lambda conn: _present(
            conn, "SELECT message_id FROM message WHERE message_id IN ({})", (), ids))

    @defer.inlineCallbacks
    def _add(self, mailbox, items, facts, origin, create, imported=None, index_later=False):
        name = normalize_mailbox_name(mailbox)
        parsed_flags = [split_flags(flags) for _, flags, _ in items]
        prepared = []
        try:
            for data, _, _ in items:
                if isinstance(data, Spool):
                    # Parsing holds the message in memory: large ones one at a time.
                    p = yield prepare_in_thread(self._reactor, write_tmp, self.maildir, data, index_later)
                else:
                    p = yield self._in_thread(write_tmp, self.maildir, data, index_later)
                prepared.append(p)
            result = yield self._write(
                lambda conn, ctx: self._insert(
                    conn, ctx, name, prepared, parsed_flags, items, facts, origin, create, imported
                )
            )
        except BaseException:
            for p in prepared:
                p.discard()
            raise
        if any(p.index_later for p in prepared):
            self._kick_indexer()
        return result

    # -- search texts made after the commit (deliveries, large APPENDs)

    def _kick_indexer(self, delay=True):
        """Start the indexer unless it runs (it looks for more work before it stops).
        ``delay``: wait INDEX_DELAY first, for more messages to come (not when opening)."""
        if self._indexing is None and not self._closing:
            self._indexing = defer.Deferred.fromCoroutine(self._index_pending(delay))
            self._indexing.addErrback(lambda f: log.failure("indexing search texts", f, account=self.name))
        else:
            self._index_again = True

    async def _index_pending(self, delay=True):
        """Make the search texts of messages committed with ``text_pending``, off the
        reactor thread: up to INDEX_BATCH messages or INDEX_BATCH_TEXT characters of
        text (at least one message) at a time, stored in one write operation."""
        try:
            full = not delay
            while not self._closing:
                if not full:
                    await task.deferLater(self._reactor, INDEX_DELAY, lambda: None)
                    if self._closing:
                        return
                self._index_again = False
                ids = await self._read(lambda conn: [r[0] for r in conn.execute(
                    "SELECT id FROM message WHERE text_pending = 1 ORDER BY id LIMIT ?", (INDEX_BATCH,))])
                full = len(ids) == INDEX_BATCH
                if not ids:
                    if self._index_again:
                        continue
                    return
                while ids and not self._closing:
                    # In the thread that parses large spooled messages: a bounded batch
                    # of texts in memory at a time, whatever else arrives.
                    done = await prepare_in_thread(self._reactor, _texts_of_files, self.maildir, ids)
                    for msg_id, _texts, error in done:
                        if error is not None:
                            # One message must not stop the others: it stays searched in its file.
                            log.error("making search texts of message {msg_id} failed: {error}", msg_id=msg_id,
                                      account=self.name, error=error)
                    await self._write(lambda conn, ctx, done=done: _store_texts_many(conn, done))
                    ids = ids[len(done):]
        finally:
            self._indexing = None

    def indexing_done(self):
        """Deferred firing when no search texts are waiting to be made (for tests)."""
        if self._indexing is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._indexing.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _insert(self, conn, ctx, name, prepared, parsed_flags, items, facts, origin, create, imported=None):
        total_size = sum(p.size for p in prepared)
        self._check_quota(conn, total_size)
        mb = _mailbox_row(conn, name)
        if mb is None:
            if not create:
                raise MailboxNotFound(name)
            mb = self._create(conn, ctx, check_new_mailbox_name(name), None, origin)
        out = []
        for p, (system, keywords), (_, _, received) in zip(prepared, parsed_flags, items):
            out.append(self._insert_one(conn, ctx, mb, p, system, keywords, received, facts, origin))
        self._finish_mailbox_change(conn, ctx, mb["id"], origin)
        conn.execute(
            "UPDATE account_state SET quota_used = quota_used + ?", (total_size,)
        )
        if imported is not None:
            source, keys = imported
            conn.executemany("INSERT OR IGNORE INTO imported (source, key) VALUES (?, ?)",
                             [(source, k) for k in keys])
        return Placed(out, mb["uidvalidity"])

    def _check_quota(self, conn, size):
        if self.quota and size:
            used = conn.execute("SELECT quota_used FROM account_state").fetchone()[0]
            if used + size > self.quota:
                raise QuotaExceeded(used, size, self.quota)

    def _insert_one(self, conn, ctx, mb, p, system, keywords, received, facts, origin):
        s = p.summary
        verdict = self.junk_rules.verdict(mb["name"], mb["special_use"], moved=False)
        if verdict is not None:
            keywords = junkflags.apply(keywords, verdict)
        now = time.time()
        if received is None:
            received = datetime.now(timezone.utc)
        tz = received.utcoffset()
        tz_minutes = int(tz.total_seconds() // 60) if tz is not None else 0
        modseq = _next_modseq(conn)
        uid = conn.execute(
            "UPDATE mailbox SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
            (mb["id"],),
        ).fetchone()[0]
        first_from = s.from_[0] if s.from_ else None
        cols = {
            "mailbox_id": mb["id"],
            "uid": uid,
            "modseq": modseq,
            "createseq": modseq,
            "keywords": json.dumps(keywords),
            "received": to_unix(received),
            "received_tz": tz_minutes,
            "saved": int(now),
            "size": p.size,
            "message_id": s.message_id,
            "in_reply_to": json.dumps(s.in_reply_to),
            "refs": json.dumps(s.references),
            "subject": s.subject,
            "base_subject": s.base_subject.lower(),  # compared case-insensitively
            "sent": to_unix(s.date) if s.date is not None else None,
            "from_address": (
                f"{first_from.localpart}@{first_from.domain}".lower() if first_from else ""
            ),
            "list_id": s.list_id,
            "envelope": json.dumps(s.envelope),
            "envelope_imap": s.envelope_imap,
            "text_indexed": int(s.search_header is not None),
            "text_pending": int(p.index_later),
            "bodystructure": json.dumps(s.bodystructure),
            "part": json.dumps(s.part_json),
            "preview": s.preview,
        }
        for col in FLAG_COLUMNS:
            cols[col] = int(system.get(col, False))
        if facts is not None:
            cols.update(facts_columns(facts))
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        msg_id = conn.execute(
            f"INSERT INTO message ({names}) VALUES ({marks})", tuple(cols.values())
        ).lastrowid
        if not p.index_later:
            conn.execute(
                "INSERT INTO message_text (rowid, text) VALUES (?, ?)", (msg_id, s.text[:FTS_MAX])
            )
        if s.search_header is not None:
            conn.execute(
                "INSERT INTO message_search (rowid, header, body) VALUES (?, ?, ?)",
                (msg_id, s.search_header, s.search_body),
            )
        msgthread.assign(
            conn,
            msg_id,
            s.message_id,
            s.in_reply_to,
            s.references,
            s.subject,
            s.base_subject,
            cols["received"],
        )
        self._place_file(ctx, p.tmp_path, msg_id)
        _count(conn, mb["id"], cols, +1)
        _note_keywords(conn, ctx, mb["id"], keywords, origin)
        flags = flags_tuple(cols, keywords)
        ctx.changes.append(ch.ChangeAddUID(mb["id"], uid, modseq, flags, origin))
        row = conn.execute("SELECT * FROM message WHERE id = ?", (msg_id,)).fetchone()
        return Message.from_row(row)

    def _place_file(self, ctx, tmp_path, msg_id):
        # Runs inside the transaction: the file gets its final name before COMMIT, and the
        # directory entry is fsynced (worker) before COMMIT too. A crash in between leaves
        # a file without a row, which verifydata reports as an unacknowledged delivery.
        d = shard_dir(self.maildir, msg_id)
        if not os.path.isdir(d):
            durable.make_dirs(d)
            ctx.sync_dirs.add(os.path.dirname(d))
        final = os.path.join(d, str(msg_id))
        os.rename(tmp_path, final)
        ctx.sync_dirs.add(d)
        ctx.on_rollback.append(lambda: _unlink(final))

    def _link_file(self, ctx, src_id, msg_id):
        d = shard_dir(self.maildir, msg_id)
        if not os.path.isdir(d):
            durable.make_dirs(d)
            ctx.sync_dirs.add(os.path.dirname(d))
        final = os.path.join(d, str(msg_id))
        _unlink(final)  # a stray file from an interrupted, never-acknowledged delivery
        os.link(self.message_path(src_id), final)
        ctx.sync_dirs.add(d)
        ctx.on_rollback.append(lambda: _unlink(final))

    def _committed(self, changes):
        self.recent.changed(changes)
        self.hold.committed(changes)
        self.bus.publish(changes)

    def _remove_held(self, ids):
        """Files of expunged messages no session holds any more: removed, then their
        ``held_file`` records (a crash in between leaves records of missing files, which
        opening the account clears)."""
        ids = list(ids)

        def unlink_all():
            for msg_id in ids:
                self._unlink_expunged(self.message_path(msg_id))

        def forget(_):
            def op(conn, ctx):
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    conn.execute(
                        f"DELETE FROM held_file WHERE id IN ({','.join('?' * len(chunk))})", chunk
                    )
            return self._write(op)

        d = self._in_thread(unlink_all)
        d.addCallback(forget)
        d.addErrback(lambda f: log.failure("removing expunged message files failed", f))
        self._removing.add(d)
        d.addBoth(lambda r: (self._removing.discard(d), r)[1])
        return d

    def _unlink_expunged(self, path):
        """Remove an expunged message's file, or keep it for later while a backup copies
        the account. Any thread."""
        with self._removal_lock:
            if self._removals_paused:
                self._paused_paths.append(path)
                return
        _unlink(path)

    def pause_removals(self):
        """Keep expunged messages' files until the returned ``resume()`` is called (from
        any thread; it removes what was kept, blocking). A crash in between leaves files
        without index rows, which verifydata reports and ``--fix`` removes."""
        with self._removal_lock:
            self._removals_paused += 1
        done = []

        def resume():
            if done:
                return
            done.append(True)
            with self._removal_lock:
                self._removals_paused -= 1
                if self._removals_paused:
                    return
                paths, self._paused_paths = self._paused_paths, []
            for p in paths:
                _unlink(p)

        return resume

    def removals_done(self):
        """Deferred firing once the removals of expunged files under way are done."""
        return defer.gatherResults(list(self._removing)).addCallback(lambda _: None)

    def _finish_mailbox_change(self, conn, ctx, mailbox_id, origin):
        row = conn.execute("SELECT * FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
        ctx.changes.append(
            ch.ChangeMailboxCounts(
                mailbox_id,
                row["name"],
                ch.MailboxCounts(row["total"], row["unseen"], row["deleted"], row["size"]),
                origin,
            )
        )

    # -- messages: copy, move, flags, expunge

    def copy(self, src_mailbox_id, uids, dest, origin=None):
        """COPY messages; returns [(source uid, new uid)] (RFC 4315 COPYUID), a Placed
        that also carries the destination's UIDVALIDITY."""
        dest = normalize_mailbox_name(dest)
        return self._write(lambda conn, ctx: self._copy(conn, ctx, src_mailbox_id, uids, dest, origin))

    def _copy(self, conn, ctx, src_mailbox_id, uids, dest, origin):
        dst = _mailbox_row(conn, dest)
        if dst is None:
            raise MailboxNotFound(dest)
        rows = _rows_for_uids(conn, src_mailbox_id, uids)
        self._check_quota(conn, sum(r["size"] for r in rows))
        src_use = _mailbox_use(conn, src_mailbox_id)
        out = []
        now = int(time.time())
        # junkclass is generated from the keywords (schema 12).
        skip = {"id", "mailbox_id", "uid", "modseq", "createseq", "saved", "junkclass"}
        for r in rows:
            modseq = _next_modseq(conn)
            uid = conn.execute(
                "UPDATE mailbox SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
                (dst["id"],),
            ).fetchone()[0]
            cols = {k: r[k] for k in r.keys() if k not in skip}
            cols.update(mailbox_id=dst["id"], uid=uid, modseq=modseq, createseq=modseq, saved=now)
            verdict = self.junk_rules.verdict(dst["name"], dst["special_use"], src_use)
            if verdict == "neutral" and r["is_reject"]:
                verdict = None  # leaving Rejects: a flag the user set there stays
            if verdict is not None:
                cols["keywords"] = json.dumps(junkflags.apply(json.loads(r["keywords"]), verdict))
            if r["is_reject"] and dst["name"] != self.rejects_mailbox:
                cols["is_reject"] = 0
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            new_id = conn.execute(
                f"INSERT INTO message ({names}) VALUES ({marks})", tuple(cols.values())
            ).lastrowid
            conn.execute(
                "INSERT INTO message_text (rowid, text)"
                " SELECT ?, text FROM message_text WHERE rowid = ?",
                (new_id, r["id"]),
            )
            conn.execute(
                "INSERT INTO message_search (rowid, header, body)"
                " SELECT ?, header, body FROM message_search WHERE rowid = ?",
                (new_id, r["id"]),
            )
            self._link_file(ctx, r["id"], new_id)
            _count(conn, dst["id"], cols, +1)
            keywords = json.loads(cols["keywords"])
            _note_keywords(conn, ctx, dst["id"], keywords, origin)
            ctx.changes.append(
                ch.ChangeAddUID(dst["id"], uid, modseq, flags_tuple(r, keywords), origin)
            )
            out.append((r["uid"], uid))
        if rows:
            conn.execute(
                "UPDATE account_state SET quota_used = quota_used + ?",
                (sum(r["size"] for r in rows),),
            )
            self._finish_mailbox_change(conn, ctx, dst["id"], origin)
        return Placed(out, dst["uidvalidity"])

    def move(self, src_mailbox_id, uids, dest, origin=None):
        """MOVE (RFC 6851): returns [(old uid, new uid)] as a Placed, like copy; no
        file is touched."""
        dest = normalize_mailbox_name(dest)
        return self._write(lambda conn, ctx: self._move(conn, ctx, src_mailbox_id, uids, dest, origin))

    def _move(self, conn, ctx, src_mailbox_id, uids, dest, origin):
        dst = _mailbox_row(conn, dest)
        if dst is None:
            raise MailboxNotFound(dest)
        rows = _rows_for_uids(conn, src_mailbox_id, uids)
        # Into the same mailbox too: each message gets a new UID at the end (as Dovecot
        # does; RFC 6851 3.1 does not forbid it).
        if not rows:
            return Placed([], dst["uidvalidity"])
        out = []
        now = int(time.time())
        modseq = _next_modseq(conn)
        verdict = self.junk_rules.verdict(dst["name"], dst["special_use"], _mailbox_use(conn, src_mailbox_id))
        for r in rows:
            uid = conn.execute(
                "UPDATE mailbox SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
                (dst["id"],),
            ).fetchone()[0]
            kw_json = r["keywords"]
            if verdict is not None and not (verdict == "neutral" and r["is_reject"]):
                # (Leaving Rejects for a neutral mailbox: a flag the user set stays.)
                kw_json = json.dumps(junkflags.apply(json.loads(kw_json), verdict))
            conn.execute(
                "UPDATE message SET mailbox_id = ?, uid = ?, modseq = ?, saved = ?, keywords = ?,"
                " is_reject = ? WHERE id = ?",
                (dst["id"], uid, modseq, now, kw_json,
                 int(bool(r["is_reject"]) and dst["name"] == self.rejects_mailbox), r["id"]),
            )
            conn.execute(
                "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                (src_mailbox_id, r["uid"], modseq),
            )
            _count(conn, src_mailbox_id, r, -1)
            _count(conn, dst["id"], {**dict(r), "modseq": modseq}, +1)
            keywords = json.loads(kw_json)
            _note_keywords(conn, ctx, dst["id"], keywords, origin)
            ctx.changes.append(
                ch.ChangeAddUID(dst["id"], uid, modseq, flags_tuple(r, keywords), origin)
            )
            out.append((r["uid"], uid))
        conn.execute("UPDATE mailbox SET modseq = ? WHERE id = ?", (modseq, src_mailbox_id))
        # The rows as they were in the source mailbox, for sessions still showing them.
        ctx.changes.insert(0, ch.ChangeRemoveUIDs(
            src_mailbox_id, tuple(r["uid"] for r in rows), modseq, origin,
            rows=tuple(dict(r) for r in rows),
        ))
        self._finish_mailbox_change(conn, ctx, src_mailbox_id, origin)
        self._finish_mailbox_change(conn, ctx, dst["id"], origin)
        return Placed(out, dst["uidvalidity"])

    def store_flags(self, mailbox_id, uids, mode, flags, unchangedsince=None, origin=None):
        """STORE: mode is "set", "add" or "remove".

        Returns (changed, modified): changed is [(uid, modseq, flags)] for messages whose
        flags changed; modified lists UIDs skipped because their modseq was above
        ``unchangedsince`` (RFC 7162 3.1.3).
        """
        if mode not in ("set", "add", "remove"):
            raise ValueError(f"bad store mode {mode!r}")
        system, keywords = split_flags(flags)
        return self._write(
            lambda conn, ctx: self._store_flags(
                conn, ctx, mailbox_id, uids, mode, system, keywords, unchangedsince, origin
            )
        )

    def _store_flags(self, conn, ctx, mailbox_id, uids, mode, system, keywords, unchangedsince, origin):
        rows = _rows_for_uids(conn, mailbox_id, uids)
        changed = []
        modified = []
        modseq = None
        for r in rows:
            if unchangedsince is not None and r["modseq"] > unchangedsince:
                modified.append(r["uid"])
                continue
            old_kw = json.loads(r["keywords"])
            new = {}
            if mode == "set":
                for col in FLAG_COLUMNS:
                    new[col] = int(system.get(col, False))
                new_kw = sorted(set(keywords))
            elif mode == "add":
                for col in FLAG_COLUMNS:
                    new[col] = 1 if system.get(col) else r[col]
                new_kw = set(old_kw) | set(keywords)
                # $junk and $notjunk exclude each other: setting one clears the other.
                if junkflags.JUNK in keywords:
                    new_kw.discard(junkflags.NOTJUNK)
                if junkflags.NOTJUNK in keywords:
                    new_kw.discard(junkflags.JUNK)
                new_kw = sorted(new_kw)
            else:
                for col in FLAG_COLUMNS:
                    new[col] = 0 if system.get(col) else r[col]
                new_kw = sorted(set(old_kw) - set(keywords))
            if all(new[c] == r[c] for c in FLAG_COLUMNS) and new_kw == old_kw:
                continue
            if modseq is None:
                modseq = _next_modseq(conn)
            sets = ", ".join(f"{c} = ?" for c in FLAG_COLUMNS)
            conn.execute(
                f"UPDATE message SET {sets}, keywords = ?, modseq = ? WHERE id = ?",
                (*(new[c] for c in FLAG_COLUMNS), json.dumps(new_kw), modseq, r["id"]),
            )
            _count(conn, mailbox_id, r, -1)
            _count(conn, mailbox_id, {**dict(r), **new, "modseq": modseq}, +1)
            flags = flags_tuple(new, new_kw)
            changed.append((r["uid"], modseq, flags))
            ctx.changes.append(ch.ChangeFlags(mailbox_id, r["uid"], modseq, flags, origin))
        if changed:
            all_kw = sorted({k.lower() for _, _, f in changed for k in f if not k.startswith("\\")})
            _note_keywords(conn, ctx, mailbox_id, all_kw, origin)
            self._finish_mailbox_change(conn, ctx, mailbox_id, origin)
        return changed, modified

    def expunge(self, mailbox_id, uids=None, origin=None):
        """Remove messages flagged \\Deleted (only those in ``uids`` when given, RFC 4315
        UID EXPUNGE). Returns the expunged UIDs, ascending."""
        return self._write(lambda conn, ctx: self._expunge(conn, ctx, mailbox_id, uids, origin))

    def _expunge(self, conn, ctx, mailbox_id, uids, origin):
        if uids is None:
            rows = conn.execute(
                "SELECT * FROM message WHERE mailbox_id = ? AND deleted = 1 ORDER BY uid",
                (mailbox_id,),
            ).fetchall()
        else:
            rows = [r for r in _rows_for_uids(conn, mailbox_id, uids) if r["deleted"]]
        if not rows:
            return []
        modseq = _next_modseq(conn)
        self._remove_rows(conn, ctx, mailbox_id, rows, modseq, hold=True)
        ctx.changes.append(ch.ChangeRemoveUIDs(
            mailbox_id, tuple(r["uid"] for r in rows), modseq, origin,
            rows=tuple(dict(r) for r in rows), unlink=True,
        ))
        self._finish_mailbox_change(conn, ctx, mailbox_id, origin)
        return [r["uid"] for r in rows]

    def _remove_rows(self, conn, ctx, mailbox_id, rows, modseq, hold=False):
        """``hold``: the files stay, recorded in ``held_file``, for moxtw.store.hold to
        remove once no session shows the messages; otherwise they go after COMMIT."""
        size = 0
        for r in rows:
            conn.execute("DELETE FROM message WHERE id = ?", (r["id"],))
            conn.execute("DELETE FROM message_text WHERE rowid = ?", (r["id"],))
            conn.execute("DELETE FROM message_search WHERE rowid = ?", (r["id"],))
            msgthread.forget(conn, r["id"])
            if modseq is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    (mailbox_id, r["uid"], modseq),
                )
                _count(conn, mailbox_id, r, -1)
            size += r["size"]
            if hold:
                conn.execute("INSERT OR IGNORE INTO held_file (id) VALUES (?)", (r["id"],))
                continue
            path = self.message_path(r["id"])
            # The file goes only after COMMIT; a crash before that keeps it (harmless, and
            # verifydata explains it), a crash after it never leaves a row without a file.
            ctx.after_commit.append(lambda path=path: self._unlink_expunged(path))
        if modseq is not None:
            conn.execute("UPDATE mailbox SET modseq = ? WHERE id = ?", (modseq, mailbox_id))
        conn.execute("UPDATE account_state SET quota_used = quota_used - ?", (size,))

    # -- mailboxes

    def create_mailbox(self, name, special_use=None, origin=None):
        """CREATE (with RFC 6154 CREATE-SPECIAL-USE); missing parents are created too."""
        name = check_new_mailbox_name(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise ValueError(f"unknown special-use attribute {special_use}")

        def op(conn, ctx):
            if _mailbox_row(conn, name) is not None:
                raise MailboxExists(name)
            return Mailbox.from_row(self._create(conn, ctx, name, special_use, origin))

        return self._write(op)

    def _create(self, conn, ctx, name, special_use, origin):
        for parent in parents(name):
            if _mailbox_row(conn, parent) is None:
                self._create_one(conn, ctx, parent, None, origin)
        return self._create_one(conn, ctx, name, special_use, origin)

    def _create_one(self, conn, ctx, name, special_use, origin):
        modseq = _next_modseq(conn)
        uidvalidity = conn.execute(
            "UPDATE account_state SET next_uidvalidity = next_uidvalidity + 1"
            " RETURNING next_uidvalidity - 1"
        ).fetchone()[0]
        mid = conn.execute(
            "INSERT INTO mailbox (name, special_use, uidvalidity, uidnext, modseq, createseq)"
            " VALUES (?, ?, ?, 1, ?, ?)",
            (name, special_use, uidvalidity, modseq, modseq),
        ).lastrowid
        ctx.changes.append(ch.ChangeMailboxAdd(mid, name, special_use, origin))
        return conn.execute("SELECT * FROM mailbox WHERE id = ?", (mid,)).fetchone()

    def rename_mailbox(self, old, new, origin=None):
        """RENAME (RFC 9051 6.3.6): children move along; renaming Inbox moves its messages
        into a new mailbox and leaves Inbox empty."""
        old = normalize_mailbox_name(old)
        new = check_new_mailbox_name(new)
        return self._write(lambda conn, ctx: self._rename(conn, ctx, old, new, origin))

    def _rename(self, conn, ctx, old, new, origin):
        src = _mailbox_row(conn, old)
        if src is None:
            raise MailboxNotFound(old)
        if _mailbox_row(conn, new) is not None:
            raise MailboxExists(new)
        if new.startswith(old + "/"):
            raise MailboxNotAllowed("cannot rename a mailbox into its own child")
        if old == INBOX:
            self._create(conn, ctx, new, None, origin)
            if src["total"]:
                self._move(conn, ctx, src["id"], [(1, src["uidnext"])], new, origin)
            return Mailbox.from_row(_mailbox_row(conn, new))
        for parent in parents(new):
            if _mailbox_row(conn, parent) is None:
                self._create_one(conn, ctx, parent, None, origin)
        renamed = [(src["id"], old, new)]
        for row in conn.execute(
            "SELECT id, name FROM mailbox WHERE substr(name, 1, ?) = ?", (len(old) + 1, old + "/")
        ).fetchall():
            renamed.append((row["id"], row["name"], new + row["name"][len(old):]))
        modseq = _next_modseq(conn)
        # Two steps, so swapping children's names never collides with the UNIQUE index.
        for mid, _, _ in renamed:
            conn.execute("UPDATE mailbox SET name = ? WHERE id = ?", (f"\x00{mid}", mid))
        for mid, o, n in renamed:
            conn.execute("UPDATE mailbox SET name = ?, modseq = ? WHERE id = ?", (n, modseq, mid))
            ctx.changes.append(ch.ChangeMailboxRename(mid, o, n, origin))
        return Mailbox.from_row(_mailbox_row(conn, new))

    def delete_mailbox(self, name, origin=None):
        """DELETE: the mailbox and its messages. Inbox and mailboxes with children are
        refused (we do not keep \\Noselect placeholders)."""
        name = normalize_mailbox_name(name)
        return self._write(lambda conn, ctx: self._delete(conn, ctx, name, origin))

    def _delete(self, conn, ctx, name, origin):
        if name == INBOX:
            raise MailboxNotAllowed("Inbox cannot be deleted")
        mb = _mailbox_row(conn, name)
        if mb is None:
            raise MailboxNotFound(name)
        child = conn.execute(
            "SELECT 1 FROM mailbox WHERE substr(name, 1, ?) = ? LIMIT 1",
            (len(name) + 1, name + "/"),
        ).fetchone()
        if child is not None:
            raise MailboxHasChildren(name)
        rows = conn.execute("SELECT * FROM message WHERE mailbox_id = ?", (mb["id"],)).fetchall()
        _next_modseq(conn)
        self._remove_rows(conn, ctx, mb["id"], rows, None)
        conn.execute("DELETE FROM expunged WHERE mailbox_id = ?", (mb["id"],))
        conn.execute("DELETE FROM metadata WHERE mailbox_id = ?", (mb["id"],))
        conn.execute("DELETE FROM urlauth_key WHERE mailbox_id = ?", (mb["id"],))
        conn.execute("DELETE FROM mailbox WHERE id = ?", (mb["id"],))
        ctx.changes.append(ch.ChangeMailboxRemove(mb["id"], name, origin))
        return len(rows)

    def subscribe(self, name, origin=None):
        name = normalize_mailbox_name(name)

        def op(conn, ctx):
            conn.execute("INSERT OR IGNORE INTO subscription (name) VALUES (?)", (name,))
            ctx.changes.append(ch.ChangeSubscription(name, True, origin))

        return self._write(op)

    def unsubscribe(self, name, origin=None):
        name = normalize_mailbox_name(name)

        def op(conn, ctx):
            conn.execute("DELETE FROM subscription WHERE name = ?", (name,))
            ctx.changes.append(ch.ChangeSubscription(name, False, origin))

        return self._write(op)

    # -- METADATA (RFC 5464): entries per mailbox, mailbox_id 0 for the server's

    def set_metadata(self, mailbox_name, items, origin=None):
        """Set (value bytes) or remove (value None) entries [(name, value)] of a mailbox
        (``mailbox_name`` "" for server entries), all or none. MetadataTooLarge for a
        value over METADATA_MAX_VALUE, MetadataTooMany past METADATA_MAX_ENTRIES in the
        account, MailboxNotFound."""
        name = normalize_mailbox_name(mailbox_name) if mailbox_name else ""

        def op(conn, ctx):
            mid = _metadata_mailbox_id(conn, name)
            for entry, value in items:
                if value is None:
                    conn.execute("DELETE FROM metadata WHERE mailbox_id = ? AND name = ?", (mid, entry.lower()))
                    continue
                if len(value) > METADATA_MAX_VALUE:
                    raise MetadataTooLarge(METADATA_MAX_VALUE)
                conn.execute(
                    "INSERT OR REPLACE INTO metadata (mailbox_id, name, value) VALUES (?, ?, ?)",
                    (mid, entry.lower(), bytes(value)),
                )
            count, total = conn.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM metadata").fetchone()
            if count > METADATA_MAX_ENTRIES:
                raise MetadataTooMany(f"at most {METADATA_MAX_ENTRIES} metadata entries")
            if total > METADATA_MAX_TOTAL:
                raise MetadataTooMany(f"at most {METADATA_MAX_TOTAL} bytes of metadata values")
            ctx.changes.append(ch.ChangeMetadata(mid, name, tuple(e.lower() for e, _ in items), origin))

        return self._write(op)

    def get_metadata(self, mailbox_name, entries, depth=0):
        """{entry name: value bytes} of the entries that exist among ``entries`` (lower
        case) and, with ``depth`` 1 or None (infinity), their children one level or all
        levels down (RFC 5464 4.2.2). MailboxNotFound."""
        name = normalize_mailbox_name(mailbox_name) if mailbox_name else ""

        def q(conn):
            mid = _metadata_mailbox_id(conn, name)
            out = {}
            for entry in entries:
                entry = entry.lower()
                row = conn.execute(
                    "SELECT value FROM metadata WHERE mailbox_id = ? AND name = ?", (mid, entry)
                ).fetchone()
                if row is not None:
                    out[entry] = bytes(row[0])
                if depth == 0:
                    continue
                prefix = entry + "/"
                for child, value in conn.execute(
                    "SELECT name, value FROM metadata WHERE mailbox_id = ? AND name > ? AND name < ? ORDER BY name",
                    (mid, prefix, entry + "0"),  # "0" follows "/": the names below entry
                ):
                    if depth is None or "/" not in child[len(prefix):]:
                        out[child] = bytes(value)
            return out

        return self._read(q)

    # -- URLAUTH (RFC 4467): one random access key per mailbox

    def urlauth_key(self, mailbox_name, create=False):
        """Deferred[(key bytes or None, uidvalidity, mailbox id)] of a mailbox, read in one
        transaction; with ``create`` a missing key is made (RFC 4467 6: GENURLAUTH creates
        one). MailboxNotFound."""
        name = normalize_mailbox_name(mailbox_name)

        def read(conn):
            mb = _mailbox_row(conn, name)
            if mb is None:
                raise MailboxNotFound(name)
            row = conn.execute("SELECT key FROM urlauth_key WHERE mailbox_id = ?", (mb["id"],)).fetchone()
            return (bytes(row[0]) if row else None), mb["uidvalidity"], mb["id"]

        def make(conn, ctx):
            mb = _mailbox_row(conn, name)
            if mb is None:
                raise MailboxNotFound(name)
            conn.execute(
                "INSERT OR IGNORE INTO urlauth_key (mailbox_id, key) VALUES (?, ?)", (mb["id"], os.urandom(32))
            )
            return read(conn)

        d = self._read(read)
        if create:
            d.addCallback(lambda got: got if got[0] is not None else self._write(make))
        return d

    def subjectpass_key(self):
        """Deferred[bytes]: the account's key for subject pass tokens, made at first use."""

        def read(conn):
            row = conn.execute("SELECT key FROM subjectpass_key WHERE id = 1").fetchone()
            return bytes(row[0]) if row else None

        def make(conn, ctx):
            conn.execute("INSERT OR IGNORE INTO subjectpass_key (id, key) VALUES (1, ?)", (os.urandom(32),))
            return read(conn)

        return self._read(read).addCallback(lambda key: key if key is not None else self._write(make))

    def reset_urlauth_keys(self, mailbox_name=None):
        """Deferred: forget the access key of a mailbox, or of all mailboxes (None), so
        that every URL issued for them stops working (RFC 4467 4). MailboxNotFound."""
        name = normalize_mailbox_name(mailbox_name) if mailbox_name is not None else None

        def op(conn, ctx):
            if name is None:
                conn.execute("DELETE FROM urlauth_key")
                return
            mb = _mailbox_row(conn, name)
            if mb is None:
                raise MailboxNotFound(name)
            conn.execute("DELETE FROM urlauth_key WHERE mailbox_id = ?", (mb["id"],))

        return self._write(op)

    # -- reads

    def mailboxes(self):
        """All mailboxes, by name."""
        return self._read(
            lambda conn: [
                Mailbox.from_row(r) for r in conn.execute("SELECT * FROM mailbox ORDER BY name")
            ]
        )

    def mailbox(self, name):
        """The Mailbox by name, or None."""
        name = normalize_mailbox_name(name)
        return self._read(lambda conn: _opt(Mailbox, _mailbox_row(conn, name)))

    def subscriptions(self):
        return self._read(
            lambda conn: [r[0] for r in conn.execute("SELECT name FROM subscription ORDER BY name")]
        )

    def uids(self, mailbox_id):
        """All UIDs in a mailbox, ascending (an IMAP session's sequence numbers)."""
        return self._read(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM message WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
                )
            ]
        )

    def messages(self, mailbox_id, uids=None, changed_since=None, light=False):
        """Messages in a mailbox, by UID. ``uids``: list of UIDs or (lo, hi) ranges.

        ``light``: leave out the cached ENVELOPE, BODYSTRUCTURE and MIME tree (their
        properties are then empty), for listings that only need flags, sizes and dates."""
        cols = LIGHT_COLUMNS if light else "*"

        def q(conn):
            if uids is None:
                rows = conn.execute(
                    f"SELECT {cols} FROM message WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
                ).fetchall()
            else:
                rows = _rows_for_uids(conn, mailbox_id, uids, cols)
            if changed_since is not None:
                rows = [r for r in rows if r["modseq"] > changed_since]
            return [Message.from_row(r) for r in rows]

        return self._read(q)

    def rows(self, mailbox_id, uids, columns="*", texts=False):
        """Index rows as dicts for a list of UIDs and/or (lo, hi) ranges, by UID: for code
        that reads a few columns of many messages (SEARCH). ``columns``: "*",
        LIGHT_COLUMNS or an SQL column list that includes id, uid and text_indexed.
        ``texts``: also the search texts (see search_texts) as "search_texts", None for
        messages without."""

        def q(conn):
            rows = [dict(r) for r in _rows_for_uids(conn, mailbox_id, uids, columns)]
            if texts:
                found = _search_texts(conn, [r["id"] for r in rows if r["text_indexed"]])
                for r in rows:
                    r["search_texts"] = found.get(r["id"])
            return rows

        return self._read(q)

    def fetch_rows(self, mailbox_id, lo, hi, columns=()):
        """FetchRow tuples for UIDs lo..hi, ascending: uid, modseq, flags and the fields
        named in ``columns`` (others None), straight from the index rows, without Message
        objects: the fast path for FETCH of items the index answers (flags, dates, sizes,
        ENVELOPE, ...), which clients ask for whole mailboxes."""
        unknown = set(columns) - set(FETCH_ROW_COLUMNS)
        if unknown:
            raise ValueError(f"unknown fetch row columns {sorted(unknown)}")
        exprs = ", ".join(FETCH_ROW_COLUMNS[c] if c in columns else "NULL" for c in FetchRow._fields[3:])
        sql = (
            "SELECT uid, modseq, seen, answered, flagged, deleted, draft, keywords, " + exprs +
            " FROM message WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid"
        )

        def q(conn):
            out = []
            make = FetchRow._make
            known = {}  # most messages share a few combinations of flags
            cursor = conn.execute(sql, (mailbox_id, lo, hi))
            cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row
            for r in cursor:
                key = r[2:8]
                flags = known.get(key)
                if flags is None:
                    names = [name for name, on in zip(_SYSTEM_ORDER, r[2:7]) if on]
                    if r[7] != "[]":
                        names.extend(display_keyword(k) for k in json.loads(r[7]))
                    flags = known[key] = tuple(names)
                out.append(make((r[0], r[1], flags) + r[8:]))
            return out

        return self._read(q)

    def search_texts(self, msg_ids):
        """{message id: (header text, body text)}, as indexed (moxtw.message.searchtext
        index_texts), for the messages among ``msg_ids`` whose text is indexed."""
        ids = list(msg_ids)
        return self._read(lambda conn: _search_texts(conn, ids))

    def message(self, msg_id):
        """A Message by its id (any mailbox); NoSuchMessage when gone."""

        def q(conn):
            row = conn.execute("SELECT * FROM message WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise NoSuchMessage(msg_id)
            return Message.from_row(row)

        return self._read(q)

    def expunged_since(self, mailbox_id, modseq):
        """UIDs expunged after ``modseq`` (QRESYNC VANISHED (EARLIER))."""
        return self._read(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                )
            ]
        )

    def highest_modseq(self):
        return self._read(lambda conn: conn.execute("SELECT modseq FROM account_state").fetchone()[0])

    def quota_used(self):
        return self._read(
            lambda conn: conn.execute("SELECT quota_used FROM account_state").fetchone()[0]
        )

    def search(self, mailbox_id, criteria):
        """UIDs matching a SearchCriteria, ascending; answered from the index and FTS."""
        where, args = _criteria_sql(mailbox_id, criteria)
        sql = f"SELECT m.uid FROM message m WHERE {where} ORDER BY m.uid"
        return self._read(lambda conn: [r[0] for r in conn.execute(sql, args)])

    def thread(self, thread_id):
        """Messages of a thread in all mailboxes, oldest first."""
        return self._read(
            lambda conn: [
                Message.from_row(r)
                for r in conn.execute(
                    "SELECT * FROM message WHERE thread_id = ? ORDER BY received, id", (thread_id,)
                )
            ]
        )

    # -- outgoing limits

    def record_outgoing(self, submission, recipients, max_messages, max_first_time, now=None):
        """Check the daily limits for one submitted message and record its recipients.

        Fails with OutgoingLimitExceeded, recording nothing, when the account sent
        ``max_messages`` messages in the last 24 hours, or when the message's first-time
        recipients (never sent to before) would bring those of the last 24 hours over
        ``max_first_time``. Returns the first-time recipients."""
        now = int(now if now is not None else time.time())
        rcpts = sorted({r.lower() for r in recipients})

        def op(conn, ctx):
            cutoff = now - 86400
            msgs = conn.execute(
                "SELECT count(DISTINCT submission) FROM outgoing WHERE submitted >= ?", (cutoff,)
            ).fetchone()[0]
            if max_messages > 0 and msgs + 1 > max_messages:
                raise OutgoingLimitExceeded("MaxOutgoingMessagesPerDay", max_messages)
            first = [
                r for r in rcpts
                if conn.execute("SELECT 1 FROM outgoing WHERE recipient = ? LIMIT 1", (r,)).fetchone() is None
            ]
            recent_first = conn.execute(
                "SELECT count(*) FROM outgoing WHERE first_time = 1 AND submitted >= ?", (cutoff,)
            ).fetchone()[0]
            if max_first_time > 0 and first and recent_first + len(first) > max_first_time:
                raise OutgoingLimitExceeded("MaxFirstTimeRecipientsPerDay", max_first_time)
            conn.executemany(
                "INSERT INTO outgoing (submission, recipient, submitted, first_time, recipient_org_domain)"
                " VALUES (?, ?, ?, ?, ?)",
                [(submission, r, now, int(r in first), _org_domain(r.rpartition("@")[2])) for r in rcpts],
            )
            return first

        return self._write(op)

    # -- credentials

    def set_password(self, password):
        """Derive and store password secrets (SCRAM keys, CRAM-MD5 states), never the
        password. Derivation (PBKDF2) runs off the reactor thread."""

        def store(creds):
            def op(conn, ctx):
                conn.execute(
                    "INSERT OR REPLACE INTO password (id, credentials, changed) VALUES (1, ?, ?)",
                    (json.dumps(creds.to_json()), int(time.time())),
                )

            return self._write(op)

        return self._in_thread(credentials.derive, password).addCallback(store)

    def credentials(self):
        """The stored Credentials, or None when no password was set."""

        def q(conn):
            row = conn.execute("SELECT credentials FROM password").fetchone()
            return None if row is None else credentials.Credentials.from_json(json.loads(row[0]))

        return self._read(q)

    def verify_password(self, password):
        """Deferred[bool]: whether ``password`` matches. CPU work runs off the reactor."""

        def check(creds):
            if creds is None:
                return False
            return self._in_thread(credentials.verify_password, creds, password)

        return self.credentials().addCallback(check)


# -- module helpers, all run on a worker thread


def init_account_db(conn, now=None):
    """Fill a fresh database: counters and the default mailboxes, all subscribed."""
    now = int(now or time.time())
    if conn.execute("SELECT 1 FROM account_state").fetchone() is not None:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        # UIDVALIDITY values start from the creation time so that a recreated account
        # never reuses the values of an earlier one (RFC 9051 2.3.1.1).
        conn.execute(
            "INSERT INTO account_state (id, modseq, next_uidvalidity, quota_used, created)"
            " VALUES (1, 1, ?, 0, ?)",
            (now, now),
        )
        for name, special_use in DEFAULT_MAILBOXES:
            uidvalidity = conn.execute(
                "UPDATE account_state SET next_uidvalidity = next_uidvalidity + 1"
                " RETURNING next_uidvalidity - 1"
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO mailbox (name, special_use, uidvalidity, uidnext, modseq, createseq)"
                " VALUES (?, ?, ?, 1, 1, 1)",
                (name, special_use, uidvalidity),
            )
            conn.execute("INSERT INTO subscription (name) VALUES (?)", (name,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def fill_fts_hook(maildir):
    """Schema v2 upgrade step: index the text of messages stored before v2."""

    def hook(conn):
        for row in conn.execute("SELECT id FROM message").fetchall():
            path = message_file(maildir, row[0])
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            text = msgparse.summary(data).text[:FTS_MAX]
            conn.execute("INSERT INTO message_text (rowid, text) VALUES (?, ?)", (row[0], text))

    return hook


def search_text_hook(maildir):
    """Schema v5 upgrade step: the rendered ENVELOPE of messages stored before v5, and
    their search texts (from the message files) in message_search."""

    def hook(conn):
        last = 0
        while True:
            rows = conn.execute(
                "SELECT id, size, envelope FROM message WHERE id > ? ORDER BY id LIMIT 500",
                (last,),
            ).fetchall()
            if not rows:
                return
            for msg_id, size, envelope in rows:
                last = msg_id
                indexed = 0
                if searchtext.indexable(size):
                    # Any trouble with one message (unreadable file, a parser error)
                    # leaves it unindexed (SEARCH then reads its file), never the
                    # whole upgrade failed and the account unopenable.
                    try:
                        with open(message_file(maildir, msg_id), "rb") as f:
                            data = f.read()
                        if searchtext.indexable(len(data)):
                            header, body = searchtext.index_texts(data)
                            if header is not None:  # None: a body text too long to index
                                conn.execute(
                                    "INSERT INTO message_search (rowid, header, body) VALUES (?, ?, ?)",
                                    (msg_id, header, body),
                                )
                                indexed = 1
                    except (OSError, ValueError, UnicodeError, LookupError, RecursionError):
                        indexed = 0
                conn.execute(
                    "UPDATE message SET envelope_imap = ?, text_indexed = ? WHERE id = ?",
                    (_render_envelope(envelope), indexed, msg_id),
                )

    return hook


def _render_envelope(envelope_json):
    try:
        rendered = format_envelope(json.loads(envelope_json))
    except (ValueError, TypeError):
        return None
    return rendered if rendered.isascii() else None


def _search_texts(conn, ids):
    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" for _ in chunk)
        for r in conn.execute(
            f"SELECT rowid, header, body FROM message_search WHERE rowid IN ({marks})", chunk
        ):
            out[r[0]] = (r[1], r[2])
    return out


def _present(conn, sql, fixed, values, chunk=500):
    """The set of first columns of ``sql`` (its ``IN ({})`` filled with ``values`` in
    chunks SQLite's parameter limit allows)."""
    found = set()
    for i in range(0, len(values), chunk):
        part = values[i:i + chunk]
        found.update(r[0] for r in conn.execute(sql.format(", ".join("?" * len(part))), (*fixed, *part)))
    return found


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _opt(cls, row):
    return None if row is None else cls.from_row(row)


_SYSTEM_ORDER = tuple(CANONICAL[c] for c in FLAG_COLUMNS)


def _mailbox_use(conn, mailbox_id):
    row = conn.execute("SELECT special_use FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
    return row[0] if row else None


def _texts_of_file(path):
    """(text, search_header, search_body) of a message file, None when it is gone."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return msgparse.index_texts(data)


def _texts_of_files(maildir, ids):
    """[(msg_id, texts, error)] for the first of ``ids`` up to INDEX_BATCH_TEXT
    characters of text (at least one message): texts as _texts_of_file gives them;
    None with the error's text when they could not be made."""
    out = []
    total = 0
    for msg_id in ids:
        try:
            texts, error = _texts_of_file(message_file(maildir, msg_id)), None
        except Exception as e:
            texts, error = None, f"{type(e).__name__}: {e}"
        out.append((msg_id, texts, error))
        if texts is not None:
            total += len(texts[0]) + len(texts[1] or "") + len(texts[2] or "")
        if total >= INDEX_BATCH_TEXT:
            break
    return out


def _store_texts_many(conn, done):
    for msg_id, texts, _error in done:
        _store_texts(conn, msg_id, texts)


def _store_texts(conn, msg_id, texts):
    """The search texts of a message committed with text_pending; nothing when it was
    expunged (or indexed) meanwhile."""
    row = conn.execute("SELECT text_pending FROM message WHERE id = ?", (msg_id,)).fetchone()
    if row is None or not row[0]:
        return
    if texts is None:
        conn.execute("UPDATE message SET text_pending = 0 WHERE id = ?", (msg_id,))  # searched in the file
        return
    text, header, body = texts
    conn.execute("DELETE FROM message_text WHERE rowid = ?", (msg_id,))
    conn.execute("INSERT INTO message_text (rowid, text) VALUES (?, ?)", (msg_id, text[:FTS_MAX]))
    if header is not None:
        conn.execute("DELETE FROM message_search WHERE rowid = ?", (msg_id,))
        conn.execute("INSERT INTO message_search (rowid, header, body) VALUES (?, ?, ?)", (msg_id, header, body))
    conn.execute("UPDATE message SET text_pending = 0, text_indexed = ? WHERE id = ?",
                 (int(header is not None), msg_id))


def _metadata_mailbox_id(conn, name):
    """The mailbox id METADATA entries are kept under: 0 for the server's ("")."""
    if not name:
        return 0
    mb = _mailbox_row(conn, name)
    if mb is None:
        raise MailboxNotFound(name)
    return mb["id"]


def _mailbox_row(conn, name):
    return conn.execute("SELECT * FROM mailbox WHERE name = ?", (name,)).fetchone()


def _next_modseq(conn):
    return conn.execute(
        "UPDATE account_state SET modseq = modseq + 1 RETURNING modseq"
    ).fetchone()[0]


def _count(conn, mailbox_id, row, sign):
    conn.execute(
        "UPDATE mailbox SET total = total + ?, unseen = unseen + ?, deleted = deleted + ?,"
        " size = size + ?, modseq = max(modseq, ?) WHERE id = ?",
        (
            sign,
            sign * (0 if row["seen"] else 1),
            sign * (1 if row["deleted"] else 0),
            sign * row["size"],
            row["modseq"],
            mailbox_id,
        ),
    )


def _note_keywords(conn, ctx, mailbox_id, keywords, origin):
    if not keywords:
        return
    row = conn.execute("SELECT keywords FROM mailbox WHERE id = ?", (mailbox_id,)).fetchone()
    known = set(json.loads(row[0]))
    if set(keywords) <= known:
        return
    allkw = sorted(known | set(keywords))
    conn.execute("UPDATE mailbox SET keywords = ? WHERE id = ?", (json.dumps(allkw), mailbox_id))
    ctx.changes.append(
        ch.ChangeMailboxKeywords(mailbox_id, tuple(display_keyword(k) for k in allkw), origin)
    )


class FetchRow(NamedTuple):
    """One message's fields for FETCH, see Account.fetch_rows."""

    uid: int
    modseq: int
    flags: tuple
    received: object  # unix seconds
    received_tz: object  # minutes east of UTC
    saved: object  # unix seconds
    size: object
    preview: object
    envelope_imap: object  # bytes: the rendered ENVELOPE; None: render envelope_json
    envelope_json: object  # set only when envelope_imap is None
    bodystructure_json: object


# Index expressions of the FetchRow fields fetch_rows can fill; envelope_json is read only
# for messages without a rendered ENVELOPE.
FETCH_ROW_COLUMNS = {
    "received": "received",
    "received_tz": "received_tz",
    "saved": "saved",
    "size": "size",
    "preview": "preview",
    "envelope_imap": "envelope_imap",
    "envelope_json": "CASE WHEN envelope_imap IS NULL THEN envelope END",
    "bodystructure_json": "bodystructure",
}


LIGHT_COLUMNS = (
    "id, mailbox_id, uid, modseq, seen, answered, flagged, deleted, draft, keywords,"
    " received, received_tz, saved, size, message_id, subject, thread_id, preview, text_indexed,"
    " '' AS envelope, '' AS bodystructure, '' AS part"
)


def _rows_for_uids(conn, mailbox_id, uids, cols="*"):
    """Rows for a list of UIDs and/or inclusive (lo, hi) ranges, ascending, deduplicated."""
    seen = {}
    singles = []
    for item in uids:
        if isinstance(item, tuple):
            lo, hi = item
            if lo > hi:
                lo, hi = hi, lo
            for r in conn.execute(
                f"SELECT {cols} FROM message WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
                (mailbox_id, lo, hi),
            ):
                seen[r["uid"]] = r
        else:
            singles.append(int(item))
    for i in range(0, len(singles), 500):
        chunk = singles[i:i + 500]
        marks = ",".join("?" for _ in chunk)
        for r in conn.execute(
            f"SELECT {cols} FROM message WHERE mailbox_id = ? AND uid IN ({marks})",
            (mailbox_id, *chunk),
        ):
            seen[r["uid"]] = r
    return [seen[u] for u in sorted(seen)]


def _org_domain(domain):
    """The organisational domain (public suffix list) for reputation lookups."""
    from moxtw import dmarc

    try:
        return dmarc.organizational_domain(domain).lower() if domain else ""
    except Exception:
        return domain.lower()


def facts_columns(f):
    """The message columns of DeliveryFacts (also the input of the junk analysis)."""
    m1, m2, m3 = mask_ip(f.remote_ip) if f.remote_ip else ("", "", "")
    mf_local, _, mf_domain = f.mailfrom.rpartition("@")
    return {
        "remote_ip": f.remote_ip,
        "remote_ip_masked1": m1,
        "remote_ip_masked2": m2,
        "remote_ip_masked3": m3,
        "ehlo_domain": f.ehlo_domain.lower(),
        "mailfrom": f.mailfrom,
        "mailfrom_localpart": mf_local,
        "mailfrom_domain": mf_domain.lower(),
        "rcptto": f.rcptto,
        "msgfrom_localpart": f.msgfrom_localpart,
        "msgfrom_domain": f.msgfrom_domain.lower(),
        "msgfrom_org_domain": f.msgfrom_org_domain.lower(),
        "ehlo_validated": int(f.ehlo_validated),
        "mailfrom_validated": int(f.mailfrom_validated),
        "msgfrom_validated": int(f.msgfrom_validated),
        "spf_result": f.spf_result,
        "dkim_domains": json.dumps(list(f.dkim_domains)),
        "dmarc_result": f.dmarc_result,
        "iprev_result": f.iprev_result,
        "tls_version": f.tls_version,
        "tls_cipher": f.tls_cipher,
        "requiretls": int(f.requiretls),
        "is_reject": int(f.is_reject),
        "is_forward": int(f.is_forward),
        "is_mailing_list": int(f.is_mailing_list),
        "dsn": int(f.dsn),
        "junk_score": f.junk_score,
        "junk_reason": f.junk_reason,
    }


def _trigrams(s):
    """FTS5 query for message_search: every trigram of ``s`` occurs in the message's
    search text (header or body; the index knows no more), as every text containing ``s``
    has them. None when ``s`` has no trigram to look up. Only the start of a long string
    and at most MAX_TRIGRAMS trigrams, spread over it, are used: fewer conditions, the
    same messages, give or take a few more candidates."""
    s = s[:MAX_NEEDLE]
    grams = []
    for i in range(len(s) - 2):
        g = s[i:i + 3]
        if g not in grams:
            grams.append(g)
    if not grams:
        return None
    if len(grams) > MAX_TRIGRAMS:
        step = (len(grams) - 1) / (MAX_TRIGRAMS - 1)
        grams = [grams[round(k * step)] for k in range(MAX_TRIGRAMS)]
    # Quoted: FTS5 operators in user input are plain text.
    return "(" + " AND ".join('"' + g.replace('"', '""') + '"' for g in grams) + ")"


def _search_text_query(c):
    """One FTS5 query for the search-text prefilters of ``c`` (moxtw.message.searchtext:
    case-folded texts, header names and values escaped); "" when nothing can be looked up."""
    terms = []
    for needle in c.body_contains:
        terms.append(_trigrams(searchtext.escape_body(searchtext.fold(needle))))
    for needle in c.text_contains:
        needle = searchtext.fold(needle)
        body, header = searchtext.escape_body(needle), searchtext.escape(needle)
        if body == header:
            terms.append(_trigrams(body))
        else:
            # A newline is escaped in the header text, not in the body text.
            body, header = _trigrams(body), _trigrams(header)
            if body and header:
                terms.append(f"({body} OR {header})")
    for name, needle in c.header_contains:
        terms.append(_trigrams(searchtext.field_marker(name)))
        terms.append(_trigrams(searchtext.escape(searchtext.fold(needle))))
    return " AND ".join(t for t in terms if t)


def _criteria_sql(mailbox_id, c):
    where = ["m.mailbox_id = ?"]
    args = [mailbox_id]
    if c.uid_ranges is not None:
        parts = []
        for lo, hi in c.uid_ranges:
            parts.append("m.uid BETWEEN ? AND ?")
            args += [min(lo, hi), max(lo, hi)]
        where.append("(" + (" OR ".join(parts) or "0") + ")")
    for flags, want in ((c.flags_set, 1), (c.flags_unset, 0)):
        system, keywords = split_flags(flags)
        for col in system:
            where.append(f"m.{col} = {want}")
        for kw in keywords:
            cond = "EXISTS (SELECT 1 FROM json_each(m.keywords) WHERE value = ?)"
            where.append(cond if want else "NOT " + cond)
            args.append(kw)
    for attr, col, op in (
        ("received_since", "received", ">="),
        ("received_before", "received", "<"),
        ("sent_since", "sent", ">="),
        ("sent_before", "sent", "<"),
    ):
        value = getattr(c, attr)
        if value is not None:
            where.append(f"m.{col} {op} ?")
            args.append(to_unix(value))
    if c.larger is not None:
        where.append("m.size > ?")
        args.append(c.larger)
    if c.smaller is not None:
        where.append("m.size < ?")
        args.append(c.smaller)
    if c.modseq_min is not None:
        where.append("m.modseq >= ?")
        args.append(c.modseq_min)
    if c.message_id is not None:
        where.append("m.message_id = ?")
        args.append(c.message_id.strip("<>"))
    for attr, col in (("subject_contains", "subject"), ("from_contains", "from_address")):
        value = getattr(c, attr)
        if value is not None:
            where.append(f"instr(lower(m.{col}), lower(?)) > 0")
            args.append(value)
    query = _search_text_query(c)
    if query:
        # The messages the trigram index has, and those whose text is not indexed (few,
        # from a partial index): a list of ids the (mailbox_id, uid) index is checked
        # against without reading the rows.
        where.append(
            "m.id IN (SELECT rowid FROM message_search WHERE message_search MATCH ?"
            " UNION ALL SELECT id FROM message WHERE mailbox_id = ? AND text_indexed = 0)"
        )
        args += [query, mailbox_id]
    if c.text is not None:
        # Each word must occur; quoting makes FTS5 operators in user input plain text.
        words = [w for w in c.text.split() if w]
        if words:
            query = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            where.append("m.id IN (SELECT rowid FROM message_text WHERE message_text MATCH ?)")
            args.append(query)
    return " AND ".join(where), args
