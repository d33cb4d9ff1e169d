"""Regressions from the review of the account pages (import/export, app passwords)."""

import gzip
import io
import os
import tarfile
import tracemalloc
import zipfile

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.store import Store
from moxtw.web import transfer
from moxtw.web.base import HTTPError


def _tar_header(name, size, typeflag):
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = typeflag
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _temp_store(test):
    """(directory, Store in its data/) for one test, closed after it."""
    d = os.path.abspath(test.mktemp())
    os.makedirs(d)
    store = Store(os.path.join(d, "data"))
    test.addCleanup(store.close)
    return d, store


class UnpackTests(unittest.TestCase):
    def test_huge_long_name_header_not_read_into_memory(self):
        # A GNU long-name member of 64 MB (zeros, compresses to ~64 KB): tarfile reads such
        # headers whole into memory; the import must refuse it with bounded memory.
        d = self.mktemp()
        os.makedirs(d)
        upload = os.path.join(d, "upload")
        size = 64 * 1024 * 1024
        with gzip.open(upload, "wb", compresslevel=1) as f:
            f.write(_tar_header("././@LongLink", size, tarfile.GNUTYPE_LONGNAME))
            zero = b"\0" * (1024 * 1024)
            for _ in range(size // len(zero)):
                f.write(zero)
            f.write(_tar_header("x.mbox", 0, tarfile.REGTYPE))
            f.write(b"\0" * 1024)
        self.assertLess(os.path.getsize(upload), 1024 * 1024)
        tracemalloc.start()
        try:
            with self.assertRaises(transfer.UnpackError):
                transfer.unpack(upload, os.path.join(d, "tree"), 1024 * 1024 * 1024, [])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 16 * 1024 * 1024)

    def test_pax_and_skipped_data_bounded(self):
        # A pax header of 32 MB, and an unknown member type whose 32 MB of data would be
        # decompressed only to be skipped: refused, with bounded memory and work.
        for typeflag in (tarfile.XHDTYPE, tarfile.XGLTYPE, b"Z"):
            d = self.mktemp()
            os.makedirs(d)
            upload = os.path.join(d, "upload")
            size = 32 * 1024 * 1024
            with gzip.open(upload, "wb", compresslevel=1) as f:
                f.write(_tar_header("x", size, typeflag))
                f.write(b"\0" * size)
                f.write(b"\0" * 1024)
            tracemalloc.start()
            try:
                with self.assertRaises(transfer.UnpackError):
                    transfer.unpack(upload, os.path.join(d, "tree"), 1024 * 1024, [])
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertLess(peak, 8 * 1024 * 1024, typeflag)

    def test_zip_too_long_names_clear_error(self):
        # A directory name longer than the file system allows: an UnpackError (a clear
        # message for the user), not an OSError ending as "internal error".
        for name in ("a" * 300 + "/x.mbox", "a" * 300 + "/"):
            d = self.mktemp()
            os.makedirs(d)
            upload = os.path.join(d, "upload")
            with zipfile.ZipFile(upload, "w") as zf:
                zf.writestr(name, b"From x\n\nbody\n")
            with self.assertRaises(transfer.UnpackError):
                transfer.unpack(upload, os.path.join(d, "tree"), 1024 * 1024, [])


class ConcurrentImportTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_one_running_import_per_account(self):
        d, store = _temp_store(self)
        imports = transfer.Imports(store, os.path.join(d, "data"))
        body = b"From x Mon Dec  7 12:00:00 2026\nSubject: s\n\nbody\n" * 20000
        a = defer.ensureDeferred(imports.start("mjl", io.BytesIO(body), {}))
        b = defer.ensureDeferred(imports.start("mjl", io.BytesIO(body), {}))
        results = yield defer.DeferredList([a, b], consumeErrors=True)
        ok = [r for good, r in results if good]
        refused = [r for good, r in results if not good]
        self.assertEqual(len(ok), 1, results)
        self.assertEqual(len(refused), 1, results)
        refused[0].trap(HTTPError)
        self.assertEqual(refused[0].value.code, 409)
        # Wait for the running one to end (its work directory removed).
        job = ok[0]
        for _ in range(200):
            if job.finished:
                break
            from twisted.internet import reactor, task
            yield task.deferLater(reactor, 0.05, lambda: None)


class NonUTF8NameTests(unittest.TestCase):
    def test_tar_name_not_utf8_left_out(self):
        # A .tgz made with Latin-1 names: the member is left out with a note (no
        # UnicodeEncodeError ending the import as "internal error").
        d = self.mktemp()
        os.makedirs(d)
        upload = os.path.join(d, "upload")
        data = b"From x Mon Dec  7 12:00:00 2026\nSubject: s\n\nbody\n"
        with tarfile.open(upload, "w:gz", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
            for name in ("caf\xe9.mbox", "ok.mbox"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        notes = []
        tree = os.path.join(d, "tree")
        transfer.unpack(upload, tree, 10 ** 7, notes)
        make, result = transfer.sources(tree, "", notes)
        got = list(make(result))
        self.assertEqual(len(got), 1)
        self.assertTrue(any("not UTF-8" in n for n in notes), notes)
        import json

        json.dumps(notes, ensure_ascii=False).encode("utf-8")

    def test_mailbox_name_with_surrogates_refused(self):
        from moxtw.store.errors import MailboxNameError
        from moxtw.store.model import normalize_mailbox_name

        with self.assertRaises(MailboxNameError):
            normalize_mailbox_name("caf\udce9")


class _StalledRequest:
    """A download whose client never reads: the transport pauses at the first write."""

    def __init__(self):
        self.producer = None
        self.finished = defer.Deferred()
        self.channel = None
        self.written = 0

    def setHeader(self, name, value):
        pass

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def notifyFinish(self):
        return self.finished

    def write(self, data):
        self.written += len(data)
        self.producer.pauseProducing()


class ExportLimitTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_stalled_downloads_do_not_take_all_threads(self):
        # Each running export holds a thread of the reactor's pool while its client is
        # slow; without a limit, one account's stalled downloads took every thread (no
        # index read, no login, no delivery could run anymore).
        from twisted.internet import reactor, task, threads

        d, store = _temp_store(self)
        yield store.open_account("mjl")
        requests, exports = [], []
        for _ in range(12):
            r = _StalledRequest()
            requests.append(r)
            exports.append(defer.ensureDeferred(transfer.export(r, reactor, store, "mjl",
                                                                {"archive": "tgz"})))
        refused = []
        for e in exports:
            e.addErrback(lambda f: refused.append(f.trap(HTTPError) and f.value.code))
        yield task.deferLater(reactor, 0.5, lambda: None)
        probe = threads.deferToThread(lambda: "ran")
        got = []
        probe.addCallback(got.append)
        for _ in range(40):
            if got:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        ran = bool(got)
        # Let the stalled ones go (the clients leave).
        for r in requests:
            if r.producer is not None:
                r.producer.stopProducing()
        yield defer.DeferredList(exports, consumeErrors=True)
        if not ran:
            yield probe
        self.assertTrue(ran, "the thread pool was exhausted by stalled exports")
        self.assertTrue(refused and set(refused) == {429}, refused)


from moxtw.test.test_web_account_more import MoreBase  # noqa: E402


class UploadLimitTests(MoreBase):
    @defer.inlineCallbacks
    def test_no_large_body_without_a_session(self):
        # The import's large body limit only for a valid session and its CSRF token:
        # others get the 413 on the announced length (nothing spooled to disk).
        from twisted.internet import threads

        cookie, csrf, _ = yield self.login()
        length = 1536 * 1024  # above the 1 MB of other requests, below the import limit

        def announce(extra):
            import socket

            with socket.create_connection(("127.0.0.1", self.ports["http"]), timeout=10) as sock:
                sock.sendall((f"POST /api/import HTTP/1.1\r\nHost: mail.example.org\r\n{extra}"
                              f"Content-Type: application/octet-stream\r\n"
                              f"Content-Length: {length}\r\n\r\n").encode())
                sock.sendall(b"From x\n")
                sock.settimeout(3)
                try:
                    return sock.recv(100)
                except socket.timeout:
                    return b"(waiting for the body)"

        for extra in ("", "Cookie: moxtw_account=forged\r\nX-CSRF-Token: x\r\n",
                      f"Cookie: {cookie}\r\n", f"Cookie: {cookie}\r\nX-CSRF-Token: wrong\r\n"):
            head = yield threads.deferToThread(announce, extra)
            self.assertTrue(head.startswith(b"HTTP/1.1 413"), (extra, head))
        head = yield threads.deferToThread(announce, f"Cookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n")
        self.assertEqual(head, b"(waiting for the body)")


class RulesetReDoSTests(unittest.TestCase):
    def test_nested_repetition_refused(self):
        # Matched on the reactor at delivery, and re holds the interpreter: "(a+)+$"
        # against a header of 40 "a"s and a "!" would stop the server for hours.
        from moxtw.admin.configedit import EditError, check_ruleset

        for bad in ("(a+)+$", "(a*)*b", "(x+x+)+y", "([a-z]+-?)+$", "(.+\\.)+x"):
            with self.assertRaises(EditError, msg=bad):
                check_ruleset({"MsgFromRegexp": bad, "Mailbox": "x"})
            with self.assertRaises(EditError, msg=bad):
                check_ruleset({"HeadersRegexp": {"^subject$": bad}, "Mailbox": "x"})
        for good in ("^.*@example\\.com$", "(foo|bar)+", "[a-z]+(-[a-z]+)*", "(\\w+\\.)+example\\.org$",
                     "(?>\\w+\\.)+example", "(\\S+\\s)++x", "a{2,5}b+"):
            self.assertEqual(check_ruleset({"MsgFromRegexp": good, "Mailbox": "x"})["MsgFromRegexp"], good)


class FullNameTests(unittest.TestCase):
    def test_line_breaks_of_all_kinds_refused(self):
        # C1 controls (NEL, U+0085) and the Unicode line and paragraph separators break
        # lines too (a full name ends up in headers and pages).
        from moxtw.admin.configedit import EditError, account_full_name

        class Cfg:
            class dynamic:
                Accounts = {"mjl": object()}

        for bad in ("Mjl\r\nBcc: x@example.org", "Mjl\x85Bcc: x", "Mjl\u2028x", "Mjl\x9bx"):
            with self.assertRaises(EditError, msg=repr(bad)):
                account_full_name("mjl", bad)({"Accounts": {"mjl": {}}}, Cfg)
        doc = {"Accounts": {"mjl": {}}}
        account_full_name("mjl", "Mëchiel Lukkien")(doc, Cfg)
        self.assertEqual(doc["Accounts"]["mjl"]["FullName"], "Mëchiel Lukkien")


class ImportQuotaTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_quota_exceeded_is_a_clear_error(self):
        from twisted.internet import reactor, task

        d, store = _temp_store(self)
        acc = yield store.open_account("mjl")
        acc.quota = 2000
        imports = transfer.Imports(store, os.path.join(d, "data"))
        body = b"".join(b"From x Mon Dec  7 12:00:00 2026\nSubject: s%d\n\n%s\n\n" % (i, b"b" * 500)
                        for i in range(10))
        job = yield defer.ensureDeferred(imports.start("mjl", io.BytesIO(body), {}))
        for _ in range(200):
            if job.finished:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        s = job.status()
        self.assertEqual(s["state"], "failed", s)
        self.assertIn("quota", s["error"])
        self.assertIn(f"the {s['imported']} messages imported before stay", s["error"])


class AppPasswordTimingTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_wrong_lookup_costs_a_derivation_too(self):
        # A wrong app password costs one key derivation whether or not its first group
        # (the stored lookup key) matches one of the account's: no timing oracle.
        from moxtw import apppasswords
        from moxtw.sasl import credentials

        d, store = _temp_store(self)
        acc = yield store.open_account("mjl")
        _, password = yield apppasswords.create(acc, "phone")
        calls = []
        real = credentials.verify_password

        def counting(creds, pw):
            calls.append(pw)
            return real(creds, pw)

        self.patch(credentials, "verify_password", counting)
        alphabet = apppasswords.ALPHABET
        other_first = next(alphabet[i] * 4 for i in range(len(alphabet)) if alphabet[i] * 4 != password[:4])
        same_lookup_wrong = password[:5] + ("aaaa" if password[5:9] != "aaaa" else "bbbb") + password[9:]
        other_lookup = other_first + password[4:]
        for pw in (same_lookup_wrong, other_lookup):
            calls.clear()
            ok = yield apppasswords.verify(acc, pw)
            self.assertFalse(ok)
            self.assertEqual(len(calls), 1, pw)
        ok = yield apppasswords.verify(acc, password)
        self.assertTrue(ok)

    @defer.inlineCallbacks
    def test_known_and_unknown_logins_cost_the_same(self):
        # With an app-password-shaped password, a known login costs two derivations (the
        # account password, then the app passwords): an unknown login costs two as well.
        from types import SimpleNamespace

        from moxtw import apppasswords
        from moxtw.auth import AuthFailed, Authenticator
        from moxtw.sasl import credentials

        d, store = _temp_store(self)
        acc = yield store.open_account("mjl")
        yield acc.set_password("a good password")
        dyn = SimpleNamespace(Domains={}, Accounts={"mjl": SimpleNamespace(
            Destinations={"mjl@example.org": None}, LoginDisabled="")})
        auth = Authenticator(store, lambda: dyn)
        calls = []
        real = credentials.verify_password

        def counting(creds, pw):
            calls.append(pw)
            return real(creds, pw)

        self.patch(credentials, "verify_password", counting)
        shaped = apppasswords.generate()
        counts = []
        for login in ("mjl@example.org", "nobody@example.org"):
            calls.clear()
            yield self.assertFailure(auth.authenticate(login, shaped, app_passwords=True), AuthFailed)
            counts.append(len(calls))
        self.assertEqual(counts, [2, 2])
