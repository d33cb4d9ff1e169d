"""``moxtw import maildir|mbox``: bring a Maildir (or Maildir++) tree or an mbox file
into an account, with flags and keywords.

Sources are read as a stream: :func:`maildir_messages` and :func:`mbox_messages` yield
:class:`Source` values (one message each, its bytes, flags, received time and a key
unique within the source), never more than one message in memory. :func:`run` sends them
to the account in batches (one transaction and one commit per batch, the keys recorded in
the same transaction), so an interrupted import resumed with the same source skips what
was committed and imports the rest: nothing twice. Duplicates by Message-ID (within the
import and against the account) are counted and reported, not dropped.

Folders: the top of the source goes into MAILBOX; Maildir++ folders (".Sent",
".Lists.moxtw") and nested maildirs ("Lists/moxtw/{cur,new}") become MAILBOX/Sent,
MAILBOX/Lists/moxtw, or with ``top_level`` Sent and Lists/moxtw (a whole Dovecot maildir
into Inbox and its folders).

Flags: maildir info ":2," letters (RFC-less convention from cr.yp.to/proto/maildir.html):
D draft, F flagged, P passed ($Forwarded), R replied (answered), S seen, T trashed
(deleted); lower-case letters are Dovecot keywords named in ``dovecot-keywords``. mbox:
Status (R seen), X-Status (A answered, F flagged, T draft, D deleted) and X-Keywords,
which are removed from the imported message as Dovecot does; ">From " lines are unescaped
as mboxrd (one ">" removed).
"""

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from twisted.internet import defer

from moxtw.message.header import parse_message_ids
from moxtw.store.model import FlagError, split_flags

BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024
MAX_MESSAGE = 100 * 1024 * 1024
PROGRESS_EVERY = 2.0  # seconds between progress reports

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                 "S": "\\Seen", "T": "\\Deleted"}
MBOX_XSTATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
MBOX_STRIP = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imapbase", b"x-imap", b"content-length")


class ImportError_(Exception):
    """The source cannot be imported (not a maildir, unreadable)."""


@dataclass
class Source:
    mailbox: str  # relative folder name, "" for the top
    key: str
    data: bytes
    flags: list
    received: datetime | None


@dataclass
class Result:
    imported: int = 0
    skipped: int = 0  # imported by an earlier, interrupted run
    duplicates: int = 0  # Message-ID seen before (still imported)
    too_large: list = field(default_factory=list)
    mailboxes: dict = field(default_factory=dict)  # mailbox -> count

    def as_dict(self):
        return {"imported": self.imported, "skipped": self.skipped, "duplicates": self.duplicates,
                "too_large": self.too_large, "mailboxes": self.mailboxes}


# -- maildir -------------------------------------------------------------------------------


def _is_maildir(path):
    return os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new"))


def _keywords_file(path):
    """Dovecot's ``dovecot-keywords``: lines "<index> <keyword>", index 0 is letter a."""
    out = {}
    try:
        with open(os.path.join(path, "dovecot-keywords"), encoding="utf-8", errors="replace") as f:
            for line in f:
                n, _, word = line.strip().partition(" ")
                if n.isdigit() and int(n) < 26 and word:
                    out[chr(ord("a") + int(n))] = word
    except FileNotFoundError:
        pass
    return out


def maildir_folders(root):
    """[(relative mailbox name, maildir path)] of a tree: the root, Maildir++ ".A.B"
    folders, and nested maildirs; sorted, the root first."""
    if not os.path.isdir(root):
        raise ImportError_(f"{root}: not a directory")
    found = []
    if _is_maildir(root):
        found.append(("", root))
    for top, dirs, _files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(top, root)
        for d in list(dirs):
            if d in ("cur", "new", "tmp") and top == root:
                dirs.remove(d)
                continue
            if d in ("cur", "new", "tmp"):
                dirs.remove(d)
                continue
            path = os.path.join(top, d)
            if not _is_maildir(path):
                continue
            if rel == "." and d.startswith(".") and len(d) > 1:
                name = "/".join(p for p in d[1:].split(".") if p)  # Maildir++
            else:
                name = os.path.relpath(path, root).replace(os.sep, "/")
            found.append((name, path))
    if not found:
        raise ImportError_(f"{root}: no maildir (cur/ and new/) in it")
    return found


def _maildir_received(name, path):
    base = name.split(".", 1)[0]
    if base.isdigit():
        try:
            return datetime.fromtimestamp(int(base), timezone.utc)
        except (OverflowError, ValueError, OSError):
            pass
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
    except OSError:
        return None


def maildir_messages(root, result=None):
    """Yield a Source per message of the tree (cur/ and new/, in name order per folder)."""
    for mailbox, path in maildir_folders(root):
        keywords = _keywords_file(path)
        entries = []
        for sub in ("new", "cur"):
            try:
                entries += [(name, sub) for name in os.listdir(os.path.join(path, sub)) if not name.startswith(".")]
            except FileNotFoundError:
                continue
        # Names start with the delivery time: in name order, UIDs follow arrival.
        entries.sort()
        for name, sub in entries:
            full = os.path.join(path, sub, name)
            unique, _, info = name.partition(":")
            flags = []
            if sub == "cur" and info.startswith("2,"):
                for c in info[2:]:
                    if c in MAILDIR_FLAGS:
                        flags.append(MAILDIR_FLAGS[c])
                    elif c in keywords:
                        flags.append(keywords[c])
            try:
                size = os.path.getsize(full)
                if size > MAX_MESSAGE:
                    if result is not None:
                        result.too_large.append(full)
                    continue
                with open(full, "rb") as f:
                    data = f.read()
            except (FileNotFoundError, IsADirectoryError):
                continue
            # The key survives flag changes in the name (the part before ":").
            yield Source(mailbox, f"{mailbox}/{unique}", data, sorted(set(flags)),
                         _maildir_received(name, full))


# -- mbox ----------------------------------------------------------------------------------


def _from_line_date(line):
    # "From sender Tue Mar  4 12:00:00 2020" (asctime after the envelope sender).
    parts = line.decode("ascii", "replace").split()
    if len(parts) >= 7:
        try:
            t = time.strptime(" ".join(parts[-5:]), "%a %b %d %H:%M:%S %Y")
            return datetime(*t[:6], tzinfo=timezone.utc)
        except ValueError:
            return None
    return None


def _mbox_message(raw, from_line):
    """(data, flags) of one mbox message: mbox headers turned into flags and removed."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, body = raw, b""
    kept, flags = [], set()
    current = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current[1].append(line)
            continue
        name, colon, _ = line.partition(b":")
        current = [name.strip().lower() if colon else None, [line]]
        kept.append(current)
    out = []
    for name, lines in kept:
        value = b"".join(lines).partition(b":")[2].strip().decode("utf-8", "replace")
        if name == b"status":
            if "R" in value:
                flags.add("\\Seen")
            continue
        if name == b"x-status":
            flags.update(f for c, f in MBOX_XSTATUS.items() if c in value)
            continue
        if name == b"x-keywords":
            flags.update(w for w in value.replace(",", " ").split() if w)
            continue
        if name in MBOX_STRIP:
            continue
        out.extend(lines)
    data = b"\n".join(out) + (b"\n\n" + body if sep else b"\n")
    return data, sorted(flags)


def mbox_messages(path, result=None, mailbox=""):
    """Yield a Source per message of an mbox file, reading it line by line."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImportError_(f"{path}: {e.strerror}") from None
    with f:
        first = f.readline()
        if not first.startswith(b"From "):
            raise ImportError_(f"{path}: not an mbox file (no 'From ' line at the start)")
        offset, from_line = 0, first
        pos = len(first)
        lines, size, too_large = [], 0, False

        def finish():
            if too_large:
                if result is not None:
                    result.too_large.append(f"{path} at byte {offset}")
                return None
            raw = b"".join(lines)
            # The blank line before the next From_ belongs to the mbox format.
            if raw.endswith(b"\n\n"):
                raw = raw[:-1]
            elif raw.endswith(b"\r\n\r\n"):
                raw = raw[:-2]
            raw = raw.replace(b"\r\n", b"\n")
            data, flags = _mbox_message(raw, from_line)
            return Source(mailbox, f"{mailbox}@{offset}", data, flags, _from_line_date(from_line))

        for line in f:
            start, pos = pos, pos + len(line)
            if line.startswith(b"From "):
                src = finish()
                if src is not None:
                    yield src
                offset, from_line = start, line
                lines, size, too_large = [], 0, False
                continue
            # mboxrd (RFC 4155 appendix A): ">From ", ">>From " ... lose one ">".
            if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                line = line[1:]
            size += len(line)
            if size > MAX_MESSAGE:
                too_large, lines = True, []
            elif not too_large:
                lines.append(line)
        src = finish()
        if src is not None:
            yield src


def message_id(data):
    """The first Message-ID of a message's header, without brackets, or ""."""
    head = data.split(b"\n\n", 1)[0]
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        if line[:11].lower() == b"message-id:":
            value = line[11:]
            for nxt in lines[i + 1:]:
                if nxt[:1] in (b" ", b"\t"):
                    value += nxt
                else:
                    break
            ids = parse_message_ids(value.decode("utf-8", "replace"))
            return ids[0] if ids else ""
    return ""


# -- the import ----------------------------------------------------------------------------


def target_mailbox(mailbox, folder, top_level):
    if not folder:
        return mailbox
    return folder if top_level else f"{mailbox}/{folder}"


@defer.inlineCallbacks
def run(account, sources, source_id, mailbox, top_level=False, progress=None, result=None, clock=time.monotonic):
    """Import ``sources`` (an iterator of Source) into ``account``. ``source_id``
    identifies the source across runs (its absolute path). ``progress(result)`` is called
    every few seconds and at the end. Returns the Result. Reading the source runs in a
    thread, one batch ahead of nothing: memory holds one batch at most."""
    from twisted.internet import threads

    result = result or Result()
    seen_ids = set()
    it = iter(sources)
    last = clock()

    def next_batch():
        batch, size = [], 0
        for src in it:
            batch.append(src)
            size += len(src.data)
            if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
                break
        return batch

    while True:
        batch = yield threads.deferToThread(next_batch)
        if not batch:
            break
        done = yield account.imported_keys(source_id, [s.key for s in batch])
        todo = [s for s in batch if s.key not in done]
        result.skipped += len(batch) - len(todo)
        ids = {s.key: message_id(s.data) for s in todo}
        present = yield account.message_ids_present(list(set(ids.values()) - seen_ids))
        for s in todo:
            mid = ids[s.key]
            if mid and (mid in seen_ids or mid in present):
                result.duplicates += 1
            if mid:
                seen_ids.add(mid)
        by_box = {}
        for s in todo:
            by_box.setdefault(target_mailbox(mailbox, s.mailbox, top_level), []).append(s)
        for box, items in by_box.items():
            yield account.append_many(
                box, [(s.data, valid_flags(s.flags), s.received) for s in items], create=True,
                imported=(source_id, [s.key for s in items]))
            result.imported += len(items)
            result.mailboxes[box] = result.mailboxes.get(box, 0) + len(items)
        if progress is not None and clock() - last >= PROGRESS_EVERY:
            last = clock()
            progress(result)
    if progress is not None:
        progress(result)
    return result


def open_source(kind, path):
    """(iterator of Source, result to fill) for ``kind`` "maildir" or "mbox". Checks the
    source before anything is imported (ImportError_)."""
    result = Result()
    if kind == "maildir":
        maildir_folders(path)
        return maildir_messages(path, result), result
    if kind == "mbox":
        if os.path.isdir(path):
            raise ImportError_(f"{path}: a directory; import maildir, or each mbox file")
        with open(path, "rb") as f:
            if not f.read(5) == b"From ":
                raise ImportError_(f"{path}: not an mbox file (no 'From ' line at the start)")
        return mbox_messages(path, result), result
    raise ImportError_(f"unknown source kind {kind!r}: maildir or mbox")


def format_progress(r):
    line = f"imported {r.imported}"
    if r.skipped:
        line += f", skipped {r.skipped} imported before"
    if r.duplicates:
        line += f", {r.duplicates} with a Message-ID seen before"
    if r.too_large:
        line += f", {len(r.too_large)} too large"
    return line


def valid_flags(flags):
    """The flags the store accepts (hostile X-Keywords or keyword files may name
    anything): others are dropped."""
    out = []
    for flag in flags:
        try:
            split_flags([flag])
        except FlagError:
            continue
        out.append(flag)
    return out
