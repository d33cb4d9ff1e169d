"""``moxtw export maildir|mbox``: an account's mailboxes as a Maildir tree or mbox files,
in a directory or a .zip/.tgz archive.

Consistent while the server runs: the messages of each mailbox are listed from one read
transaction of the index (a WAL snapshot), and message files are immutable. A message
expunged between the listing and the reading of its file is left out and counted.

Maildir: ``<mailbox>/{cur,new,tmp}``, file names ``<received>.<id>.moxtw:2,<flags>``,
keywords as lower-case letters with ``dovecot-keywords`` (the first 26). mbox: one
``<mailbox>.mbox`` per mailbox, mboxrd (">From " lines get one more ">"), with Status,
X-Status and X-Keywords headers, LF line endings. Blocking; runs in a thread.
"""

import json
import os
import tarfile
import time
import zipfile
from datetime import datetime, timezone
from typing import NamedTuple

from moxtw.store.model import FLAG_COLUMNS, flags_tuple, from_unix

FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "$Forwarded": "P", "\\Answered": "R", "\\Seen": "S",
                "\\Deleted": "T"}


class ExportError(Exception):
    pass


class _DirWriter:
    def __init__(self, root):
        self.root = root
        if os.path.exists(root) and os.listdir(root):
            raise ExportError(f"{root} exists and is not empty")
        os.makedirs(root, exist_ok=True)

    def dir(self, rel):
        os.makedirs(os.path.join(self.root, rel), exist_ok=True)

    def file(self, rel, data, mtime=None):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for chunk in data if not isinstance(data, bytes) else (data,):
                f.write(chunk)
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    def close(self):
        pass


class _ZipWriter:
    def __init__(self, path):
        # A path, or a stream that cannot seek (a download): entries then carry data
        # descriptors.
        self.zf = zipfile.ZipFile(path, "x" if isinstance(path, str) else "w", compression=zipfile.ZIP_DEFLATED,
                                  allowZip64=True)

    def dir(self, rel):
        self.zf.writestr(zipfile.ZipInfo(rel.rstrip("/") + "/"), b"")

    def file(self, rel, data, mtime=None):
        info = zipfile.ZipInfo(rel, time.gmtime(mtime or time.time())[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        with self.zf.open(info, "w", force_zip64=True) as f:
            for chunk in data if not isinstance(data, bytes) else (data,):
                f.write(chunk)

    def close(self):
        self.zf.close()


class _TarWriter:
    def __init__(self, path):
        self.tf = tarfile.open(path, "x:gz") if isinstance(path, str) else tarfile.open(fileobj=path, mode="w|gz")

    def dir(self, rel):
        info = tarfile.TarInfo(rel.rstrip("/"))
        info.type = tarfile.DIRTYPE
        info.mode = 0o700
        info.mtime = int(time.time())
        self.tf.addfile(info)

    def file(self, rel, data, mtime=None):
        # tar needs the size first: a spooled file keeps large mbox files out of memory.
        import tempfile

        with tempfile.TemporaryFile() as tmp:
            for chunk in data if not isinstance(data, bytes) else (data,):
                tmp.write(chunk)
            size = tmp.tell()
            tmp.seek(0)
            info = tarfile.TarInfo(rel)
            info.size = size
            info.mode = 0o600
            info.mtime = int(mtime or time.time())
            self.tf.addfile(info, tmp)

    def close(self):
        self.tf.close()


def writer_for(dest, archive=None):
    """The writer for a path (by its ending: .zip, .tgz, else a directory), or for a
    stream (an object with ``write``) with ``archive`` "zip" or "tgz"."""
    if not isinstance(dest, str):
        if archive not in ("zip", "tgz"):
            raise ExportError(f"unknown archive {archive!r}: zip or tgz")
        return _ZipWriter(dest) if archive == "zip" else _TarWriter(dest)
    if dest.endswith(".zip"):
        return _ZipWriter(dest)
    if dest.endswith(".tgz") or dest.endswith(".tar.gz"):
        return _TarWriter(dest)
    return _DirWriter(dest)


def _safe_rel(name):
    """A mailbox name as a relative path: no empty, "." or ".." components; "cur",
    "new" and "tmp" (a maildir's own directories) become "cur_" and so on."""
    parts = [p.replace("\0", "") for p in name.split("/") if p not in ("", ".", "..")]
    parts = [p + "_" if p.rstrip("_") in ("cur", "new", "tmp") else p for p in parts]
    return "/".join(parts) or "_"


def mbox_escape(data):
    """The message with LF line endings and mboxrd quoting of From_ lines."""
    data = data.replace(b"\r\n", b"\n")
    out = []
    for line in data.split(b"\n"):
        if line.lstrip(b">").startswith(b"From "):
            line = b">" + line
        out.append(line)
    text = b"\n".join(out)
    if not text.endswith(b"\n"):
        text += b"\n"
    return text


def mbox_headers(flags):
    status = "RO" if "\\Seen" in flags else "O"
    xs = "".join(c for f, c in (("\\Answered", "A"), ("\\Flagged", "F"), ("\\Draft", "T"), ("\\Deleted", "D"))
                 if f in flags)
    kws = [f for f in flags if not f.startswith("\\")]
    lines = [f"Status: {status}"]
    if xs:
        lines.append(f"X-Status: {xs}")
    if kws:
        lines.append("X-Keywords: " + " ".join(kws))
    return ("\n".join(lines) + "\n").encode("ascii", "replace")


def export(snapshot, open_message, kind, dest, mailbox=None, archive=None):
    """Write the export. ``snapshot()`` returns [(mailbox name, [Message])] read in one
    transaction; ``open_message(id)`` opens a message file. ``dest`` is a path, or a
    stream written in order (the web download) with ``archive`` "zip" or "tgz".
    Returns a dict of counts."""
    if kind not in ("maildir", "mbox"):
        raise ExportError(f"unknown format {kind!r}: maildir or mbox")
    boxes = snapshot()
    if mailbox is not None and not boxes:
        raise ExportError(f"no mailbox {mailbox!r}")
    w = writer_for(dest, archive)
    counts = {"messages": 0, "mailboxes": 0, "vanished": 0}
    try:
        for name, messages in boxes:
            counts["mailboxes"] += 1
            rel = _safe_rel(name)
            if kind == "maildir":
                _maildir_box(w, rel, messages, open_message, counts)
            else:
                w.file(f"{rel}.mbox", _mbox_chunks(messages, open_message, counts))
    finally:
        w.close()
    return counts


def _read(open_message, msg_id):
    try:
        with open_message(msg_id) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _maildir_box(w, rel, messages, open_message, counts):
    for sub in ("cur", "new", "tmp"):
        w.dir(f"{rel}/{sub}")
    keywords = []
    for m in messages:
        for f in m.flags:
            if not f.startswith("\\") and f not in FLAG_LETTERS and f not in keywords:
                keywords.append(f)
    letters = {k: chr(ord("a") + i) for i, k in enumerate(keywords[:26])}
    if keywords:
        w.file(f"{rel}/dovecot-keywords", "".join(f"{i} {k}\n" for i, k in enumerate(keywords[:26])).encode())
    for m in messages:
        data = _read(open_message, m.id)
        if data is None:
            counts["vanished"] += 1
            continue
        ts = int(m.received.replace(tzinfo=m.received.tzinfo or timezone.utc).timestamp())
        info = "".join(sorted(FLAG_LETTERS[f] for f in m.flags if f in FLAG_LETTERS))
        info += "".join(sorted(letters[f] for f in m.flags if f in letters))
        w.file(f"{rel}/cur/{ts}.{m.id}.moxtw:2,{info}", data, mtime=ts)
        counts["messages"] += 1


def _mbox_chunks(messages, open_message, counts):
    for m in messages:
        data = _read(open_message, m.id)
        if data is None:
            counts["vanished"] += 1
            continue
        when = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(m.received.timestamp()))
        body = mbox_escape(data)
        head, sep, rest = body.partition(b"\n\n")
        yield f"From moxtw {when}\n".encode()
        if sep:
            yield head + b"\n" + mbox_headers(m.flags) + b"\n" + rest
        else:
            yield body + mbox_headers(m.flags)
        yield b"\n"
        counts["messages"] += 1


class Exported(NamedTuple):
    """What the export needs of a message: small, so a mailbox of 200,000 fits."""

    id: int
    flags: tuple
    received: datetime


def snapshot_query(conn, mailbox=None):
    """[(mailbox name, [Exported])] in one read transaction (runs on the account's
    reader; WAL gives it a snapshot while the server writes)."""
    conn.execute("BEGIN")
    try:
        if mailbox is None:
            boxes = conn.execute("SELECT id, name FROM mailbox ORDER BY name").fetchall()
        else:
            boxes = conn.execute("SELECT id, name FROM mailbox WHERE name = ?", (mailbox,)).fetchall()
        cols = ", ".join(FLAG_COLUMNS)
        out = []
        for mb_id, name in boxes:
            msgs = []
            for r in conn.execute(
                    f"SELECT id, received, received_tz, keywords, {cols} FROM message WHERE mailbox_id = ? "
                    "ORDER BY uid", (mb_id,)):
                flags = flags_tuple(dict(zip(FLAG_COLUMNS, r[4:])), json.loads(r[3]))
                msgs.append(Exported(r[0], flags, from_unix(r[1], r[2])))
            out.append((name, msgs))
        return out
    finally:
        conn.execute("COMMIT")
