"""``moxtw import`` and ``moxtw export``: a generated Maildir++ tree and mbox with flags
and keywords imported, exported, and compared message by message and flag by flag; an
interrupted import resumed without duplicates; hostile mbox input; an import by the
running server seen by an IMAP client."""

import imaplib
import os
import random
import tarfile

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.admin import mailexport, mailimport
from moxtw.config import write_localserve_config
from moxtw.store import Store
from moxtw.test.clihelper import run_moxtw
from moxtw.test.test_localserve import free_offset, spawn_localserve

FLAG_LETTERS = "DFPRST"


def make_maildir(root, rng, count=60):
    """A Maildir++ tree with random flags and keywords; {(folder, Message-ID): (data, flags)}."""
    folders = ["", ".Sent", ".Lists", ".Lists.moxtw"]
    for f in folders:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(root, f, sub))
    keywords = ["$Junk", "work", "$NotJunk"]
    for f in folders:
        with open(os.path.join(root, f, "dovecot-keywords"), "w") as kf:
            kf.writelines(f"{i} {k}\n" for i, k in enumerate(keywords))
    want = {}
    for i in range(count):
        folder = rng.choice(folders)
        body = "".join(f"line {j} of {i}\r\n" for j in range(rng.randrange(1, 50)))
        if i % 7 == 0:
            body += "From the middle of a line\r\nFrom here at the start\r\n>From quoted\r\n"
        data = (f"From: sender{i}@example.org\r\nTo: you@example.com\r\nSubject: message {i}\r\n"
                f"Message-ID: <gen{i}@example.org>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\n{body}").encode()
        new = rng.random() < 0.2
        letters = "" if new else "".join(sorted(rng.sample(FLAG_LETTERS, rng.randrange(0, 4))))
        kws = [] if new else rng.sample(range(len(keywords)), rng.randrange(0, 3))
        info = letters + "".join(sorted(chr(ord("a") + k) for k in kws))
        name = f"{1700000000 + i}.M{i}P1.host" + ("" if new else f":2,{info}")
        with open(os.path.join(root, folder, "new" if new else "cur", name), "wb") as out:
            out.write(data)
        flags = sorted({mailimport.MAILDIR_FLAGS[c] for c in letters} | {keywords[k] for k in kws})
        box = "/".join(p for p in folder[1:].split(".") if p)
        want[(box, f"gen{i}@example.org")] = (data, flags)
    return want


def read_maildir_export(root):
    """{(mailbox, Message-ID): (data, flags)} of an exported tree."""
    got = {}
    for top, dirs, files in os.walk(root):
        if os.path.basename(top) != "cur":
            continue
        box_dir = os.path.dirname(top)
        box = os.path.relpath(box_dir, root).replace(os.sep, "/")
        keywords = mailimport._keywords_file(box_dir)
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                data = f.read()
            info = name.partition(":2,")[2]
            flags = sorted({mailimport.MAILDIR_FLAGS[c] for c in info if c in mailimport.MAILDIR_FLAGS}
                           | {keywords[c] for c in info if c in keywords})
            got[(box, mailimport.message_id(data.replace(b"\r\n", b"\n")))] = (data, flags)
    return got


class RoundTripTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.config = write_localserve_config(self.dir)
        self.rng = random.Random(1234)

    @defer.inlineCallbacks
    def test_maildir_import_export_compare(self):
        src = os.path.join(self.dir, "Maildir")
        want = make_maildir(src, self.rng)
        out, err, code = yield run_moxtw("import", "maildir", "mox", "Inbox", src, "--top-level", "--config", self.config)
        self.assertEqual(code, 0, err)
        self.assertIn(f"imported {len(want)} messages with the server stopped", out.decode())
        dest = os.path.join(self.dir, "export")
        out, err, code = yield run_moxtw("export", "maildir", "mox", dest, "--config", self.config)
        self.assertEqual(code, 0, err)
        got = read_maildir_export(dest)
        # Folders at top level (--top-level); the root went into Inbox.
        expect = {(box or "Inbox", mid): v for (box, mid), v in want.items()}
        self.assertEqual(sorted(got), sorted(expect))
        for key, (data, flags) in expect.items():
            self.assertEqual(got[key][0], data, key)
            self.assertEqual(got[key][1], flags, key)

        # Again: nothing imported twice.
        out, err, code = yield run_moxtw("import", "maildir", "mox", "Inbox", src, "--top-level", "--config", self.config)
        self.assertEqual(code, 0, err)
        self.assertIn(f"imported 0 messages with the server stopped, {len(want)} were imported before", out.decode())

        # mbox export of the same, read back by the importer: same messages and flags.
        mdest = os.path.join(self.dir, "export.tgz")
        out, err, code = yield run_moxtw("export", "mbox", "mox", mdest, "--config", self.config)
        self.assertEqual(code, 0, err)
        unpacked = os.path.join(self.dir, "unpacked")
        with tarfile.open(mdest) as tf:
            tf.extractall(unpacked, filter="data")
        back = {}
        for top, _, files in os.walk(unpacked):
            for name in files:
                box = os.path.relpath(os.path.join(top, name), unpacked)[:-len(".mbox")]
                if os.path.getsize(os.path.join(top, name)) == 0:
                    continue
                for s in mailimport.mbox_messages(os.path.join(top, name)):
                    back[(box, mailimport.message_id(s.data))] = (s.data, s.flags)
        self.assertEqual(sorted(back), sorted(expect))
        for key, (data, flags) in expect.items():
            self.assertEqual(back[key][0], data.replace(b"\r\n", b"\n"), key)
            self.assertEqual(back[key][1], flags, key)

    @defer.inlineCallbacks
    def test_interrupted_import_resumes(self):
        src = os.path.join(self.dir, "Maildir")
        want = make_maildir(src, self.rng, count=450)
        self.patch(mailimport, "BATCH_MESSAGES", 100)
        st = Store(os.path.join(self.dir, "data"))
        self.addCleanup(st.close)
        acc = yield st.open_account("mox")

        def breaking(it, after):
            for i, s in enumerate(it):
                if i == after:
                    raise OSError("disk gone")
                yield s

        with self.assertRaises(OSError):
            yield mailimport.run(acc, breaking(mailimport.maildir_messages(src), 250), src, "Inbox")
        boxes = yield acc.mailboxes()
        first = sum(b.total for b in boxes)
        self.assertEqual(first, 200)  # two whole batches committed, the third not
        r = yield mailimport.run(acc, mailimport.maildir_messages(src), src, "Inbox")
        self.assertEqual((r.skipped, r.imported), (200, len(want) - 200))
        boxes = yield acc.mailboxes()
        self.assertEqual(sum(b.total for b in boxes), len(want))
        # Each Message-ID once.
        ids = []
        for b in boxes:
            for m in (yield acc.messages(b.id)):
                ids.append(m.message_id)
        self.assertEqual(len(ids), len(set(ids)))

    @defer.inlineCallbacks
    def test_hostile_mbox(self):
        path = os.path.join(self.dir, "hostile.mbox")
        with open(path, "wb") as f:
            f.write(b"From a@b Mon Jan  1 00:00:00 2024\r\n"
                    b"Subject: crlf\r\nX-Keywords: ok, not(atom, \xff\xfe, $Label1\r\nStatus: R\r\n\r\n"
                    b"body\r\n>From quoted once\r\n\r\n"
                    b"From broken-date-line\n"
                    b"Subject: lf only\nX-Status: ZZZ\n\nFrom: in the body is a new message in mboxo\n"
                    b"\n"
                    b"From c@d Mon Jan  1 00:00:00 2024\n"
                    b"no header separator and no trailing newline")
        out, err, code = yield run_moxtw("import", "mbox", "mox", "Hostile", path, "--config", self.config)
        self.assertEqual(code, 0, err)
        self.assertIn("imported 3 messages", out.decode())
        st = Store(os.path.join(self.dir, "data"))
        self.addCleanup(st.close)
        acc = yield st.open_account("mox")
        mb = yield acc.mailbox("Hostile")
        msgs = yield acc.messages(mb.id)
        self.assertEqual(len(msgs), 3)
        first = msgs[0]
        self.assertIn("\\Seen", first.flags)
        self.assertNotIn("not(atom", " ".join(first.flags))
        with acc.open_message(first.id) as f:
            data = f.read()
        self.assertIn(b"\r\nFrom quoted once\r\n", data)  # mboxrd unescaped, CRLF stored
        self.assertNotIn(b"X-Keywords", data)
        self.assertNotIn(b"Status:", data)

        # Not an mbox, a directory, missing: clear errors, nothing imported.
        bad = os.path.join(self.dir, "bad.mbox")
        with open(bad, "wb") as f:
            f.write(b"Subject: no From_ line\n\nx\n")
        for p, text in ((bad, "not an mbox file"), (self.dir, "a directory"),
                        (os.path.join(self.dir, "missing"), "No such file")):
            _, err, code = yield run_moxtw("import", "mbox", "mox", "Bad", p, "--config", self.config)
            self.assertEqual(code, 1, p)
            self.assertIn(text, err.decode(), p)
        empty = os.path.join(self.dir, "empty")
        os.makedirs(empty)
        _, err, code = yield run_moxtw("import", "maildir", "mox", "Bad", empty, "--config", self.config)
        self.assertEqual(code, 1)
        self.assertIn("no maildir", err.decode())
        # The data directory itself is never a source.
        _, err, code = yield run_moxtw("import", "maildir", "mox", "Bad", os.path.join(self.dir, "data"),
                                   "--config", self.config)
        self.assertEqual(code, 1)
        self.assertIn("inside the data directory", err.decode())

    def test_export_refuses_nonempty_dest_and_bad_names(self):
        d = os.path.join(self.dir, "nonempty")
        os.makedirs(d)
        open(os.path.join(d, "x"), "w").close()
        with self.assertRaises(mailexport.ExportError):
            mailexport.export(lambda: [], None, "maildir", d)
        self.assertEqual(mailexport._safe_rel("../../etc/passwd"), "etc/passwd")
        self.assertEqual(mailexport._safe_rel(".."), "_")


class OnlineImportTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_import_through_running_server(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        proc = spawn_localserve(self, d, offset)
        yield proc.listening
        src = os.path.join(d, "Maildir")
        want = make_maildir(src, random.Random(5), count=30)

        def select_count():
            im = imaplib.IMAP4("127.0.0.1", 143 + offset, timeout=30)
            try:
                im.login("mox@localhost", "moxmoxmox")
                typ, data = im.select("Imported/Sent")
                return typ, data
            finally:
                im.logout()

        out, err, code = yield run_moxtw("import", "maildir", "mox", "Imported", src, "--config",
                                     os.path.join(d, "config"))
        self.assertEqual(code, 0, err)
        self.assertIn("by the running server", out.decode())
        typ, data = yield threads.deferToThread(select_count)
        self.assertEqual(typ, "OK")
        self.assertEqual(int(data[0]), sum(1 for (box, _) in want if box == "Sent"))


class HostileSourceTests(unittest.TestCase):
    """What a source can do to the importer: links out of the tree, FIFOs, names that are
    not UTF-8 or are modified UTF-7, a different mbox at the same path, lines without end."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.store = Store(os.path.join(self.dir, "data"))
        self.addCleanup(self.store.close)
        self.acc = yield self.store.open_account("mox")

    def maildir(self, *parts):
        path = os.path.join(self.dir, "Maildir", *parts)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        return path

    @defer.inlineCallbacks
    def boxes(self):
        out = {}
        for b in (yield self.acc.mailboxes()):
            if b.total:
                out[b.name] = b.total
        return out

    @defer.inlineCallbacks
    def test_links_fifos_and_names(self):
        root = self.maildir()
        secret = os.path.join(self.dir, "secret")
        with open(secret, "wb") as f:
            f.write(b"Subject: secret\n\nroot only\n")
        with open(os.path.join(root, "cur", "1.a:2,S"), "wb") as f:
            f.write(b"Subject: ok\r\nMessage-ID: <ok@x>\r\n\r\nbody Message-ID: <not@this>\r\n")
        os.symlink(secret, os.path.join(root, "cur", "2.link:2,S"))
        os.mkfifo(os.path.join(root, "new", "3.fifo"))
        elsewhere = self.maildir("..", "Elsewhere")
        with open(os.path.join(elsewhere, "cur", "4.x:2,"), "wb") as f:
            f.write(b"Subject: elsewhere\n\nx\n")
        os.symlink(elsewhere, os.path.join(root, ".Linked"))
        umlaut = self.maildir(".Entw&APw-rfe")
        with open(os.path.join(umlaut, "cur", "5.u:2,"), "wb") as f:
            f.write(b"Subject: draft\n\nx\n")
        bad = os.path.join(os.fsencode(root), b".bad\xff")
        for sub in (b"cur", b"new", b"tmp"):
            os.makedirs(os.path.join(bad, sub))
        with open(os.path.join(bad, b"cur", b"6.b:2,"), "wb") as f:
            f.write(b"Subject: bad name\n\nx\n")
        starred = self.maildir(".a\x01b")  # a control character: no mailbox name
        with open(os.path.join(starred, "cur", "7.s:2,"), "wb") as f:
            f.write(b"Subject: star\n\nx\n")
        after = self.maildir(".zzz")
        with open(os.path.join(after, "cur", "8.z:2,"), "wb") as f:
            f.write(b"Subject: after the bad ones\n\nx\n")

        sources, result = mailimport.open_source("maildir", root)
        r = yield mailimport.run(self.acc, sources, mailimport.source_id(root), "Inbox", top_level=True,
                                 result=result)
        self.assertEqual((yield self.boxes()), {"Inbox": 1, "Entwürfe": 1, "zzz": 1})
        self.assertEqual(len(r.not_files), 2)  # the link and the FIFO
        self.assertEqual(len(r.skipped_folders), 2)  # not UTF-8, and the control character
        self.assertEqual(mailimport.message_id(b"Subject: ok\r\nMessage-ID: <ok@x>\r\n\r\nMessage-ID: <no@x>\r\n"),
                         "ok@x")

    @defer.inlineCallbacks
    def test_other_mbox_at_same_path(self):
        path = os.path.join(self.dir, "mail.mbox")

        def write(*subjects):
            with open(path, "wb") as f:
                for s in subjects:
                    f.write(f"From x@y Mon Jan  1 00:00:00 2024\nSubject: {s}\n\nbody of {s}\n\n".encode())

        write("OLD 1", "OLD 2")
        r = yield mailimport.run(self.acc, mailimport.mbox_messages(path), mailimport.source_id(path), "M")
        self.assertEqual(r.imported, 2)
        write("NEW 1", "NEW 2", "NEW 3")  # same offsets for the first two
        r = yield mailimport.run(self.acc, mailimport.mbox_messages(path), mailimport.source_id(path), "M")
        self.assertEqual((r.imported, r.skipped), (3, 0))
        # Through a symbolic link it is the same source.
        link = os.path.join(self.dir, "link.mbox")
        os.symlink(path, link)
        r = yield mailimport.run(self.acc, mailimport.mbox_messages(link), mailimport.source_id(link), "M")
        self.assertEqual((r.imported, r.skipped), (0, 3))

    def test_mbox_bounded_and_separators(self):
        self.patch(mailimport, "MAX_MESSAGE", 1000)
        self.patch(mailimport, "READ_PIECE", 100)
        path = os.path.join(self.dir, "long.mbox")
        with open(path, "wb") as f:
            f.write(b"From a Mon Jan  1 00:00:00 2024\nSubject: long\n\n" + b"x" * 100000)
            f.write(b"\n\nFrom b Mon Jan  1 00:00:00 2024\nSubject: short\n\nline\nFrom inside, no blank before\n")
        result = mailimport.Result()
        got = list(mailimport.mbox_messages(path, result))
        self.assertEqual(len(got), 1)
        self.assertIn(b"Subject: short", got[0].data)
        self.assertIn(b"\nFrom inside, no blank before\n", got[0].data)
        self.assertEqual(len(result.too_large), 1)

    def test_export_names(self):
        self.assertEqual(mailexport._safe_rel("Inbox/cur"), "Inbox/cur_")
        self.assertEqual(mailexport._safe_rel("new/x"), "new_/x")
        path = os.path.join(self.dir, "empty.mbox")
        open(path, "wb").close()
        sources, _ = mailimport.open_source("mbox", path)
        self.assertEqual(list(sources), [])
        os.mkfifo(os.path.join(self.dir, "fifo.mbox"))
        with self.assertRaises(mailimport.ImportError_):
            mailimport.open_source("mbox", os.path.join(self.dir, "fifo.mbox"))

    # The second review's cases: a linked cur/, a FIFO as dovecot-keywords, appending.

    @defer.inlineCallbacks
    def test_linked_cur_and_fifo_keywords(self):
        root = self.maildir()
        elsewhere = os.path.join(self.dir, "elsewhere")
        os.makedirs(elsewhere)
        with open(os.path.join(elsewhere, "1.x:2,S"), "wb") as f:
            f.write(b"Subject: secret\n\nTOP SECRET\n")
        os.rmdir(os.path.join(root, "cur"))
        os.symlink(elsewhere, os.path.join(root, "cur"))
        with open(os.path.join(root, "new", "2.y"), "wb") as f:
            f.write(b"Subject: fine\n\nx\n")
        os.mkfifo(os.path.join(root, "dovecot-keywords"))
        r = yield mailimport.run(self.acc, mailimport.maildir_messages(root), mailimport.source_id(root), "Inbox")
        self.assertEqual(r.imported, 1)
        mb = yield self.acc.mailbox("Inbox")
        [m] = yield self.acc.messages(mb.id)
        self.assertEqual(m.subject, "fine")

    @defer.inlineCallbacks
    def test_append_to_mbox(self):
        path = os.path.join(self.dir, "grow.mbox")
        with open(path, "wb") as f:
            f.write(b"From a Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n")  # no empty line at the end
        r = yield mailimport.run(self.acc, mailimport.mbox_messages(path), mailimport.source_id(path), "G")
        self.assertEqual(r.imported, 1)
        with open(path, "ab") as f:
            f.write(b"\nFrom b Mon Jan  1 00:00:00 2024\nSubject: two\n\nbody\n")
        r = yield mailimport.run(self.acc, mailimport.mbox_messages(path), mailimport.source_id(path), "G")
        self.assertEqual((r.imported, r.skipped), (1, 1))
