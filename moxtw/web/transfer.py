"""Import and export of an account's mail on the account pages.

Import: the browser sends the file as the raw body of ``POST /api/import`` (an mbox, or a
.zip or .tgz of mbox files or a maildir tree), with its upload progress shown by the
page's script. The body is spooled to disk by Twisted as it arrives (a limit of its own,
``AccountApp(import_max_bytes=...)``, instead of the 1 MB of other requests), copied into
the import's work directory under ``data/webimport/``, and unpacked there with bounds:
names that are absolute or climb out ("..") refuse the import, links, devices and FIFOs
are left out, and the unpacked size and number of entries are capped whatever the
archive claims (zip bombs). Then :func:`moxtw.admin.mailimport.run` imports it (reading
in threads, one batch in memory); the state, counted messages, and what was committed
are polled at ``GET /api/import/<id>``. A message counts as imported only once its batch
is committed (durable); the work directory is removed at the end.

Export: ``GET /api/export`` streams a .zip or .tgz of mbox files or a maildir tree,
written by :func:`moxtw.admin.mailexport.export` in a thread into the response, with the
client's pace as back-pressure (never the whole archive in memory).
"""

import os
import secrets
import shutil
import stat
import tarfile
import time
import zipfile

from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from moxtw.admin import mailexport, mailimport
from moxtw.store.errors import MailboxNameError, QuotaExceeded
from moxtw.store.model import check_new_mailbox_name, normalize_mailbox_name
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

IMPORT_MAX_BYTES = 256 * 1024 * 1024  # default upload limit
UNPACK_FACTOR = 4  # unpacked bytes allowed per uploaded byte (and at least 64 MiB)
MAX_ENTRIES = 100_000
MAX_TAR_HEADER = 256 * 1024  # bytes of one GNU long name or pax header member
MAX_TAR_HEADERS = 16 * 1024 * 1024  # bytes of all of them in one archive
JOB_KEEP = 3600.0  # seconds a finished import's status stays available
PIECE = 64 * 1024
# Running downloads: each holds a thread of the reactor's pool (10) while its client is
# slow, so they are bounded, leaving threads for the index, logins and deliveries.
MAX_EXPORTS = 4
MAX_EXPORTS_PER_ACCOUNT = 2
_exports = {}  # account -> running downloads


class UnpackError(Exception):
    """The upload cannot be imported (not mbox/zip/tgz, unsafe or too large)."""


# -- unpacking (in a thread) -----------------------------------------------------------------


def sniff(path):
    """"zip", "tgz", "mbox" or "" by the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(5)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tgz"
    if head.startswith(b"From "):
        return "mbox"
    return ""


def safe_name(name):
    """An archive member's relative path, or UnpackError for absolute paths, ".."
    components, NUL bytes and drive letters; "" for the archive's top (".", "./")."""
    if "\0" in name:
        raise UnpackError(f"unsafe name in archive: {name[:100]!r}")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnpackError(f"unsafe name in archive (absolute path): {name[:100]!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"unsafe name in archive ('..'): {name[:100]!r}")
    return "/".join(parts)


class _Budget:
    def __init__(self, max_bytes, max_entries=MAX_ENTRIES):
        self.left = max_bytes
        self.entries = max_entries

    def entry(self):
        self.entries -= 1
        if self.entries < 0:
            raise UnpackError(f"too many entries in the archive (at most {MAX_ENTRIES})")

    def take(self, n):
        self.left -= n
        if self.left < 0:
            raise UnpackError("the archive unpacks to more than allowed (a zip bomb?)")


class _BoundedTarInfo(tarfile.TarInfo):
    """Tar headers whose extension blocks (GNU long names and links, pax headers) are
    bounded before tarfile reads them whole into memory; GNU sparse members (chains of
    extension blocks, never needed for mail) are refused."""

    def _proc_member(self, tf):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnpackError(f"sparse file in archive, not supported: {self.name[:100]!r}")
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            total = getattr(tf, "_moxtw_header_bytes", 0) + self.size
            if self.size > MAX_TAR_HEADER or total > MAX_TAR_HEADERS:
                raise UnpackError("the archive has oversized tar headers (long names or pax headers)")
            tf._moxtw_header_bytes = total
        return super()._proc_member(tf)


def _copy_bounded(src, dest_path, budget):
    fd = os.open(dest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            piece = src.read(PIECE)
            if not piece:
                break
            budget.take(len(piece))  # counted as read: the header's sizes are not trusted
            out.write(piece)


def _target(root, rel):
    path = os.path.join(root, *rel.split("/"))
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(os.path.dirname(path))]) != real_root:
        raise UnpackError(f"unsafe name in archive: {rel[:100]!r}")
    return path


def _unzip(zf, tree, budget, notes):
    with zf:
        for info in zf.infolist():
            budget.entry()
            rel = safe_name(info.filename)
            mode = info.external_attr >> 16
            if not rel:
                continue
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                notes.append(f"{rel}: not a regular file, left out")
                continue
            path = _target(tree, rel)
            if info.is_dir():
                os.makedirs(path, mode=0o700, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            if os.path.lexists(path):
                raise UnpackError(f"duplicate name in archive: {rel[:100]!r}")
            try:
                with zf.open(info) as src:
                    _copy_bounded(src, path, budget)
            # zipfile raises NotImplementedError for compression methods it lacks, and
            # RuntimeError for encrypted members: both are bad uploads, told as such.
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
                    ValueError) as e:
                if isinstance(e, UnpackError):
                    raise
                raise UnpackError(f"{rel[:100]}: cannot read from the zip file: {e}") from None


def unpack(upload, tree, max_unpacked, notes):
    """Unpack ``upload`` (zip, tgz or a plain mbox) into the new directory ``tree``;
    returns the kind found ("zip", "tgz", "mbox"). ``notes`` collects members left out."""
    kind = sniff(upload)
    os.makedirs(tree, mode=0o700)
    budget = _Budget(max_unpacked)
    if kind == "mbox":
        os.rename(upload, os.path.join(tree, "mbox"))
        return kind
    if kind == "zip":
        try:
            zf = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, OSError) as e:
            raise UnpackError(f"not a valid zip file: {e}") from None
        try:
            _unzip(zf, tree, budget, notes)
        except OSError as e:
            raise UnpackError(f"cannot unpack the zip file: {e.strerror or e}") from None
        return kind
    if kind == "tgz":
        try:
            tf = tarfile.open(upload, mode="r|gz", tarinfo=_BoundedTarInfo)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UnpackError(f"not a valid .tgz file: {e}") from None
        try:
            with tf:
                for member in tf:
                    budget.entry()
                    rel = safe_name(member.name)
                    if not rel:
                        continue
                    if member.isdir():
                        os.makedirs(_target(tree, rel), mode=0o700, exist_ok=True)
                        continue
                    if not member.isreg():
                        # Its data, if any, is still decompressed to be skipped: counted.
                        budget.take(max(member.size, 0))
                        notes.append(f"{rel}: not a regular file, left out")
                        continue
                    path = _target(tree, rel)
                    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                    if os.path.lexists(path):
                        raise UnpackError(f"duplicate name in archive: {rel[:100]!r}")
                    src = tf.extractfile(member)
                    _copy_bounded(src, path, budget)
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            raise UnpackError(f"cannot read the .tgz file: {e}") from None
        return kind
    raise UnpackError("not an mbox file, .zip or .tgz (an mbox starts with a 'From ' line)")


def _has_maildir(tree):
    for top, dirs, _files in os.walk(tree):
        if "cur" in dirs or "new" in dirs:
            return True
    return False


def _mbox_files(tree, notes):
    """[(folder name, path)] of the regular files in ``tree`` that start like an mbox."""
    out = []
    for top, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, tree).replace(os.sep, "/")
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:  # a tar name that was not UTF-8 (surrogate escapes)
                shown = rel.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                notes.append(f"{shown}: its name is not UTF-8, left out")
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_size == 0:
                continue
            with open(path, "rb") as f:
                if f.read(5) != b"From ":
                    notes.append(f"{rel}: not an mbox file, left out")
                    continue
            folder = rel[:-5] if rel.endswith(".mbox") else rel
            if rel == "mbox" and top == tree:
                folder = ""
            try:
                if folder:
                    folder = check_new_mailbox_name(normalize_mailbox_name(folder))
            except MailboxNameError as e:
                notes.append(f"{rel}: {e}, left out")
                continue
            out.append((folder, path))
    return out


def sources(tree, fmt, notes):
    """(a function making a fresh iterator of Sources, Result) for the unpacked tree;
    ``fmt`` "mbox", "maildir" or "" (by what is found)."""
    if fmt not in ("", "mbox", "maildir"):
        raise UnpackError(f"unknown format {fmt!r}: mbox or maildir")
    if fmt == "maildir" or (not fmt and _has_maildir(tree)):
        try:
            mailimport.maildir_folders(tree)
        except mailimport.ImportError_:
            raise UnpackError("no maildir (cur/ and new/ directories) in the upload") from None
        return (lambda result: mailimport.maildir_messages(tree, result)), mailimport.Result()
    boxes = _mbox_files(tree, notes)
    if not boxes:
        raise UnpackError("no mbox file in the upload (an mbox starts with a 'From ' line)")

    def messages(result):
        for folder, path in boxes:
            yield from mailimport.mbox_messages(path, result, mailbox=folder)

    return messages, mailimport.Result()


def count(make):
    """Messages of the source (one pass over it, for the progress bar)."""
    n = 0
    for _ in make(mailimport.Result()):
        n += 1
    return n


# -- import jobs ---------------------------------------------------------------------------------


class ImportJob:
    def __init__(self, account, mailbox):
        self.id = secrets.token_urlsafe(12)
        self.account = account
        self.mailbox = mailbox
        self.state = "unpacking"  # then counting, importing, done or failed
        self.total = 0
        self.result = mailimport.Result()
        self.notes = []
        self.error = ""
        self.started = time.time()
        self.finished = 0.0

    def status(self):
        r = self.result
        done = self.state == "done"
        percent = 100 if done else (int(100 * r.imported / self.total) if self.total else 0)
        return {"id": self.id, "state": self.state, "total": self.total, "imported": r.imported,
                "duplicates": r.duplicates, "too_large": len(r.too_large), "mailboxes": dict(r.mailboxes),
                "notes": self.notes[:50] + [f"{len(r.not_files)} entries were not regular files"] * bool(r.not_files),
                "error": self.error, "percent": min(percent, 100 if done else 99)}


class Imports:
    """Running and recent imports of one server, by id; at most one running per account."""

    def __init__(self, store, data_dir, max_bytes=IMPORT_MAX_BYTES, max_unpacked=None, clock=None):
        self.store = store
        self.work_dir = os.path.join(data_dir, "webimport") if data_dir else None
        if self.work_dir is not None:
            # Left by a server stopped during an import (built before the reactor runs).
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.max_bytes = max_bytes
        self.max_unpacked = max_unpacked or max(UNPACK_FACTOR * max_bytes, 64 * 1024 * 1024)
        self.jobs = {}

    def get(self, account, job_id):
        job = self.jobs.get(job_id)
        if job is None or job.account != account:
            raise HTTPError(404, "no such import")  # another account's is not even named
        return job

    def _prune(self):
        now = time.time()
        for jid, job in list(self.jobs.items()):
            if job.finished and now - job.finished > JOB_KEEP:
                del self.jobs[jid]

    async def start(self, account, content, fields):
        """Take the uploaded body (a file object) for ``account``; returns the job. The
        import runs on; its errors end in the job's status."""
        if self.work_dir is None:
            raise HTTPError(503, "imports are not possible on this server")
        self._prune()
        if any(j.account == account and not j.finished for j in self.jobs.values()):
            raise HTTPError(409, "an import of this account is running: wait for it to finish")
        mailbox = fields.get("mailbox", "").strip()
        if mailbox:
            try:
                mailbox = check_new_mailbox_name(normalize_mailbox_name(mailbox))
            except MailboxNameError as e:
                raise HTTPError(400, f"mailbox: {e}") from None
        fmt = fields.get("format", "")
        if fmt not in ("", "auto", "mbox", "maildir"):
            raise HTTPError(400, "format: mbox, maildir or empty for either")
        job = ImportJob(account, mailbox)
        work = os.path.join(self.work_dir, job.id)
        upload = os.path.join(work, "upload")
        # Registered (running) before the first wait: a second upload of the account made
        # meanwhile is refused above, not run beside this one.
        self.jobs[job.id] = job
        try:
            size = await threads.deferToThread(_save_upload, content, work, upload, self.max_bytes)
        except BaseException as e:
            del self.jobs[job.id]
            await threads.deferToThread(shutil.rmtree, work, True)
            if isinstance(e, UnpackError):
                raise HTTPError(413 if "large" in str(e) else 400, str(e)) from None
            raise
        if size == 0:
            del self.jobs[job.id]
            await threads.deferToThread(shutil.rmtree, work, True)
            raise HTTPError(400, "empty upload")
        d = defer.Deferred.fromCoroutine(self._run(job, work, upload, "" if fmt == "auto" else fmt))
        d.addErrback(lambda f: log.failure("import {id} of {account}", f, id=job.id, account=account))
        return job

    async def _run(self, job, work, upload, fmt):
        try:
            tree = os.path.join(work, "tree")
            await threads.deferToThread(unpack, upload, tree, self.max_unpacked, job.notes)
            make, result = await threads.deferToThread(sources, tree, fmt, job.notes)
            job.state = "counting"
            job.total = await threads.deferToThread(count, make)
            job.state = "importing"
            job.result = result
            acc = await self.store.open_account(job.account)
            top_level = not job.mailbox
            await mailimport.run(acc, make(result), f"web-import:{job.id}", job.mailbox or "Inbox",
                                 top_level=top_level, result=result)
            job.state = "done"
            log.info("web import done", account=job.account, id=job.id, imported=result.imported)
        except UnpackError as e:
            job.state, job.error = "failed", str(e)
        except mailimport.ImportError_ as e:
            job.state, job.error = "failed", str(e)
        except QuotaExceeded as e:
            job.state = "failed"
            job.error = f"{e}; the {job.result.imported} messages imported before stay"
        except Exception:
            log.failure("web import {id} of {account}", id=job.id, account=job.account)
            job.state, job.error = "failed", "internal error (see the server log)"
        finally:
            job.finished = time.time()
            await threads.deferToThread(shutil.rmtree, work, True)


def _save_upload(content, work, upload, max_bytes):
    """Copy the request body (spooled by Twisted) into the work directory; its size."""
    os.makedirs(work, mode=0o700)
    content.seek(0)
    size = 0
    fd = os.open(upload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            piece = content.read(1024 * 1024)
            if not piece:
                break
            size += len(piece)
            if size > max_bytes:
                raise UnpackError("the upload is too large")
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    return size


# -- export ---------------------------------------------------------------------------------


class _Gone(Exception):
    """The client went away during a download."""


@implementer(IPushProducer)
class ResponsePipe:
    """A file-like ``write`` for a thread, feeding a request on the reactor: pieces of
    PIECE bytes, and the writing thread waits while the transport is paused (a slow
    client) or fails with _Gone once the client left."""

    def __init__(self, request, reactor):
        self.request = request
        self.reactor = reactor
        self.buf = bytearray()
        self.paused = False
        self.gone = False
        self._waiting = None
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    # IPushProducer, on the reactor
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        d, self._waiting = self._waiting, None
        if d is not None:
            d.callback(None)

    def stopProducing(self):
        self.gone = True
        self.paused = False
        d, self._waiting = self._waiting, None
        if d is not None:
            d.callback(None)

    def _send(self, data):
        if self.gone:
            raise _Gone()
        self.request.write(data)
        if self.paused:
            self._waiting = defer.Deferred()
            return self._waiting
        return None

    # file-like, on the writing thread
    def write(self, data):
        self.buf += data
        if len(self.buf) >= PIECE:
            self.flush()
        return len(data)

    def flush(self):
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            threads.blockingCallFromThread(self.reactor, self._send, data)
        if self.gone:
            raise _Gone()

    def done(self):
        self.request.unregisterProducer()


async def export(request, reactor, store, account, fields):
    """Stream the export of ``account`` (fields: format mbox|maildir, archive zip|tgz,
    mailbox: one mailbox or all) as the response."""
    fmt = fields.get("format", "mbox") or "mbox"
    archive = fields.get("archive", "zip") or "zip"
    if fmt not in ("mbox", "maildir"):
        raise HTTPError(400, "format: mbox or maildir")
    if archive not in ("zip", "tgz"):
        raise HTTPError(400, "archive: zip or tgz")
    mailbox = fields.get("mailbox", "").strip() or None
    if mailbox is not None:
        try:
            mailbox = normalize_mailbox_name(mailbox)
        except MailboxNameError as e:
            raise HTTPError(400, f"mailbox: {e}") from None
    if sum(_exports.values()) >= MAX_EXPORTS:
        raise HTTPError(429, "too many downloads are running on this server: try again later")
    if _exports.get(account, 0) >= MAX_EXPORTS_PER_ACCOUNT:
        raise HTTPError(429, f"at most {MAX_EXPORTS_PER_ACCOUNT} downloads of an account at once")
    _exports[account] = _exports.get(account, 0) + 1
    try:
        return await _export(request, reactor, store, account, fmt, archive, mailbox)
    finally:
        _exports[account] -= 1
        if not _exports[account]:
            del _exports[account]


async def _export(request, reactor, store, account, fmt, archive, mailbox):
    acc = await store.open_account(account)
    boxes = await acc.read(lambda conn: mailexport.snapshot_query(conn, mailbox))
    if mailbox is not None and not boxes:
        raise HTTPError(404, "no such mailbox")
    stamp = time.strftime("%Y%m%d", time.gmtime())
    name = f"moxtw-{account}-{stamp}.{archive}"
    request.setHeader(b"content-type", b"application/zip" if archive == "zip" else b"application/gzip")
    request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode("ascii", "replace"))
    pipe = ResponsePipe(request, reactor)

    def run():
        counts = mailexport.export(lambda: boxes, acc.open_message, fmt, pipe, mailbox, archive=archive)
        pipe.flush()
        return counts

    try:
        counts = await threads.deferToThread(run)
    except _Gone:
        log.info("web export abandoned by the client", account=account)
        return None
    except Exception:
        log.failure("web export of {account}", account=account)
        # The status line is out: only cutting the response says it is incomplete.
        if request.channel is not None:
            request.channel.transport.loseConnection()
        return None
    finally:
        pipe.done()
    log.info("web export", account=account, messages=counts["messages"], mailboxes=counts["mailboxes"])
    return counts
