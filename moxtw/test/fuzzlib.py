"""A network fuzzer for moxtw's SMTP and IMAP servers (issue 10, item 8).

A grammar produces plausible SMTP sessions (EHLO, AUTH, MAIL/RCPT with parameters, DATA
with dot-stuffing and line-ending edge cases, BDAT chunks, pipelined bursts, ...) and IMAP
sessions (login, then the whole command set with sequence sets, FETCH attributes, SEARCH
programs, literals of all kinds, odd mailbox names, ...); a fraction of the commands is
then mutated (tokens deleted, duplicated, swapped or replaced by boundary integers or
unbalanced parentheses and quotes; bytes flipped; NUL, 8-bit and bare CR/LF inserted;
literal sizes that lie).  Every session comes from its own seed, so a finding names the
seed and the transcript, and ``bench/fuzz.py --replay SEED`` runs that session again.

The server is the real service tree in a separate process (``python -m
moxtw.test.fuzzlib serve DIR``, built with :mod:`moxtw.test.servertree`), on loopback
ports from ``free_offset``.  :func:`run` drives several client threads with blocking
sockets and timeouts for a budget of seconds and reports as findings:

- a reply containing ``SERVERBUG`` or ``internal error``;
- a hang: no reply within :data:`HANG_TIMEOUT` to a command whose framing is known (every
  command up to the first one whose effect on the framing is unknown, e.g. a literal size
  that lies), while a fresh connection still gets its greeting and NOOP answered; or the
  server as a whole not answering a fresh connection (then its Python stacks are dumped
  with faulthandler into its stderr);
- the server process exiting;
- lines in the server's log or stderr with ``level=critical``, ``Traceback``,
  ``SERVERBUG``, ``internal error`` or ``Unhandled``.

Clients connect from random addresses in 127/8 so the per-IP connection and
failed-login limits do not throttle the run.  Standard library only in the client; the
server child imports moxtw.
"""

import base64
import faulthandler
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HANG_TIMEOUT = 10.0  # seconds without a reply to a command that must get one
SOFT_TIMEOUT = 2.0  # seconds to wait for a reply to a command of unknown framing
STALL_LIMIT = 5.0  # seconds for a fresh connection's greeting; longer: the reactor stalled
WATCH_INTERVAL = 0.5  # seconds between the watchdog's greetings
PASSWORD = "fuzz password"
LOGIN = "mjl@example.org"

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
SMTPMaxMessageSize = 2000000
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.Submission]
Enabled = true
Port = {submission}
NoRequireSTARTTLS = true
[Listeners.main.IMAP]
Enabled = true
Port = {imap}
NoRequireSTARTTLS = true
"""

DYNAMIC = """
[Domains."example.org"]
LocalpartCatchallSeparator = "+"
[Domains."example.org".Aliases.team]
Addresses = ["mjl@example.org", "other@example.org"]
PostPublic = true
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
[Accounts.mjl.Destinations."@example.org"]
[Accounts.other]
Domain = "example.org"
QuotaMessageSize = 300000
[Accounts.other.Destinations."other@example.org"]
"""

# What in the server's log or stderr is a finding.
BAD_LOG = re.compile(r"level=critical|Traceback|SERVERBUG|internal error|Unhandled")
BAD_REPLY = re.compile(rb"SERVERBUG|internal error", re.I)

BOUNDARY_INTS = [b"0", b"1", b"-1", b"4294967295", b"4294967296", b"2147483648",
                 b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
                 b"99999999999999999999999999", b"00000001", b"+1", b"1e9", b"0x10"]


def session_seed(run_seed, n):
    """The seed of session n of the run with seed run_seed."""
    h = hashlib.sha256(f"{run_seed}:{n}".encode()).digest()
    return int.from_bytes(h[:6], "big")


# -- grammar helpers --------------------------------------------------------------------

class G:
    """Random choices for one session."""

    def __init__(self, rng):
        self.r = rng

    def pick(self, *opts):
        return self.r.choice(opts)

    def chance(self, p):
        return self.r.random() < p

    def odd(self, good, bad, p=0.08):
        """Mostly one of good, sometimes one of bad."""
        return self.r.choice(bad if self.r.random() < p else good)

    def num(self):
        r = self.r.random()
        if r < 0.6:
            return str(self.r.randint(1, 12)).encode()
        if r < 0.8:
            return str(self.r.randint(0, 2000)).encode()
        return self.r.choice(BOUNDARY_INTS)

    def word(self, n=None):
        n = n or self.r.randint(1, 10)
        return "".join(self.r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n)).encode()

    def text(self, n):
        alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:-_"
        return "".join(self.r.choice(alphabet) for _ in range(n)).encode()

    def weird_bytes(self, n):
        return bytes(self.r.choice(b"\x00\x01\x7f\x80\xc3\xa9\xff\r\n\t \"\\(){}*%[]<>.:=+") for _ in range(n))


def mutate_tokens(g, toks):
    """Token-level mutations of a command given as a list of byte strings."""
    toks = list(toks)
    for _ in range(g.r.randint(1, 3)):
        if not toks:
            toks.append(g.word())
        i = g.r.randrange(len(toks))
        op = g.r.randrange(9)
        if op == 0 and len(toks) > 1:
            del toks[i]
        elif op == 1:
            toks.insert(i, toks[i])
        elif op == 2 and len(toks) > 1:
            j = g.r.randrange(len(toks))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == 3:
            toks[i] = g.r.choice(BOUNDARY_INTS)
        elif op == 4:
            toks.insert(i, g.pick(b"(", b")", b"((", b"))", b'"', b"[", b"]", b"<", b">", b"\\", b"{", b"}"))
        elif op == 5:
            toks[i] = toks[i] * g.r.choice([2, 50, 1000])
        elif op == 6:
            toks[i] = b""
        elif op == 7:
            toks.insert(i, g.weird_bytes(g.r.randint(1, 8)))
        else:
            toks[i] = toks[i].lower() if g.chance(0.5) else toks[i].upper()
    return toks


def mutate_bytes(g, data):
    """Byte-level mutations of a whole line (which ends in CRLF)."""
    b = bytearray(data)
    for _ in range(g.r.randint(1, 3)):
        if not b:
            b += b"x"
        i = g.r.randrange(len(b))
        op = g.r.randrange(7)
        if op == 0:
            b[i] ^= 1 << g.r.randrange(8)
        elif op == 1:
            b.insert(i, 0)
        elif op == 2:
            b.insert(i, g.r.randrange(0x80, 0x100))
        elif op == 3:
            b[i:i] = g.pick(b"\r", b"\n", b"\r\n", b"\n.\n")
        elif op == 4:
            del b[i:i + g.r.randint(1, 5)]
        elif op == 5:
            b[i:i] = b[i:i + g.r.randint(1, 20)] * g.r.randint(2, 10)
        else:
            b = b[:i]  # truncated; the next line completes it
    return bytes(b)


# -- steps ------------------------------------------------------------------------------

@dataclass
class Step:
    """Bytes to send and what framing they have.

    SMTP: ``replies`` is the number of replies the step must get (0: none expected).
    IMAP: ``parts`` are sent one at a time, each after the previous got a "+"
    continuation; ``tags`` are the tags whose completion ends the step. ``known`` is
    False when the framing is unknown (mutated or deliberately wrong sizes)."""

    data: bytes = b""
    replies: int = 1
    parts: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    known: bool = True
    last: bool = False  # nothing sensible can follow (STARTTLS then garbage, COMPRESS)


# -- SMTP grammar -----------------------------------------------------------------------

def _b64(b):
    return base64.b64encode(b)


class SMTPGrammar:
    def __init__(self, g, submission):
        self.g = g
        self.submission = submission

    def address(self):
        g = self.g
        if g.chance(0.6):
            return g.pick(b"bob@example.net", b"mjl@example.org", b"other@example.org",
                          b"team@example.org", b"mjl+tag@example.org", b"x@example.com")
        return g.pick(
            b"bob@example.net", b"mjl@example.org", b"other@example.org", b"team@example.org",
            b"mjl+tag@example.org", b"nobody@example.org", b"x@example.com",
            "ñandú@example.org".encode(), "bob@exämple.net".encode(), b'"a b"@example.org',
            b'"a\\"b"@example.org', b"@a,@b:mjl@example.org", b"mjl@[127.0.0.1]",
            b"mjl@[IPv6:::1]", b"mjl@[300.1.1.1]", b"a." * 40 + b"@example.org",
            b"x" * g.r.choice([64, 65, 300]) + b"@example.org", b"mjl@" + b"a." * 130 + b"org",
            b"mjl@example.org.", b"mjl@@example.org", b"mjl", b"", b"<>", b"postmaster",
        )

    def path(self):
        g = self.g
        a = self.address()
        return g.pick(b"<" + a + b">", b"<" + a + b">", b"<" + a + b">", a, b"<" + a, b"<<" + a + b">>", b"<>")

    def mail_params(self):
        g = self.g
        out = []
        for _ in range(g.r.choice([0, 0, 1, 2, 3, 5])):
            out.append(g.odd(
                [b"SIZE=" + g.num(), b"BODY=8BITMIME", b"BODY=7BIT", b"BODY=BINARYMIME", b"SMTPUTF8",
                 b"REQUIRETLS", b"RET=FULL", b"RET=HDRS", b"ENVID=" + g.word(), b"ENVID=a+2Bb",
                 b"AUTH=<>", b"AUTH=mjl@example.org", b"HOLDFOR=" + g.num(),
                 b"HOLDUNTIL=2030-01-01T00:00:00Z"],
                [b"SIZE", b"SIZE=", b"BODY=bogus", b"SMTPUTF8=yes", b"RET=x", b"ENVID=a+ZZ",
                 b"ENVID=" + b"x" * 200, b"MT-PRIORITY=3", b"FUTURERELEASE",
                 b"X-" + g.word() + b"=" + g.word(), b"=", b"==", g.weird_bytes(4),
                 b"SIZE=" + b"9" * 1000, b"HOLDUNTIL=bogus", b"HOLDFOR=-1"], p=0.25,
            ))
        return out

    def rcpt_params(self):
        g = self.g
        out = []
        for _ in range(g.r.choice([0, 0, 1, 2])):
            out.append(g.odd(
                [b"NOTIFY=NEVER", b"NOTIFY=SUCCESS,FAILURE,DELAY", b"ORCPT=rfc822;mjl@example.org",
                 b"ORCPT=rfc822;a+2Bb@example.org", b"ORCPT=utf-8;\\x{00E9}@example.org"],
                [b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=", b"NOTIFY=bogus", b"ORCPT=x",
                 b"ORCPT=rfc822;+ZZ", b"X-" + g.word()], p=0.25,
            ))
        return out

    def cmd(self, *toks):
        return list(toks)

    def body(self):
        g = self.g
        lines = [b"From: bob@example.net", b"To: mjl@example.org",
                 b"Subject: " + g.text(g.r.randint(0, 40)),
                 b"Message-ID: <" + g.word() + b"@example.net>"]
        if g.chance(0.3):
            lines.append(b"MIME-Version: 1.0")
            lines.append(b'Content-Type: multipart/mixed; boundary="b1"')
            lines += [b"", b"--b1", b"Content-Type: text/plain", b"", b"part one", b"--b1",
                      b"Content-Transfer-Encoding: base64", b"", b"aGVsbG8=", b"--b1--"]
        else:
            lines.append(b"")
        for _ in range(g.r.randint(0, 12)):
            lines.append(g.pick(
                b"hello", b"..", b".", b". leading dot", b"..double", b"", g.text(70),
                b"x" * g.r.choice([998, 999, 1000, 5000, 100000]), "ünïcödé".encode(),
                b"\x80\xff\xfe 8-bit", b"nul\x00here", b"bare\nLF", b"bare\rCR", b"\n.\n",
                b"\r\n.\n", b"x\n.\r\n", b"x\r.\r\n", b".\r", b"From mjl", b"tab\there",
            ))
        return b"\r\n".join(lines) + b"\r\n"

    def session(self):
        g = self.g
        steps = [Step(b"", 1)]  # the greeting
        ehlo = g.r.random()
        if ehlo < 0.75:
            steps.append(self.line([b"EHLO", g.pick(b"client.example.net", b"[127.0.0.1]", b"[IPv6:::1]", b"x", g.word(), b"", "ñ.example".encode(), b"a" * 300)]))
        elif ehlo < 0.9:
            steps.append(self.line([b"HELO", g.pick(b"client.example.net", b"", g.word())]))
        authed = False
        if self.submission and g.chance(0.8):
            steps += self.auth()
            authed = True
        for _ in range(g.r.randint(1, 14)):
            r = g.r.random()
            if r < 0.45:
                steps += self.transaction(authed)
            elif r < 0.55:
                steps.append(self.burst(authed))
            elif r < 0.6 and self.submission:
                steps += self.auth()
            elif r < 0.62:
                steps.append(self.line([b"STARTTLS"]))
                steps.append(Step(g.pick(b"\x16\x03\x01\x00\x05hello", b"garbage\r\n", b"EHLO x\r\n"), 0, known=False, last=True))
                break
            else:
                steps.append(self.line(g.pick(
                    [b"RSET"], [b"NOOP"], [b"NOOP", g.word()], [b"VRFY", self.address()],
                    [b"EXPN", self.address()], [b"HELP"], [b"HELP", g.word()],
                    [g.word().upper()], [b""], [b"EHLO", g.word()], [b"MAIL"], [b"RCPT"],
                    [b"DATA", b"x"], [b"BDAT"], [b"BDAT", b"x"], [b"BDAT", b"-1"],
                    [b"MAIL", b"FROM:" + b"x" * 5000], [b"X" * 4097], [b"AUTH"],
                    [b"AUTH", g.word()], [b"QUIT", b"now"],
                )))
        if g.chance(0.7):
            steps.append(self.line([b"QUIT"]))
        return steps

    def line(self, toks, replies=1):
        """One command line, mutated sometimes."""
        g = self.g
        known = True
        if g.chance(0.1):
            toks = mutate_tokens(g, toks)
            known = False
        data = b" ".join(toks) + b"\r\n"
        if g.chance(0.05):
            data = mutate_bytes(g, data)
            known = False
        if g.chance(0.03):
            data = data[:-2] + g.pick(b"\n", b"\r", b"\r\r\n", b"\n\r")
            known = False
        return Step(data, replies, known=known)

    def auth(self):
        g = self.g
        good = g.chance(0.6)
        login = LOGIN.encode() if good or g.chance(0.5) else b"fuzz" + g.word(3) + b"@example.org"
        pw = PASSWORD.encode() if good else g.pick(b"wrong", b"", b"\x00" * 3, b"x" * 2000)
        plain = _b64(g.pick(b"", b"mjl@example.org") + b"\x00" + login + b"\x00" + pw)
        bad = g.pick(b"!!!", b"=", b"====", b"*", b"YQ", b"YWJj=ZGVm", _b64(b"\x00\x00\x00"),
                     _b64(b"no-nuls-here"), b"A" * 20000, b"\xff\xfe")
        kind = g.r.randrange(7)
        if kind == 0:
            return [self.line([b"AUTH", b"PLAIN", plain if good or g.chance(0.5) else bad])]
        if kind == 1:
            return [self.line([b"AUTH", b"PLAIN"]), self.line([plain if good else bad])]
        if kind == 2:
            return [self.line([b"AUTH", b"PLAIN", b"="]), self.line([plain])]
        if kind == 3:
            return [self.line([b"AUTH", b"LOGIN"]), self.line([_b64(login)]),
                    self.line([_b64(pw) if good else bad])]
        if kind == 4:
            return [self.line([b"AUTH", b"LOGIN", _b64(login)]), self.line([b"*"])]
        if kind == 5:
            return [self.line([b"AUTH", g.pick(b"CRAM-MD5", b"SCRAM-SHA-256", b"SCRAM-SHA-1", b"SCRAM-SHA-256-PLUS", b"XOAUTH2", b"GSSAPI")]),
                    self.line([g.pick(bad, _b64(b"n,,n=mjl@example.org,r=abc"), _b64(b"mjl deadbeef"), b"*")])]
        return [self.line([b"AUTH", b"PLAIN", plain]), self.line([b"AUTH", b"PLAIN", plain])]

    def transaction(self, authed):
        g = self.g
        steps = [self.line([b"MAIL", b"FROM:" + self.path()] + self.mail_params())]
        for _ in range(g.r.choice([0, 1, 1, 1, 2, 3])):
            to = self.path() if g.chance(0.4) else g.pick(b"<mjl@example.org>", b"<other@example.org>", b"<team@example.org>")
            if authed and g.chance(0.2):
                to = b"<remote@example.com>"
            steps.append(self.line([b"RCPT", b"TO:" + to] + self.rcpt_params()))
        if g.chance(0.6):
            steps.append(self.line([b"DATA"]))
            steps.append(Step(self.body() + b".\r\n", 1))
        elif g.chance(0.8):
            steps += self.bdat()
        if g.chance(0.2):
            steps.append(self.line([b"RSET"]))
        return steps

    def bdat(self):
        g = self.g
        msg = self.body()
        steps = []
        pos = 0
        while pos < len(msg):
            n = g.r.randint(1, max(1, len(msg) - pos))
            chunk = msg[pos:pos + n]
            pos += n
            last = pos >= len(msg)
            size = len(chunk)
            known = True
            r = g.r.random()
            if r < 0.05:
                size += g.r.randint(1, 10)  # size lie: the server waits for more
                known = False
            elif r < 0.1 and size > 1:
                size -= g.r.randint(1, size - 1)  # the rest is taken as commands
                known = False
            words = [b"BDAT", str(size).encode()] + ([b"LAST"] if last and g.chance(0.9) else [])
            if g.chance(0.03):
                words = [b"BDAT", g.pick(b"0", b"0 LAST", b"99999999999999999999", b"1 LAST LAST", b"1 FIRST")]
                known = False
            steps.append(Step(b" ".join(words) + b"\r\n" + chunk, 1, known=known))
        if g.chance(0.2):
            steps.append(Step(b"BDAT 0 LAST\r\n", 1))
        return steps

    def burst(self, authed):
        """A pipelined transaction (RFC 2920) in one write."""
        steps = self.transaction(authed)
        return Step(b"".join(s.data for s in steps), sum(s.replies for s in steps),
                    known=all(s.known for s in steps))


# -- IMAP grammar -----------------------------------------------------------------------

class IMAPGrammar:
    def __init__(self, g):
        self.g = g
        self.n = 0
        self.selected = False

    def tag(self):
        self.n += 1
        return b"t%d" % self.n

    def seqset(self):
        g = self.g
        r = g.r.random()
        if r < 0.5:
            return g.pick(b"1", b"*", b"1:*", b"2", b"1:3", b"3:1", b"*:1", b"1,3,5", b"2:4,6:*", b"$")
        if r < 0.8:
            parts = []
            for _ in range(g.r.randint(1, 5)):
                a = g.num()
                parts.append(a + b":" + g.pick(g.num(), b"*") if g.chance(0.5) else a)
            return b",".join(parts)
        return g.pick(b"0", b"0:*", b"-1", b"4294967295", b"4294967296", b"1:4294967295",
                      b"18446744073709551616", b"1:1:1", b",", b"1,", b":", b"*,*", b"$,1",
                      b",".join([b"%d" % i for i in range(1, 3000, 2)]),
                      b"1:" + b"9" * 40, b"a", b"")

    def astring(self, s):
        g = self.g
        r = g.r.random()
        if r < 0.5 and s and re.fullmatch(rb"[A-Za-z0-9./_&+-]+", s):
            return [s]
        if r < 0.85:
            return [b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"']
        return self.literal(s)

    def literal(self, s):
        """A literal as a list of parts: after each part but the last the server must
        send "+" (synchronizing) or nothing (LITERAL+)."""
        g = self.g
        if g.chance(0.5):
            return [b"{%d+}\r\n" % len(s) + s]  # LITERAL+ keeps the part together
        return [b"{%d}" % len(s), s]  # "{n}" CRLF, then wait for "+"

    def mailbox(self):
        g = self.g
        name = g.odd(
            [b"INBOX", b"INBOX", b"inbox", b"fz", b"fz", b"fz/a", b"fz/a/b", b"fz/" + g.word(1),
             b"Fz&AOQ-", "ñame".encode(), "fz/日本".encode(), b"Postmaster", b"Sent", b"Trash"],
            [b"&Jjo-", b"&Jjo", b"&-", b"&AGE-", b"..", b".", b"/", b"a//b", b"/lead", b"trail/",
             b"fz/" + b"x" * 300, b"%", b"*", b'q"uote', b"inbox/x", b"", b"fz\x7f", b"fz\x01",
             b"\xff\xfe", b"a" * 2000, b"fz/" + b"a/" * 60, b"fz/../INBOX", b"~/x", b"NIL"],
            p=0.3,
        )
        return self.astring(name)

    def flags(self):
        g = self.g
        fl = [g.odd([b"\\Seen", b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft",
                     b"$Forwarded", b"$Junk", b"$NotJunk", b"$MDNSent", b"kw" + g.word(1)],
                    [b"\\Recent", b"\\Bogus", b"\\*", b"x" * 500, b"a\x80b", b"(", b"NIL"])
              for _ in range(g.r.randint(0, 4))]
        return b"(" + b" ".join(fl) + b")"

    def section(self):
        g = self.g
        part = b".".join(g.odd([b"1", b"2", b"3"], [b"0", b"4294967296", b"-1", b"00"]) for _ in range(g.r.randint(1, 3)))
        s = g.odd([b"", b"HEADER", b"TEXT", part, part + b".MIME", part + b".HEADER", part + b".TEXT",
                   b"HEADER.FIELDS (Subject From)", b"HEADER.FIELDS.NOT (To Message-ID)",
                   part + b".HEADER.FIELDS (X)", b"HEADER.FIELDS (Subject Subject References)"],
                  [b"HEADER.FIELDS ()", b"MIME", b"BOGUS", b"1.", b".1", b"HEADER.FIELDS", b"HEADER.FIELDS (\x80)"])
        return b"[" + s + b"]"

    def partial(self):
        g = self.g
        if g.chance(0.7):
            return b""
        return b"<" + g.num() + b"." + g.num() + b">"

    def fetch_att(self):
        g = self.g
        r = g.r.random()
        if r < 0.4:
            return g.odd([b"FLAGS", b"UID", b"INTERNALDATE", b"RFC822", b"RFC822.SIZE",
                          b"RFC822.HEADER", b"RFC822.TEXT", b"ENVELOPE", b"BODY", b"BODYSTRUCTURE",
                          b"MODSEQ", b"PREVIEW", b"PREVIEW (LAZY)", b"SAVEDATE", b"RFC822.PEEK"],
                         [b"EMAILID", b"THREADID", b"X-GM-MSGID", b"BOGUS", b"BODY[", b"BINARY"])
        if r < 0.75:
            return g.pick(b"BODY", b"BODY.PEEK") + self.section() + self.partial()
        sec = b"[" + g.pick(b"", b"1", b"1.1", b"2", b"TEXT", b"0") + b"]"
        return g.pick(b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE") + sec + (self.partial() if g.chance(0.5) else b"")

    def fetch(self, uid):
        g = self.g
        r = g.r.random()
        if r < 0.15:
            atts = g.pick(b"ALL", b"FAST", b"FULL")
        elif r < 0.3:
            atts = self.fetch_att()
        else:
            atts = b"(" + b" ".join(self.fetch_att() for _ in range(g.r.randint(1, 6))) + b")"
        toks = ([b"UID"] if uid else []) + [b"FETCH", self.seqset(), atts]
        if g.chance(0.15):
            toks.append(g.pick(b"(CHANGEDSINCE " + g.num() + b")", b"(CHANGEDSINCE 1 VANISHED)",
                               b"(VANISHED)", b"(CHANGEDSINCE)", b"(BOGUS)"))
        return toks

    def date(self):
        g = self.g
        return g.odd([b"1-Jan-2020", b"31-Dec-1999", b"01-Jan-9999", b'"1-Jan-2020"', b"29-Feb-2024"],
                     [b"29-Feb-2021", b"1-Foo-2020", b"0-Jan-0", b"x", b"1-Jan-99999999999"])

    def search_key(self, depth):
        g = self.g
        if depth > 0 and g.chance(0.35):
            r = g.r.random()
            if r < 0.35:
                return b"NOT " + self.search_key(depth - 1)
            if r < 0.7:
                return b"OR " + self.search_key(depth - 1) + b" " + self.search_key(depth - 1)
            return b"(" + b" ".join(self.search_key(depth - 1) for _ in range(g.r.randint(1, 3))) + b")"
        s = b'"' + g.pick(b"hello", b"", b"x", "ü".encode(), b"a*b%c", b"\\\\") + b'"'
        return g.pick(
            b"ALL", b"ANSWERED", b"DELETED", b"DRAFT", b"FLAGGED", b"NEW", b"OLD", b"RECENT", b"SEEN",
            b"UNANSWERED", b"UNDELETED", b"UNDRAFT", b"UNFLAGGED", b"UNSEEN", b"BCC " + s, b"CC " + s,
            b"FROM " + s, b"TO " + s, b"SUBJECT " + s, b"BODY " + s, b"TEXT " + s,
            b"HEADER Subject " + s, b"HEADER " + g.word() + b" " + s, b"HEADER \"\" \"\"",
            b"KEYWORD $Junk", b"UNKEYWORD kw" + g.word(2), b"LARGER " + g.num(), b"SMALLER " + g.num(),
            b"BEFORE " + self.date(), b"ON " + self.date(), b"SINCE " + self.date(),
            b"SENTBEFORE " + self.date(), b"SENTON " + self.date(), b"SENTSINCE " + self.date(),
            b"UID " + self.seqset(), self.seqset(), b"MODSEQ " + g.num(),
            b'MODSEQ "/flags/\\\\draft" all ' + g.num(), b"OLDER " + g.num(), b"YOUNGER " + g.num(),
            b"SAVEDATESUPPORTED", b"SAVEDBEFORE " + self.date(), b"SAVEDSINCE " + self.date(),
            b"$", b"ALL", b"ALL",
        ) if g.chance(0.95) else g.pick(b"EMAILID M1", b"THREADID T1", b"BOGUS", b"()", b"NOT", b"OR ALL")

    def search_program(self):
        g = self.g
        depth = g.pick(1, 2, 3, 4, 6)
        keys = [self.search_key(depth) for _ in range(g.r.randint(1, 4))]
        if g.chance(0.02):
            k = g.r.choice([100, 1000, 5000])
            keys = [g.pick(b"NOT " * k + b"ALL", b"(" * k + b"ALL" + b")" * k, b"OR ALL " * k + b"ALL")]
        return keys

    def charset(self):
        g = self.g
        return [b"CHARSET", g.odd([b"UTF-8", b"US-ASCII"], [b"ISO-8859-1", b"X-BOGUS", b'""'])] if g.chance(0.2) else []

    def search(self, uid):
        g = self.g
        toks = ([b"UID"] if uid else []) + [b"SEARCH"]
        if g.chance(0.3):
            ret = [g.odd([b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE"], [b"PARTIAL 1:10", b"BOGUS", b"PARTIAL -1:-10"])
                   for _ in range(g.r.randint(0, 3))]
            toks += [b"RETURN", b"(" + b" ".join(ret) + b")"]
        return toks + self.charset() + self.search_program()

    def sort(self, uid):
        g = self.g
        crit = [(b"REVERSE " if g.chance(0.3) else b"") + g.odd(
            [b"ARRIVAL", b"CC", b"DATE", b"FROM", b"SIZE", b"SUBJECT", b"TO", b"DISPLAYFROM",
             b"DISPLAYTO"], [b"BOGUS", b"REVERSE"]) for _ in range(g.r.randint(1 if g.chance(0.95) else 0, 3))]
        toks = ([b"UID"] if uid else []) + [b"SORT"]
        if g.chance(0.2):
            toks += [b"RETURN", b"(" + g.pick(b"ALL", b"COUNT", b"MIN MAX") + b")"]
        return toks + [b"(" + b" ".join(crit) + b")", g.odd([b"UTF-8", b"US-ASCII"], [b"X-BOGUS"])] + self.search_program()

    def thread(self, uid):
        g = self.g
        return ([b"UID"] if uid else []) + [b"THREAD", g.odd([b"REFERENCES", b"ORDEREDSUBJECT"], [b"BOGUS"]),
                                            g.odd([b"UTF-8", b"US-ASCII"], [b"X-BOGUS"])] + self.search_program()

    def store(self, uid):
        g = self.g
        toks = ([b"UID"] if uid else []) + [b"STORE", self.seqset()]
        if g.chance(0.25):
            toks.append(b"(UNCHANGEDSINCE " + g.num() + b")")
        toks.append(g.odd([b"FLAGS", b"+FLAGS", b"-FLAGS", b"FLAGS.SILENT", b"+FLAGS.SILENT",
                           b"-FLAGS.SILENT"], [b"BOGUS", b"+FLAGS.", b"MODSEQ"]))
        toks.append(self.flags() if g.chance(0.9) else g.pick(b"\\Seen", b"$Junk"))
        return toks

    def message(self):
        g = self.g
        subj = g.text(g.r.randint(0, 30))
        body = [b"From: bob@example.net", b"To: mjl@example.org", b"Subject: " + subj,
                b"Date: Mon, 1 Jan 2024 00:00:00 +0000", b"Message-ID: <" + g.word() + b"@x>"]
        if g.chance(0.2):
            body.append(b"References: <a@x> <b@x>")
        if g.chance(0.4):
            body += [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="b"', b"",
                     b"--b", b"Content-Type: text/plain; charset=utf-8", b"", "tëxt".encode(),
                     b"--b", b"Content-Type: message/rfc822", b"", b"Subject: inner", b"", b"inner",
                     b"--b", b"Content-Transfer-Encoding: base64", b"", b"aGVsbG8gd29ybGQ=", b"--b--"]
        else:
            body += [b"", g.text(g.r.randint(0, 200))]
        if g.chance(0.05):
            body.append(b"\x00\x80binary")
        return b"\r\n".join(body) + b"\r\n"

    def append(self, cmd=b"APPEND"):
        """Parts for APPEND: synchronizing, non-synchronizing or literal8, sizes sometimes
        wrong."""
        g = self.g
        head = [cmd] + self.mailbox_inline()
        if g.chance(0.5):
            head.append(self.flags())
        if g.chance(0.3):
            head.append(g.pick(b'"01-Jan-2024 00:00:00 +0000"', b'"1-Jan-2024 00:00:00 +0000"', b'"bogus"'))
        msgs = [self.message() for _ in range(g.pick(1, 1, 1, 2, 3))]
        known = True
        parts = []
        line = b" ".join(head)
        for i, m in enumerate(msgs):
            size = len(m)
            r = g.r.random()
            if r < 0.04:
                size += g.r.randint(1, 100)
                known = False
            elif r < 0.08:
                size = max(0, size - g.r.randint(1, size))
                known = False
            elif r < 0.1:
                size = int(g.pick(b"4294967296", b"9223372036854775808", b"104857601"))
            if i:
                line += b" " + (self.flags() + b" " if g.chance(0.3) else b"")
            else:
                line += b" "
            eight = b"~" if g.chance(0.15) else b""
            if g.chance(0.5):
                line += eight + b"{%d+}\r\n" % size + m
            else:
                parts.append(line + eight + b"{%d}\r\n" % size)
                line = m
        parts.append(line + b"\r\n")
        return parts, known

    def mailbox_inline(self):
        """A mailbox name inside a command with parts; literals are LITERAL+ here."""
        toks = self.mailbox()
        if len(toks) == 2:
            return [b"{%d+}\r\n" % len(toks[1]) + toks[1]]
        return toks

    def command(self):
        """One command: (parts, known)."""
        g = self.g
        uid = g.chance(0.4)
        r = g.r.randrange(40)
        mb = self.mailbox
        known = True
        if r < 7:
            toks = self.fetch(uid)
        elif r < 10:
            toks = self.search(uid)
        elif r < 11:
            toks = self.sort(uid)
        elif r < 12:
            toks = self.thread(uid)
        elif r < 15:
            toks = self.store(uid)
        elif r < 16:
            toks = ([b"UID"] if uid else []) + [g.pick(b"COPY", b"MOVE"), self.seqset()] + mb()
        elif r < 18:
            return self.append(g.pick(b"APPEND", b"APPEND", b"APPEND", b"REPLACE " + self.seqset()))
        elif r < 20:
            toks = [g.pick(b"SELECT", b"EXAMINE")] + mb() + self.select_params()
        elif r < 22:
            toks = [b"CREATE"] + mb() + ([g.pick(b"(USE (\\Drafts))", b"(USE (\\Bogus))", b"(USE ())")] if g.chance(0.2) else [])
        elif r < 23:
            toks = [b"DELETE"] + mb()
        elif r < 24:
            toks = [b"RENAME"] + mb() + mb()
        elif r < 26:
            toks = self.list_cmd()
        elif r < 27:
            toks = [g.pick(b"SUBSCRIBE", b"UNSUBSCRIBE")] + mb()
        elif r < 29:
            items = [g.odd([b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN", b"DELETED", b"SIZE",
                            b"HIGHESTMODSEQ", b"RECENT", b"APPENDLIMIT"], [b"MAILBOXID", b"BOGUS"])
                     for _ in range(g.r.randint(0, 5))]
            toks = [b"STATUS"] + mb() + [b"(" + b" ".join(items) + b")"]
        elif r < 30:
            toks = [b"ENABLE"] + [g.odd([b"CONDSTORE", b"QRESYNC", b"UTF8=ACCEPT", b"IMAP4rev2"], [b"BOGUS", b"IMAP4rev1"]) for _ in range(g.r.randint(1, 3))]
        elif r < 31:
            return [b"IDLE\r\n", b"DONE\r\n"], True
        elif r < 32:
            toks = g.pick([b"NAMESPACE"], [b"ID", b"NIL"], [b"ID", b'("name" "fuzz" "version" "1")'],
                          [b"ID", b"(" + b'"k" "v" ' * 40 + b")"], [b"ID", b'("a")'], [b"CAPABILITY"],
                          [b"GETQUOTAROOT"] + mb(), [b"GETQUOTA", b'""'], [b"CHECK"], [b"NOOP"],
                          # CONTEXT (RFC 5267), MULTISEARCH (RFC 7377), METADATA (RFC 5464)
                          [b"SEARCH", b"RETURN", g.pick(b"(UPDATE)", b"(UPDATE COUNT)", b"(UPDATE PARTIAL 1:2)", b"(CONTEXT)"), b"ALL"],
                          [b"CANCELUPDATE", g.pick(b'"t1"', b'"x" "y"', b"t1", b"()", b"")],
                          [b"ESEARCH", b"IN", g.pick(b"(PERSONAL)", b"(SUBTREE fz)", b"(MAILBOXES (INBOX fz))",
                                                   b"(SELECTED INBOXES SUBSCRIBED)", b"(BOGUS)", b"(PERSONAL (DEPTH 1))", b"()"),
                           g.pick(b"ALL", b"RETURN (MIN MAX COUNT) ALL", b"1:*", b"UID $", b"SUBJECT x")],
                          [b"SETMETADATA"] + mb() + [g.pick(b'(/private/c "v")', b"(/shared/c NIL)", b'(/private/x/y {2+}\r\nab)',
                                                           b'(/bad "v")', b'(/private/c)', b"()", b'(/private/a "1" /private/a "2")')],
                          [b"GETMETADATA"] + [g.pick(b"", b"(DEPTH infinity)", b"(MAXSIZE 1)", b"(DEPTH 2)")] + mb() + [
                              g.pick(b"/private/c", b"(/private/c /shared/c)", b"()", b"/bad")],
                          [b"ENABLE", b"UIDONLY"],
                          # NOTIFY (RFC 5465)
                          [b"NOTIFY", g.pick(b"NONE", b"SET (selected (MessageNew (UID FLAGS BODY.PEEK[]) MessageExpunge FlagChange))",
                                             b"SET STATUS (personal (MessageNew MessageExpunge)) (subtree fz (MailboxName))",
                                             b"SET (selected-delayed (MessageNew MessageExpunge)) (inboxes NONE)",
                                             b"SET (subscribed (SubscriptionChange MailboxMetadataChange ServerMetadataChange))",
                                             b"SET (mailboxes (INBOX fz) (AnnotationChange))", b"SET (selected (MailboxName))",
                                             b"SET ((", b"SET (personal (MessageNew (BODY[", b"SET")],
                          # URLAUTH (RFC 4467), URLFETCH parameters (RFC 5524)
                          [b"GENURLAUTH", g.pick(b'"imap://mjl@example.org/INBOX/;uid=1;urlauth=anonymous"',
                                                 b'"imap://mjl@example.org/INBOX/;uid=1/;section=1;expire=2999-01-01T00:00:00Z;urlauth=user+mjl@example.org"',
                                                 b'"imap://x@elsewhere/INBOX/;uid=1;urlauth=authuser"', b'"/INBOX/;uid=1"',
                                                 b'"imap://mjl@example.org/fz/;uid=1;urlauth=bogus"', b"x"),
                           g.pick(b"INTERNAL", b"bogus", b"")],
                          [b"URLFETCH", g.pick(b'"imap://mjl@example.org/INBOX/;uid=1;urlauth=anonymous:internal:00"',
                                               b'("imap://mjl@example.org/INBOX/;uid=1;urlauth=authuser:internal:ab" BINARY BODYPARTSTRUCTURE)',
                                               b'("x" BODY BINARY)', b'("x" BOGUS)', b'("x"', b"()", b"x y z", b"NIL")],
                          [b"RESETKEY"] + g.pick([], mb(), mb() + [b"INTERNAL"], mb() + [b"BOGUS"]))
        elif r < 33:
            toks = g.pick([b"EXPUNGE"], [b"UID", b"EXPUNGE", self.seqset()], [b"CLOSE"], [b"UNSELECT"])
        elif r < 34:
            toks = g.pick([b"NOOP"], [b"LOGIN", b"a", b"b"], [b"UNAUTHENTICATE"], [b"AUTHENTICATE", b"PLAIN"],
                          [g.word().upper()], [b"UID", g.word().upper()], [b"UID"], [b""], [b"FETCH"],
                          [b"SEARCH"], [b"X" * 20000])
            if toks == [b"AUTHENTICATE", b"PLAIN"]:
                return [b"AUTHENTICATE PLAIN\r\n", g.pick(b"*", b"=", b"!!", _b64(b"\x00a\x00b")) + b"\r\n"], True
        elif r < 35:
            toks = [b"APPEND"] + mb() + [g.pick(b"{4294967296}", b"{99999999999999999999}", b"~{1+}", b"{-1}", b"{1", b"{}", b"{0}")]
            known = False
        elif r < 38:
            toks = self.fetch(uid)  # extra weight on FETCH
        else:
            toks = self.search(uid)
        return self.finish(toks, known)

    def select_params(self):
        g = self.g
        if not g.chance(0.3):
            return []
        return [g.pick(b"(CONDSTORE)", b"(QRESYNC (1 1))", b"(QRESYNC (" + g.num() + b" " + g.num() + b" " + self.seqset() + b"))",
                       b"(QRESYNC (1 1 1:* (1:3 1:3)))", b"(QRESYNC (0 0))", b"(QRESYNC ())", b"(BOGUS)", b"()")]

    def list_cmd(self):
        g = self.g
        pat = g.pick(b'"*"', b"%", b'"fz/*"', b'"*%*%*%*%*%*%*%*%*%a"', b'"' + b"*" * 200 + b'x"', b'""',
                     b'"INBOX"', b'"fz/%"', b'("*" "INBOX")', b'"&Jjo-*"', '"ñ*"'.encode(), b"x\\y",
                     # Mixed wildcards that do not merge, long and many patterns.
                     b'"' + b"*a%" * g.pick(3, 300, 340) + b'"',
                     b"(" + b" ".join(b'"*%s%%"' % g.word(1) for _ in range(g.pick(2, 100, 101))) + b")",
                     b"{%d+}\r\n" % 3000 + b"*x%" * 1000)
        ref = g.pick(b'""', b'""', b"fz", b'"fz/"', b'"/"', b"INBOX")
        if g.chance(0.3):
            return [g.pick(b"LSUB", b"LIST"), ref, pat]
        sel = g.pick(b"", b"(SUBSCRIBED)", b"(SPECIAL-USE)", b"(REMOTE RECURSIVEMATCH SUBSCRIBED)", b"(RECURSIVEMATCH)", b"(BOGUS)")
        ret = g.pick(b"", b"RETURN (CHILDREN)", b"RETURN (SUBSCRIBED SPECIAL-USE)",
                     b"RETURN (STATUS (MESSAGES UNSEEN SIZE))", b"RETURN (STATUS ())", b"RETURN ()")
        return [t for t in [b"LIST", sel, ref, pat, ret] if t]

    def finish(self, toks, known, mutate=True):
        """Command tokens (some may be literal parts lists) to parts, mutated sometimes."""
        g = self.g
        flat = []
        for t in toks:
            flat.append(t)
        if mutate and g.chance(0.1):
            # Mutate only the plain tokens; literal parts (bytes with CRLF inside) stay.
            flat = mutate_tokens(g, flat)
            known = False
        parts = []
        line = b""
        for t in flat:
            if isinstance(t, bytes) and re.fullmatch(rb"\{\d+\}", t):
                parts.append(line + t + b"\r\n")
                line = b""
                continue
            line += (b" " if line and not line.endswith(b"\n") else b"") + t
        line += b"\r\n"
        if mutate and g.chance(0.04):
            line = mutate_bytes(g, line)
            known = False
        parts.append(line)
        return parts, known

    def login(self):
        g = self.g
        good = g.chance(0.85)
        user = LOGIN.encode() if good or g.chance(0.3) else b"fuzz" + g.word(3)
        pw = PASSWORD.encode() if good else g.pick(b"wrong", b"", b"x" * 3000)
        r = g.r.random()
        if r < 0.5:
            return self.finish([b"LOGIN"] + self.astring(user) + self.astring(pw), True, mutate=not good)
        ir = _b64(b"\x00" + user + b"\x00" + pw)
        if r < 0.8:
            return self.finish([b"AUTHENTICATE", b"PLAIN", ir if good or g.chance(0.5) else b"!!"], True, mutate=not good)
        return [b"AUTHENTICATE PLAIN\r\n", ir + b"\r\n"], True

    def session(self):
        """Steps; each IMAP step is one command with its tag."""
        g = self.g
        steps = [Step(b"", 0, tags=[b"*greeting"])]

        def add(parts_known, last=False):
            parts, known = parts_known
            t = self.tag()
            parts = [t + b" " + parts[0]] + parts[1:]
            steps.append(Step(parts=parts, tags=[t], known=known, last=last))

        if g.chance(0.05):
            add(([b"STARTTLS\r\n"], True))
            steps.append(Step(parts=[g.pick(b"\x16\x03\x01\x00\x05hello", b"a LOGIN x y\r\n")], tags=[], known=False, last=True))
            return steps
        if g.chance(0.93):
            add(self.login())
        if g.chance(0.3):
            add(self.finish([b"ENABLE", g.pick(b"CONDSTORE", b"QRESYNC", b"UTF8=ACCEPT", b"IMAP4rev2", b"QRESYNC CONDSTORE")], True))
        if g.chance(0.3):
            add(self.append())
        if g.chance(0.85):
            add(self.finish([g.pick(b"SELECT", b"SELECT", b"EXAMINE"), g.pick(b"INBOX", b"INBOX", b"fz", b"fz/a")] + self.select_params(), True, mutate=False))
        for _ in range(g.r.randint(1, 30)):
            add(self.command())
        if g.chance(0.03):
            add(([b"COMPRESS DEFLATE\r\n"], True), last=True)
            steps.append(Step(parts=[b"garbage that is not deflate\r\n"], tags=[], known=False, last=True))
            return steps
        if g.chance(0.7):
            add(([b"LOGOUT\r\n"], True))
        return steps


def make_session(seed):
    """(kind, port name, steps) for a session seed."""
    rng = random.Random(seed)
    g = G(rng)
    r = rng.random()
    if r < 0.55:
        return "imap", "imap", IMAPGrammar(g).session()
    if r < 0.8:
        return "smtp", "smtp", SMTPGrammar(g, submission=False).session()
    return "smtp", "submission", SMTPGrammar(g, submission=True).session()


# -- clients ----------------------------------------------------------------------------

class Closed(Exception):
    pass


class Conn:
    """A blocking socket with a receive buffer and a transcript."""

    def __init__(self, port, source_ip, transcript):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT,
                                             source_address=(source_ip, 0))
        self.buf = b""
        self.t = transcript

    def send(self, data):
        self.t.append(("C", data))
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))
        except socket.timeout:
            raise Closed("send timed out (server not reading)")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _fill(conn, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    conn.sock.settimeout(left)
    try:
        data = conn.sock.recv(65536)
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError, OSError) as e:
        raise Closed(str(e))
    if not data:
        raise Closed("EOF")
    conn.buf += data
    return True


def read_line(conn, deadline):
    while b"\n" not in conn.buf:
        if not _fill(conn, deadline):
            return None
    i = conn.buf.index(b"\n") + 1
    out, conn.buf = conn.buf[:i], conn.buf[i:]
    return out


def read_bytes(conn, n, deadline):
    while len(conn.buf) < n:
        if not _fill(conn, deadline):
            return None
    out, conn.buf = conn.buf[:n], conn.buf[n:]
    return out


class Finding(Exception):
    pass


@dataclass
class Result:
    seed: int
    kind: str
    port: str
    source_ip: str = ""
    commands: int = 0
    replies: Counter = field(default_factory=Counter)
    findings: list = field(default_factory=list)  # (what, detail)
    transcript: list = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    suspect_hang: bool = False


def _note_bad(res, line):
    if BAD_REPLY.search(line):
        res.findings.append(("bad reply", line.decode("utf-8", "replace").strip()))


def run_smtp(conn, steps, res):
    strict = True  # False once the framing is no longer known
    for st in steps:
        if st.data:
            conn.send(st.data)
            res.commands += 1
        tight = strict and st.known
        deadline = time.monotonic() + (HANG_TIMEOUT if tight else SOFT_TIMEOUT)
        got = 0
        while got < st.replies:
            line = read_line(conn, deadline)
            if line is None:
                break
            conn.t.append(("S", line))
            _note_bad(res, line)
            if line[3:4] == b"-":
                continue
            got += 1
            res.replies[line[:1].decode("latin-1") + "xx"] += 1
            if line.startswith(b"354") and b"DATA\r\n" not in st.data.upper():
                strict = False  # a mutated line started a DATA
        if got < st.replies:
            if tight:
                res.suspect_hang = True
                raise Finding(f"no reply within {HANG_TIMEOUT:.0f}s (got {got} of {st.replies})")
            strict = False
        if not st.known:
            strict = False
        if st.last:
            break


LITERAL_AT_END = re.compile(rb"~?\{(\d+)\}\r?\n$")


def imap_response(conn, deadline, res):
    """One response (a line plus any literals it carries), or None on timeout."""
    line = read_line(conn, deadline)
    if line is None:
        return None
    whole = line
    while True:
        m = LITERAL_AT_END.search(line)
        if not m:
            break
        n = int(m.group(1))
        data = read_bytes(conn, n, deadline)
        if data is None:
            return None
        line = read_line(conn, deadline)
        if line is None:
            return None
        whole += b"<literal %d>" % n + line
    conn.t.append(("S", whole if len(whole) < 2000 else whole[:2000] + b"..."))
    _note_bad(res, whole)
    return whole


def run_imap(conn, steps, res):
    strict = True
    for st in steps:
        if st.tags == [b"*greeting"]:
            r = imap_response(conn, time.monotonic() + HANG_TIMEOUT, res)
            if r is None:
                res.suspect_hang = True
                raise Finding("no greeting")
            continue
        tag = st.tags[0] if st.tags else None
        timeout = HANG_TIMEOUT if strict and st.known else SOFT_TIMEOUT
        done = False
        for i, part in enumerate(st.parts):
            conn.send(part)
            if i == 0:
                res.commands += 1
            more = i < len(st.parts) - 1
            deadline = time.monotonic() + timeout
            while True:
                r = imap_response(conn, deadline, res)
                if r is None:
                    if strict and st.known:
                        res.suspect_hang = True
                        raise Finding(f"no {'continuation' if more else 'completion'} for {tag!r} within {HANG_TIMEOUT:.0f}s")
                    strict = False
                    done = True
                    break
                first = r.split(b" ", 1)[0]
                if first == b"+":
                    res.replies["+"] += 1
                    if more:
                        break  # send the next part
                    strict = False  # unexpected continuation
                    if tag is None:
                        done = True
                        break
                    continue
                if first == b"*":
                    res.replies["*"] += 1
                    if r.startswith(b"* BYE"):
                        pass  # the close follows
                    if r.startswith(b"* BAD") and not st.known:
                        done = True
                        break
                    continue
                # Tagged.
                parts = r.split(b" ", 2)
                res.replies[parts[1].decode("latin-1", "replace")[:8] if len(parts) > 1 else "?"] += 1
                if first == tag:
                    done = True
                    break
                if not st.known or not strict:
                    # A reply for a mutated tag or an earlier command.
                    strict = False
                    done = True
                    break
                strict = False
                done = True
                break
            if done:
                break
        if not st.known and not _framing_kept(st.parts):
            # A mutated command without a final CRLF runs into the next one, and a
            # mutated literal may swallow it: the next replies cannot be predicted.
            strict = False
        if st.last or tag is None:
            break


def _framing_kept(parts):
    return bool(parts) and parts[-1].endswith(b"\r\n") and not any(b"{" in p for p in parts)


# -- the server process -----------------------------------------------------------------

class Server:
    """moxtw in a child process on loopback, with its log in dir/server.log."""

    def __init__(self, d, python=None):
        self.dir = os.path.abspath(d)
        self.python = python or sys.executable
        self.proc = None
        self.ports = {}
        self._log_pos = {}

    def start(self, timeout=60):
        from moxtw.test import servertree
        from moxtw.test.test_localserve import free_offset

        off = free_offset()
        self.ports = {"smtp": 25 + off, "submission": 587 + off, "imap": 143 + off}
        servertree.write_config(self.dir, STATIC.format(**self.ports), DYNAMIC)
        self.log_path = os.path.join(self.dir, "server.log")
        self.err_path = os.path.join(self.dir, "server.stderr")
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [self.python, "-m", "moxtw.test.fuzzlib", "serve", self.dir],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=self.dir,
            )
        end = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError("server did not start")
            time.sleep(0.1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def probe(self, timeout=HANG_TIMEOUT):
        """None if fresh SMTP and IMAP connections get greetings and NOOP replies, else what failed."""
        for name, cmd, ok in (("smtp", b"NOOP\r\n", b"250"), ("imap", b"p NOOP\r\n", b"p OK")):
            try:
                ip = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
                s = socket.create_connection(("127.0.0.1", self.ports[name]), timeout=timeout, source_address=(ip, 0))
            except OSError as e:
                return f"{name}: cannot connect: {e}"
            try:
                f = s.makefile("rb")
                greeting = f.readline()
                if not greeting:
                    return f"{name}: no greeting"
                s.sendall(cmd)
                while True:
                    line = f.readline()
                    if not line:
                        return f"{name}: closed before NOOP reply"
                    if line.startswith(ok):
                        break
            except OSError as e:
                return f"{name}: {e}"
            finally:
                s.close()
        return None

    def dump_stacks(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(1)

    def scan_logs(self):
        """New bad lines (with continuation lines) from the log and stderr since the last scan."""
        out = []
        for path in (self.log_path, self.err_path):
            try:
                with open(path, "rb") as f:
                    f.seek(self._log_pos.get(path, 0))
                    data = f.read()
                    self._log_pos[path] = f.tell()
            except OSError:
                continue
            lines = data.decode("utf-8", "replace").splitlines()
            i = 0
            while i < len(lines):
                if BAD_LOG.search(lines[i]):
                    block = [lines[i]]
                    j = i + 1
                    while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].startswith("time=")) and path == self.log_path:
                        block.append(lines[j])
                        j += 1
                    if path == self.err_path:
                        while j < len(lines) and j < i + 60:
                            block.append(lines[j])
                            j += 1
                    out.append((os.path.basename(path), "\n".join(block)))
                    i = j
                else:
                    i += 1
        return out

    def tail(self, n=30):
        try:
            with open(self.err_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _serve(d):
    """The child: the service tree from the config in d, until SIGTERM."""
    errf = open(os.path.join(d, "server.stderr"), "a")
    faulthandler.enable(errf)
    faulthandler.register(signal.SIGUSR1, file=errf, all_threads=True)
    from twisted.internet import defer, reactor

    from moxtw import config as mconfig
    from moxtw import log as mlog
    from moxtw.test import servertree

    cfg = mconfig.load(d)
    logf = open(os.path.join(d, "server.log"), "a", buffering=1)
    mlog.start_logging(logf, mlog.LogConfig(default=cfg.static.LogLevel))

    class Cleanups:
        def addCleanup(self, f, *a):
            reactor.addSystemEventTrigger("before", "shutdown", f, *a)

    @defer.inlineCallbacks
    def go():
        root = yield servertree.start(Cleanups(), cfg)
        acc = yield root.store.open_account("mjl")
        yield acc.set_password(PASSWORD)
        with open(os.path.join(d, "ready"), "w") as f:
            f.write("ready\n")

    def failed(f):
        errf.write("startup failed\n" + f.getTraceback())
        errf.flush()
        reactor.stop()

    reactor.callWhenRunning(lambda: go().addErrback(failed))
    reactor.run()


def populate(server, n=40):
    """Mailboxes fz and fz/a and n messages in INBOX (and some in fz) so that FETCH, SEARCH,
    STORE, COPY and friends have something to work on."""
    g = G(random.Random(0))
    gram = IMAPGrammar(g)
    conn = Conn(server.ports["imap"], "127.0.0.1", [])
    res = Result(seed=0, kind="imap", port="imap")
    try:
        steps = [Step(b"", 0, tags=[b"*greeting"]),
                 Step(parts=[b"a LOGIN %s \"%s\"\r\n" % (LOGIN.encode(), PASSWORD.encode())], tags=[b"a"])]
        for name in (b"fz", b"fz/a"):
            steps.append(Step(parts=[b"c CREATE %s\r\n" % name], tags=[b"c"]))
        for i in range(n):
            m = gram.message()
            box = b"fz" if i % 4 == 3 else b"INBOX"
            flags = b"(\\Seen)" if i % 3 == 0 else b"()"
            steps.append(Step(parts=[b"p APPEND %s %s {%d+}\r\n" % (box, flags, len(m)) + m + b"\r\n"], tags=[b"p"]))
        steps.append(Step(parts=[b"z LOGOUT\r\n"], tags=[b"z"]))
        run_imap(conn, steps, res)
    except Closed:
        pass
    finally:
        conn.close()
    return res


# -- the run ----------------------------------------------------------------------------

def run_session(server, seed):
    kind, port, steps = make_session(seed)
    res = Result(seed=seed, kind=kind, port=port, started=time.time())
    rng = random.Random(seed ^ 0x5EED)
    res.source_ip = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    transcript = res.transcript
    try:
        conn = Conn(server.ports[port], res.source_ip, transcript)
    except OSError as e:
        res.findings.append(("connect failed", str(e)))
        res.suspect_hang = True
        res.ended = time.time()
        return res
    try:
        if kind == "smtp":
            run_smtp(conn, steps, res)
        else:
            run_imap(conn, steps, res)
    except Closed as e:
        transcript.append(("-", f"closed: {e}".encode()))
    except Finding as e:
        res.findings.append(("hang", str(e)))
    finally:
        conn.close()
        res.ended = time.time()
    if res.suspect_hang:
        # The server as a whole, or this connection?
        p = server.probe() if server.alive() else "server process exited"
        if p is None:
            res.findings[-1:] = [("hang", res.findings[-1][1] + " (fresh connections are answered: this connection is stuck)")]
        else:
            res.findings[-1:] = [("hang", res.findings[-1][1] + f" (fresh connection: {p})")]
    return res


@dataclass
class Report:
    seed: int
    seconds: float = 0.0
    sessions: int = 0
    commands: int = 0
    replies: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    findings: list = field(default_factory=list)  # dicts

    def ok(self):
        return not self.findings

    def summary(self):
        rep = " ".join(f"{k}={v}" for k, v in sorted(self.replies.items()))
        kinds = " ".join(f"{k}={v}" for k, v in sorted(self.by_kind.items()))
        return (f"seed={self.seed} seconds={self.seconds:.0f} sessions={self.sessions} ({kinds}) "
                f"commands={self.commands} replies: {rep} findings={len(self.findings)}")

    def format_findings(self, max_transcript=60):
        out = []
        for f in self.findings:
            out.append(f"== {f['what']}: {f['detail']}")
            for s in f.get("sessions", []):
                out.append(f"   session seed={s.seed} ({s.kind} on {s.port} from {s.source_ip}); "
                           f"replay: bench/fuzz.py --replay {s.seed}")
                out.append(format_transcript(s.transcript, max_transcript))
        return "\n".join(out)


def format_transcript(t, max_entries=60):
    lines = []
    if len(t) > max_entries:
        lines.append(f"      ... {len(t) - max_entries} earlier entries")
        t = t[-max_entries:]
    for who, data in t:
        shown = data if len(data) <= 400 else data[:300] + b"...(%d bytes)..." % len(data) + data[-60:]
        lines.append(f"      {who}: {shown!r}")
    return "\n".join(lines)


def run(server, seconds, seed, sessions=4, progress=None, replay=None):
    """Fuzz the running server for seconds with concurrent sessions; a Report."""
    report = Report(seed=seed)
    pop = populate(server)
    report.findings += [{"what": w, "detail": d, "sessions": [pop], "key": (w, d), "count": 1}
                        for w, d in pop.findings]
    lock = threading.Lock()
    recent = []  # finished sessions, for attributing log lines (start, end, Result)
    counter = [0]
    stop = threading.Event()
    start = time.monotonic()
    end = start + seconds
    seen_details = set()

    def add_finding(what, detail, sess):
        key = (what, re.sub(r"\d+", "N", detail)[:200])
        with lock:
            if key in seen_details:
                for f in report.findings:
                    if f["key"] == key:
                        f["count"] += 1
                return
            seen_details.add(key)
            report.findings.append({"what": what, "detail": detail, "sessions": sess, "key": key, "count": 1})

    def worker():
        while not stop.is_set() and time.monotonic() < end:
            with lock:
                n = counter[0]
                counter[0] += 1
            s = session_seed(seed, n) if replay is None else replay
            res = run_session(server, s)
            with lock:
                report.sessions += 1
                report.commands += res.commands
                report.replies.update(res.replies)
                report.by_kind[res.port] += 1
                recent.append(res)
                if len(recent) > 400:
                    del recent[:100]
            for what, detail in res.findings:
                add_finding(what, detail, [res])
            if not server.alive():
                add_finding("crash", f"server exited with {server.proc.returncode}:\n{server.tail()}", [res])
                stop.set()
            if any(w == "hang" and "fresh connection:" in d for w, d in res.findings):
                server.dump_stacks()
                stop.set()
            if replay is not None:
                stop.set()

    def scan():
        for where, block in server.scan_logs():
            m = re.search(r"time=(\S+)", block)
            sess = []
            if m:
                try:
                    import datetime
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=datetime.timezone.utc).timestamp()
                    with lock:
                        sess = [r for r in recent if r.started - 1 <= t <= r.ended + 1][:4]
                except ValueError:
                    pass
            add_finding(f"log ({where})", block, sess)

    def watchdog():
        # A fresh connection is greeted at once unless the server's reactor is stuck
        # (a command running on it too long): the sessions running then are suspects.
        while not stop.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", server.ports["imap"]),
                                              timeout=HANG_TIMEOUT) as sock:
                    sock.recv(100)
            except OSError:
                pass  # a hang is reported by the probe and the sessions
            took = time.monotonic() - t0
            if took > STALL_LIMIT:
                with lock:
                    sess = [r for r in recent if r.ended >= time.time() - took - 1][-4:]
                add_finding("stall", f"a fresh IMAP connection was greeted after {took:.1f} s", sess)
            stop.wait(WATCH_INTERVAL)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, sessions if replay is None else 1))]
    if replay is None:
        threading.Thread(target=watchdog, daemon=True).start()
    for th in threads:
        th.start()
    last = 0
    while any(th.is_alive() for th in threads):
        time.sleep(0.5)
        if time.monotonic() - last > 2:
            scan()
            last = time.monotonic()
            if progress:
                with lock:
                    progress(f"{time.monotonic() - start:.0f}s sessions={report.sessions} commands={report.commands} findings={len(report.findings)}")
        if time.monotonic() > end + 4 * HANG_TIMEOUT:
            add_finding("hang", "client sessions did not finish after the budget", [])
            break
    stop.set()
    for th in threads:
        th.join(5)
    time.sleep(0.5)
    if not server.alive():
        add_finding("crash", f"server exited with {server.proc.returncode}:\n{server.tail()}", [])
    else:
        p = server.probe()
        if p:
            server.dump_stacks()
            add_finding("hang", f"server does not answer after the run: {p}", [])
    scan()
    report.seconds = time.monotonic() - start
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        _serve(sys.argv[2])
    else:
        sys.exit("usage: python -m moxtw.test.fuzzlib serve DIR")
