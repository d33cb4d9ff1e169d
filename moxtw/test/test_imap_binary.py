"""Binary APPEND (RFC 3516 4.4): literal8 messages with binary parts are stored with
those parts as base64 (moxtw.message.binary), so that BINARY[] gives them back
byte-exact and BODY[] never carries NUL. imaptest's append-binary group checks the same."""

import base64
import os

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.message import parse
from moxtw.message.binary import binary_parts_as_base64
from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged

HEAD = (b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n")
RAW = b"\0-\xe4\n\r\n\n"


def multipart(*parts, boundary=b"xx"):
    out = [b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\npreamble\r\n"]
    for p in parts:
        out.append(b"--" + boundary + b"\r\n" + p + b"\r\n")
    out.append(b"--" + boundary + b"--\r\nepilogue\r\n")
    return b"".join(out)


class ConvertTests(unittest.SynchronousTestCase):
    def decoded_leaves(self, data):
        root = parse(data)
        return [p.decoded_body(data) for p in root.walk() if not p.parts and p.message is None]

    def test_single_part(self):
        out = binary_parts_as_base64(HEAD + RAW)
        self.assertNotIn(b"binary", out.lower().split(b"\r\n\r\n")[0])
        self.assertIn(b"Content-Transfer-Encoding: base64\r\n\r\n", out)
        self.assertNotIn(b"\0", out)
        self.assertEqual(self.decoded_leaves(out), [RAW])
        self.assertTrue(out.startswith(b"From: user@domain.org\r\nMime-Version: 1.0\r\n"))

    def test_nothing_to_convert_is_same_object(self):
        text = b"Subject: hi\r\n\r\nplain\r\n"
        self.assertIs(binary_parts_as_base64(text), text)
        b64 = b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
        self.assertIs(binary_parts_as_base64(b64), b64)

    def test_multipart_only_binary_leaves_change(self):
        text = b"Content-Type: text/plain\r\n\r\nhello there"
        binpart = b"Content-Type: image/png\r\ncontent-transfer-encoding:\r\n  BINARY\r\n\r\n\x89PNG\r\x00\n\xff"
        nul8bit = b"Content-Transfer-Encoding: 8bit\r\n\r\na\0b"
        data = multipart(text, binpart, nul8bit)
        out = binary_parts_as_base64(data)
        self.assertIn(b"hello there", out)
        self.assertIn(b"preamble", out)
        self.assertIn(b"epilogue", out)
        self.assertNotIn(b"\0", out)
        self.assertNotIn(b"BINARY", out)  # the folded field went with its continuation
        leaves = self.decoded_leaves(out)
        self.assertEqual(leaves, [b"hello there", b"\x89PNG\r\x00\n\xff", b"a\0b"])
        root = parse(out)
        self.assertEqual([p.content_transfer_encoding for p in root.parts], ["7bit", "base64", "base64"])
        self.assertEqual(root.parts[1].media_type, "image")

    def test_nested_message(self):
        inner = HEAD + RAW
        outer = multipart(b"Content-Type: message/rfc822\r\n\r\n" + inner)
        out = binary_parts_as_base64(outer)
        self.assertNotIn(b"\0", out)
        self.assertIn(RAW, self.decoded_leaves(out))

    def test_hostile_inputs_never_raise(self):
        for data in [b"", b"\0", b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: binary\r\n\r\n",
                     b"Content-Transfer-Encoding: binary\n\n\0\0\0", os.urandom(5000),
                     multipart(b"\0\0", b"Content-Transfer-Encoding: binary\r\n\r\n") * 3,
                     b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n" * 5000]:
            out = binary_parts_as_base64(data)
            self.assertIsInstance(out, bytes)
            if b"\0" in data and b"\0" in out:
                # Only where NUL is outside any leaf body (e.g. inside header bytes).
                root = parse(out)
                for p in root.walk():
                    if not p.parts and p.message is None:
                        self.assertNotIn(b"\0", out[p.body_offset:p.end_offset])


class AppendBinaryTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def append_binary(self, c, data):
        lines = yield c.cmd(b"APPEND INBOX ~{%d+}\r\n%s" % (len(data), data))
        self.assertIn("[APPENDUID ", tagged(lines))
        yield c.cmd("SELECT INBOX")

    @defer.inlineCallbacks
    def test_binary_part_kept_byte_exact(self):
        c = yield self.logged_in()
        yield self.append_binary(c, HEAD + RAW)
        lines = yield c.cmd("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])")
        self.assertIn(b"BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n" + RAW + b")", b"\r\n".join(lines))
        lines = yield c.cmd("FETCH 1 (BODY.PEEK[1])")
        body = b"\r\n".join(lines)
        self.assertNotIn(b"\0", body)
        self.assertIn(base64.b64encode(RAW), body)

    @defer.inlineCallbacks
    def test_plain_literal_unchanged(self):
        """A non-binary literal is stored as before: no conversion."""
        c = yield self.logged_in()
        data = HEAD + b"abc\r\n"
        lines = yield c.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(data), data))
        self.assertIn("[APPENDUID ", tagged(lines))
        yield c.cmd("SELECT INBOX")
        lines = yield c.cmd("FETCH 1 (BODY.PEEK[1])")
        self.assertIn("BODY[1] {5}", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_spooled_binary_append(self):
        """Over the spool threshold the literal goes to a file; it is converted there."""
        c = yield self.logged_in()
        raw = bytes(range(256)) * 1024  # 256 KB, NULs and bare LFs throughout
        yield self.append_binary(c, HEAD + raw)
        lines = yield c.cmd("FETCH 1 (BINARY.SIZE[1] RFC822.SIZE)")
        self.assertIn(f"BINARY.SIZE[1] {len(raw)}", untagged(lines)[0])
        lines = yield c.cmd("FETCH 1 (BINARY.PEEK[1])")
        self.assertIn(b"~{%d}\r\n" % len(raw) + raw + b")", b"\r\n".join(lines))
        tmp = os.path.join(self.acc.maildir, "tmp")
        self.assertEqual(os.listdir(tmp), [])
