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

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from twisted.internet import defer

from moxtw.message.header import parse_message_ids
from moxtw.store.errors import MailboxNameError
from moxtw.store.model import FlagError, check_new_mailbox_name, normalize_mailbox_name, split_flags

BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024
MAX_MESSAGE = 50 * 1024 * 1024  # larger ones are reported and left out
READ_PIECE = 1024 * 1024
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
    not_files: list = field(default_factory=list)  # symbolic links, FIFOs: not read
    skipped_folders: list = field(default_factory=list)

    FIELDS = ("imported", "skipped", "duplicates", "too_large", "mailboxes", "not_files", "skipped_folders")

    def as_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.FIELDS if k in d})


# -- maildir -------------------------------------------------------------------------------


def _real_dir(path):
    """A directory that is not a symbolic link."""
    return os.path.isdir(path) and not os.path.islink(path)


def _is_maildir(path):
    return _real_dir(os.path.join(path, "cur")) or _real_dir(os.path.join(path, "new"))


def _keywords_file(path):
    """Dovecot's ``dovecot-keywords``: lines "<index> <keyword>", index 0 is letter a."""
    out = {}
    # A regular file only (no link, no FIFO that would block), of bounded size.
    data, _ = _read_regular(os.path.join(path, "dovecot-keywords"), 64 * 1024)
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        n, _, word = line.strip().partition(" ")
        if n.isdigit() and int(n) < 26 and word:
            out[chr(ord("a") + int(n))] = word
    return out


def _folder_name(raw):
    """A Maildir++ folder's mailbox name: Dovecot writes them in modified UTF-7 (RFC 3501
    5.1.3), e.g. ".Entw&APw-rfe"; None for a name that is not valid (bytes that are not
    UTF-8)."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return None  # surrogate escapes: the file name's bytes are not UTF-8
    if "&" in raw:
        from twisted.mail import imap4

        try:
            return imap4.decoder(raw.encode("ascii"))[0]
        except (UnicodeError, ValueError):
            return raw
    return raw


def maildir_folders(root, result=None):
    """[(relative mailbox name, maildir path)] of a tree: the root, Maildir++ ".A.B"
    folders, and nested maildirs; sorted, the root first. Symbolic links are not
    followed (a link could lead anywhere on the machine); folders whose names are not
    UTF-8 or not valid mailbox names are left out and reported."""
    if not os.path.isdir(root):
        raise ImportError_(f"{root}: not a directory")
    found = []
    if _is_maildir(root):
        found.append(("", root))
    for top, dirs, _files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(top, root)
        for d in list(dirs):
            path = os.path.join(top, d)
            if d in ("cur", "new", "tmp") or os.path.islink(path):
                dirs.remove(d)
                continue
            if not _is_maildir(path):
                continue
            if rel == "." and d.startswith(".") and len(d) > 1:
                name = _folder_name("/".join(p for p in d[1:].split(".") if p))  # Maildir++
            else:
                name = _folder_name(os.path.relpath(path, root).replace(os.sep, "/"))
            problem = None if name else "its name is not UTF-8"
            if name:
                try:
                    check_new_mailbox_name(normalize_mailbox_name(name))
                except MailboxNameError as e:
                    problem = str(e)
            if problem:
                if result is not None:
                    result.skipped_folders.append(f"{path!r}: {problem}")
                continue
            found.append((name, path))
    if not found:
        raise ImportError_(f"{root}: no maildir (cur/ and new/) in it")
    return found


def _read_regular(path, limit):
    """The file's bytes, or None when it is not a regular file (a symbolic link, a
    FIFO, a device), or (None, size) when larger than ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, None  # a link (ELOOP), vanished, unreadable
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None
        if st.st_size > limit:
            return None, st.st_size
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1), st.st_size
    finally:
        os.close(fd)


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
    for mailbox, path in maildir_folders(root, result):
        keywords = _keywords_file(path)
        entries = []
        for sub in ("new", "cur"):
            if not _real_dir(os.path.join(path, sub)):
                continue  # missing, or a symbolic link to elsewhere: not followed
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
            data, size = _read_regular(full, MAX_MESSAGE)
            if data is None or len(data) > MAX_MESSAGE:
                if result is not None:
                    if size is not None:
                        result.too_large.append(full)
                    else:
                        result.not_files.append(full)
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


def _mbox_message(raw):
    """(data, flags) of one mbox message: mbox headers turned into flags and removed."""
    i = raw.find(b"\n\n")
    sep = i >= 0
    # The body as a view: the result is the only copy of it.
    head, body = (raw[:i], memoryview(raw)[i + 2:]) if sep else (raw, b"")
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
    data = b"".join([b"\n".join(out), b"\n\n", body] if sep else [b"\n".join(out), b"\n"])
    return data, sorted(flags)


def mbox_messages(path, result=None, mailbox=""):
    """Yield a Source per message of an mbox file, reading it in pieces of at most 1 MiB
    (a file without line ends cannot fill memory). A "From " line starts a message at
    the start of the file or after an empty line (RFC 4155). The key of a message is its
    offset, length and a hash of its bytes: a different file at the same path later is
    not mistaken for the one imported before."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImportError_(f"{path}: {e.strerror}") from None
    with f:
        first = f.readline(READ_PIECE)
        if not first:
            return  # an empty mbox (an export of an empty mailbox): no messages
        if not first.startswith(b"From "):
            raise ImportError_(f"{path}: not an mbox file (no 'From ' line at the start)")
        state = {"offset": 0, "from": first, "buf": bytearray(), "large": False}
        pos = len(first)
        at_line_start = first.endswith(b"\n")
        prev_blank = False

        def finish():
            st = state
            if st["large"]:
                if result is not None:
                    result.too_large.append(f"{path} at byte {st['offset']}")
                return None
            raw = st["buf"]
            # The empty line before the next From_ belongs to the mbox format.
            if raw.endswith(b"\r\n\r\n"):
                del raw[-2:]
            elif raw.endswith(b"\n\n"):
                del raw[-1:]
            # The key hashes the message without the separator line, so appending to the
            # file later does not change the key of its last message.
            digest = hashlib.sha256(raw).hexdigest()[:24]
            key = f"{mailbox}@{st['offset']}:{len(raw)}:{digest}"
            # Few copies at a time: each step drops the one before.
            raw, st["buf"] = bytes(raw), bytearray()
            raw = raw.replace(b"\r\n", b"\n")
            data, flags = _mbox_message(raw)
            del raw
            return Source(mailbox, key, data, flags, _from_line_date(st["from"]))

        while True:
            piece = f.readline(READ_PIECE)
            if not piece:
                break
            start, pos = pos, pos + len(piece)
            line_start, at_line_start = at_line_start, piece.endswith(b"\n")
            if line_start and prev_blank and piece.startswith(b"From "):
                src = finish()
                if src is not None:
                    yield src
                rest = piece
                while not rest.endswith(b"\n"):  # an over-long From_ line: its rest
                    more = f.readline(READ_PIECE)
                    if not more:
                        break
                    pos += len(more)
                    rest = more
                at_line_start = True
                state.update({"offset": start, "from": piece, "buf": bytearray(), "large": False})
                prev_blank = False
                continue
            # mboxrd (RFC 4155 appendix A): ">From ", ">>From " ... lose one ">".
            if line_start and piece.startswith(b">") and piece.lstrip(b">").startswith(b"From "):
                piece = piece[1:]
            if line_start:
                prev_blank = piece in (b"\n", b"\r\n")
            elif at_line_start:
                prev_blank = False
            if not state["large"]:
                if len(state["buf"]) + len(piece) > MAX_MESSAGE:
                    state["large"], state["buf"] = True, bytearray()
                else:
                    state["buf"] += piece
        src = finish()
        if src is not None:
            yield src


def message_id(data):
    """The first Message-ID of a message's header, without brackets, or ""."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    head = data[: min(ends)] if ends else data
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
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
        # Reading and parsing in a thread: the reactor is never held up by the source.
        batch, size = [], 0
        for src in it:
            batch.append(src)
            size += len(src.data)
            if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
                break
        return batch, {s.key: message_id(s.data) for s in batch}

    while True:
        batch, ids = yield threads.deferToThread(next_batch)
        if not batch:
            break
        done = yield account.imported_keys(source_id, [s.key for s in batch])
        todo = [s for s in batch if s.key not in done]
        result.skipped += len(batch) - len(todo)
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
        maildir_folders(path, Result())
        return maildir_messages(path, result), result
    if kind == "mbox":
        if os.path.isdir(path):
            raise ImportError_(f"{path}: a directory; import maildir, or each mbox file")
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise ImportError_(f"{path}: not a regular file")
        except FileNotFoundError:
            raise ImportError_(f"{path}: No such file") from None
        with open(path, "rb") as f:
            start = f.read(5)
            if start and start != b"From ":
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
    if r.not_files:
        line += f", {len(r.not_files)} not regular files (links, FIFOs) left out"
    if r.skipped_folders:
        line += f", {len(r.skipped_folders)} folders left out"
    return line


def source_id(path):
    """The identity of a source across runs: its real path (a link to the same tree is
    the same source)."""
    return os.path.realpath(path)


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
