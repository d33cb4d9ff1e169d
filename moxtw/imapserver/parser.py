"""IMAP command parser: one complete command (with its literals) to a ``Command``.

Implements the client side of the formal syntax of RFC 9051 section 9 (IMAP4rev2) with
RFC 3501 (IMAP4rev1) compatibility, and the command syntax of the extensions moxtw
announces: LITERAL+/LITERAL- (RFC 7888), BINARY (RFC 3516), SASL-IR (RFC 4959), ENABLE
(RFC 5161), CONDSTORE/QRESYNC (RFC 7162), LIST-EXTENDED (RFC 5258), LIST-STATUS
(RFC 5819), SPECIAL-USE/CREATE-SPECIAL-USE (RFC 6154), MULTIAPPEND (RFC 3502), UTF8=ACCEPT
(RFC 6855), ESEARCH (RFC 4731), SEARCHRES (RFC 5182), WITHIN (RFC 5032), SAVEDATE
(RFC 8514), REPLACE (RFC 8508), ID (RFC 2971), SORT/THREAD (RFC 5256), ESORT (RFC 5267),
QUOTA (RFC 9208), COMPRESS (RFC 4978), PREVIEW (RFC 8970).

The framing layer reads a command line by line; ``literal_at_end`` tells it whether a
line announces a literal, and it passes the complete command (lines and literal data
verbatim) to ``parse_command``. Any malformed input raises ``ParseError`` and nothing
else; the session answers ``tag BAD text`` (or ``* BAD text`` without a tag).
"""

import base64
import binascii
import re
from datetime import date, datetime, timedelta, timezone

from twisted.mail import imap4

from moxtw.imapserver.types import STAR, Command, FetchAtt, SearchKey, SearchProgram, Section, SeqSet

MAX_LITERAL = 0xFFFFFFFF  # RFC 9051 9: number (32 bits); larger literal sizes are refused
MAX_NUMBER = 0xFFFFFFFF  # RFC 9051 9: number / nz-number
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 9: number64 (and RFC 7162 mod-sequence-value)
MAX_PAREN_DEPTH = 20  # nested parenthesised lists (SEARCH) beyond this are refused
MAX_SEARCH_DEPTH = 100  # nested NOT/OR/parentheses in one search program (search.MAX_DEPTH)
MAX_ERROR_TEXT = 200  # error texts echoing client input are cut to this length
MAX_ID_PARAMS = 30  # RFC 2971 3.3: at most 30 field-value pairs

_CTL = set(range(0x00, 0x20)) | {0x7F}
# RFC 9051 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
# quoted-specials / resp-specials
_ATOM_SPECIALS = set(b'(){ %*"\\]') | _CTL
ATOM_CHAR = frozenset(set(range(0x01, 0x80)) - _ATOM_SPECIALS)
ASTRING_CHAR = ATOM_CHAR | {ord("]")}  # ASTRING-CHAR = ATOM-CHAR / resp-specials
TAG_CHAR = ASTRING_CHAR - {ord("+")}  # tag = 1*<any ASTRING-CHAR except "+">
LIST_CHAR = ATOM_CHAR | set(b"%*]")  # list-char = ATOM-CHAR / list-wildcards / resp-specials
_DIGITS = frozenset(b"0123456789")
_BASE64_MUTF7 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.upper(): i + 1 for i, m in enumerate(MONTHS)}

SYSTEM_FLAGS = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}

STATUS_ITEMS = frozenset(
    ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT")
)
SEARCH_CHARSETS = {"US-ASCII": "US-ASCII", "UTF-8": "UTF-8", "UTF8": "UTF-8"}
MAX_CATENATE_PARTS = 1000  # URL and TEXT parts in one CATENATE (RFC 4469)
MAX_URLFETCH = 100  # URLs in one URLFETCH or GENURLAUTH (RFC 4467)
# RFC 4731 3.1, RFC 5182 2.1, RFC 9394 3.1
# UPDATE and CONTEXT: RFC 5267 4.2 and 4.3 (CONTEXT is a hint and is not kept).
SEARCH_RETURN_OPTS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT")
# RFC 7377 2.1, 4
ESEARCH_RETURN_OPTS = ("MIN", "MAX", "ALL", "COUNT", "PARTIAL")
SEARCH_FILTERS_PLAIN = frozenset(("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED"))
SEARCH_FILTERS_NAMED = frozenset(("SUBTREE", "SUBTREE-ONE", "MAILBOXES"))
# RFC 5465 8: the events of NOTIFY, by upper-case name. AnnotationChange (RFC 5465 5.5,
# message annotations) is known but not supported: NO [BADEVENT].
NOTIFY_EVENTS = {e.upper(): e for e in (
    "MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
    "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")}
NOTIFY_SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange",
                    "MailboxMetadataChange", "ServerMetadataChange")
MAX_NOTIFY_GROUPS = 100
MAX_SEARCH_MAILBOXES = 1000  # filters and named mailboxes in one ESEARCH
MAX_METADATA_ENTRY = 1024  # characters of a METADATA entry name
MAX_METADATA_ITEMS = 1000  # entries in one GETMETADATA or SETMETADATA
_PARTIAL_RANGE = re.compile(r"^(-?)([1-9][0-9]{0,9}):(-?)([1-9][0-9]{0,9})$")


def _partial_range(text, parser):
    """partial-range = nz-number ":" nz-number / "-" nz-number ":" "-" nz-number
    (RFC 9394 3.1), as (lo, hi) with the smaller magnitude first: "4:2" is 2:4."""
    m = _PARTIAL_RANGE.match(text or "")
    if m is None or m.group(1) != m.group(3):
        parser.error(f"bad PARTIAL range {text!r}")
    a, b = int(m.group(2)), int(m.group(4))
    if max(a, b) > 0xFFFFFFFF:
        parser.error("PARTIAL range above 4294967295")
    a, b = min(a, b), max(a, b)
    return (-a, -b) if m.group(1) else (a, b)
SORT_KEYS = frozenset(("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"))
THREAD_ALGORITHMS = frozenset(("REFERENCES", "ORDEREDSUBJECT"))
LIST_SELECT_OPTS = frozenset(("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"))
LIST_RETURN_OPTS = frozenset(("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS", "METADATA"))

# FETCH macros, RFC 9051 6.4.5.
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
FETCH_SIMPLE = frozenset(
    (
        "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "RFC822.SIZE",
        "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "PREVIEW", "SAVEDATE",
    )
)

# Search keys without arguments (RFC 9051 6.4.4; NEW, OLD, RECENT from RFC 3501 6.4.4;
# SAVEDATESUPPORTED from RFC 8514 4.3).
SEARCH_FLAG_KEYS = frozenset(
    (
        "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT",
        "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT", "SAVEDATESUPPORTED",
    )
)
SEARCH_STRING_KEYS = frozenset(("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"))
SEARCH_DATE_KEYS = frozenset(
    ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE")
)
SEARCH_ARG_KEYS = (
    SEARCH_STRING_KEYS | SEARCH_DATE_KEYS
    | {"KEYWORD", "UNKEYWORD", "HEADER", "LARGER", "SMALLER", "OLDER", "YOUNGER", "UID", "MODSEQ"}
)


class ParseError(Exception):
    """A malformed command. ``tag`` is the command's tag when it could be read (else
    None, answer with ``* BAD``); ``text`` the reason for the BAD response; ``code`` an
    optional response code such as "BADCHARSET". With ``no``, the command is well-formed
    but names something that cannot exist (a mailbox name that is not modified UTF-7):
    the answer is NO, not BAD."""

    def __init__(self, tag, text, code=None, no=False):
        super().__init__(text)
        self.tag = tag
        self.text = text
        self.code = code
        self.no = no

    def __repr__(self):
        return f"ParseError({self.tag!r}, {self.text!r}, {self.code!r})"


def literal_at_end(line):
    """Whether ``line`` (a received line ending in CRLF) ends with a literal header.

    Returns None, or ``(size, sync, binary)``: ``sync`` is true for a synchronizing
    literal ``{n}`` (send "+ " before reading it), false for ``{n+}`` (RFC 7888);
    ``binary`` for a literal8 ``~{n}`` (RFC 3516). Raises ParseError for a malformed
    header or a size over 2**32-1. The framing layer enforces its own size limits (and
    the 4096-octet limit of LITERAL-, RFC 7888 4).
    """
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None  # "}" is an ATOM-CHAR: e.g. "SUBJECT x}"
    inner = line[start + 1 : -1]
    if any(c not in b"0123456789+-" for c in inner):
        return None  # not a literal header, e.g. a "{" inside a quoted string
    sync = True
    if inner.endswith(b"+"):
        sync = False
        inner = inner[:-1]
    # RFC 9051 9: literal = "{" number64 ["+"] "}" CRLF; no other forms.
    if not inner or any(c not in _DIGITS for c in inner):
        raise ParseError(None, "malformed literal header")
    if len(inner) > 20 or int(inner) > MAX_LITERAL:
        raise ParseError(None, "literal size too large")
    binary = start > 0 and line[start - 1 : start] == b"~"
    return int(inner), sync, binary


def tag_of(data):
    """The tag at the start of a command line, or None: for replies the framing layer
    makes before the command is complete (e.g. a literal that is too large)."""
    end = 0
    while end < len(data) and data[end] in TAG_CHAR:
        end += 1
    if end == 0 or data[end : end + 1] != b" ":
        return None
    return data[:end].decode("ascii")


def parse_command(data, *, utf8=False, spooled=None):
    """Parse one complete command (``data`` ends with CRLF, literals embedded as received).

    ``utf8``: UTF8=ACCEPT is enabled (RFC 6855): mailbox names are UTF-8, not modified
    UTF-7. ``spooled``: {offset: spool} for literals the framing layer wrote to a file
    instead of into ``data``: the literal header is in ``data``, its bytes are not, and
    the message of APPEND/REPLACE is the spool object; anywhere else such a literal is
    refused. Raises ParseError, and only ParseError, for malformed input.
    """
    try:
        return _parse_command(data, utf8, spooled or {})
    except ParseError:
        raise
    except Exception as e:  # pragma: no cover - defensive; the fuzz tests look for these
        raise ParseError(tag_of(data), f"could not parse command ({type(e).__name__})") from e


def parse_section(text):
    """A section-spec as in ``BODY[...]`` (RFC 9051 9), e.g. "1.2.HEADER"; for the
    ;SECTION= of IMAP URLs (RFC 5092). Raises ParseError."""
    p = _Parser(b"[" + text.encode("utf-8") + b"]\r\n", True)
    section = p.section()
    if p.pos != p.end:
        p.error("trailing characters after section")
    return section


def _parse_command(data, utf8, spooled=None):
    return _Parser(data, utf8, spooled).command()


class _Parser:
    """Recursive-descent parser over the bytes of one command. ``end`` is the offset of
    the final CRLF: nothing is read at or past it except by ``at_end``."""

    def __init__(self, data, utf8, spooled=None):
        self.data = bytes(data)
        self.utf8 = utf8
        self.spooled = spooled or {}
        self.pos = 0
        self.tag = None
        self.end = len(self.data) - 2
        self.uid = False

    # Errors and low-level access.

    def error(self, text, code=None):
        # The text goes into the BAD response line: printable ASCII only, kept short,
        # whatever of the client's input it echoes.
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in text[:MAX_ERROR_TEXT])
        raise ParseError(self.tag, text, code)

    def peek(self):
        """The next byte as int, or None at the end of the command."""
        if self.pos < self.end:
            return self.data[self.pos]
        return None

    def peek_bytes(self, s):
        """Whether the command continues with ``s`` (ASCII, case-insensitive)."""
        n = len(s)
        if self.pos + n > self.end:
            return False
        return self.data[self.pos : self.pos + n].upper() == s.upper()

    def take(self, s):
        """Consume ``s`` (case-insensitive) if it comes next."""
        if self.peek_bytes(s):
            self.pos += len(s)
            return True
        return False

    def found(self):
        """A short description of what is at the current position, for error texts."""
        if self.pos >= self.end:
            return "end of command"
        c = self.data[self.pos]
        if 0x21 <= c < 0x7F:
            return repr(chr(c))
        return f"byte 0x{c:02x}"

    def expect(self, s, what=None):
        if not self.take(s):
            self.error(f"expected {what or repr(s.decode())}, found {self.found()}")

    def sp(self):
        """A single space (RFC 9051 9: SP)."""
        if self.pos < self.end and self.data[self.pos] == 0x20:
            self.pos += 1
            return
        if self.pos >= self.end:
            self.error("missing arguments")
        self.error(f"expected space, found {self.found()}")

    def at_end(self):
        return self.pos == self.end

    def close_or_sp(self):
        """After a list item: consume ")" (returns True) or the SP before the next item."""
        if self.take(b")"):
            return True
        if self.pos >= self.end:
            self.error("unbalanced parentheses: missing ')'")
        self.sp()
        return False

    def expect_end(self):
        if self.pos == self.end:
            return
        if self.pos < self.end and self.data[self.pos] == 0x20:
            self.error("unexpected arguments at end of command")
        self.error(f"expected end of command, found {self.found()}")

    def scan(self, chars):
        """Consume and return the longest run of bytes in ``chars``."""
        start = self.pos
        data, end = self.data, self.end
        pos = start
        while pos < end and data[pos] in chars:
            pos += 1
        self.pos = pos
        return data[start:pos]

    # Command structure.

    def command(self):
        if not self.data.endswith(b"\r\n"):
            # The framing layer always passes a CRLF; without it the command is truncated.
            self.end = len(self.data)
            self.tag = tag_of(self.data)
            self.error("truncated command: missing CRLF")
        tag = self.scan(TAG_CHAR)
        if not tag:
            self.error("missing or invalid tag")
        if self.peek() != 0x20:
            if self.at_end():
                self.tag = tag.decode("ascii")
                self.error("missing command")
            self.error(f"invalid character in tag: {self.found()}")
        self.tag = tag.decode("ascii")
        self.pos += 1
        name = self.scan(ATOM_CHAR).decode("ascii").upper()
        if not name:
            self.error("missing command")
        if name == "UID":
            self.sp()
            name = self.scan(ATOM_CHAR).decode("ascii").upper()
            if name not in _UID_COMMANDS:
                self.error(f"unknown UID command {name!r}" if name else "missing command after UID")
            self.uid = True
        handler = _COMMANDS.get(name)
        if handler is None:
            self.error("unknown command")
        args = handler(self)
        self.expect_end()
        return Command(tag=self.tag, name=name, uid=self.uid, args=args)

    # Strings (RFC 9051 9: string, astring, nstring, literal, quoted).

    def literal(self, binary_ok=False, spool_ok=False):
        """literal / literal8 (RFC 3516) at the current position: the raw bytes (or, with
        ``spool_ok``, the spool of a spooled literal) and whether it was a literal8."""
        binary = self.take(b"~")
        if binary and not binary_ok:
            self.error("binary literal (~{n}) not allowed here")
        self.expect(b"{", "literal")
        digits = self.scan(_DIGITS)
        self.take(b"+")  # RFC 7888: non-synchronizing literal; the framing layer handled it
        if not digits or not self.take(b"}"):
            self.error("malformed literal header")
        if len(digits) > 20 or int(digits) > MAX_LITERAL:
            self.error("literal size too large")
        size = int(digits)
        if self.data[self.pos : self.pos + 2] != b"\r\n":
            self.error("expected CRLF after literal header")
        start = self.pos + 2
        spool = self.spooled.get(start)
        if spool is not None:
            if not spool_ok:
                self.error("literal too large here")
            if spool.size != size:
                self.error("spooled literal size mismatch")  # cannot happen: framing bug
            self.pos = start
            return spool, binary
        if start + size > self.end:
            self.error("truncated literal")
        self.pos = start + size
        return self.data[start : self.pos], binary

    def quoted(self):
        """quoted: DQUOTE *QUOTED-CHAR DQUOTE; only \\\\ and \\" escapes; UTF-8 allowed."""
        self.expect(b'"', "quoted string")
        out = bytearray()
        data, end = self.data, self.end
        pos = self.pos
        while True:
            if pos >= end:
                self.pos = pos
                self.error("unterminated quoted string")
            c = data[pos]
            if c == 0x22:
                self.pos = pos + 1
                return bytes(out)
            if c == 0x5C:
                if pos + 1 < end and data[pos + 1] in (0x22, 0x5C):
                    out.append(data[pos + 1])
                    pos += 2
                    continue
                self.pos = pos
                self.error("invalid escape in quoted string")
            if c in (0x00, 0x0D, 0x0A):  # TEXT-CHAR excludes CR and LF; CHAR excludes NUL
                self.pos = pos
                self.error("invalid character in quoted string")
            out.append(c)
            pos += 1

    def string(self):
        """string = quoted / literal, as bytes."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()[0]
        if self.peek_bytes(b"~{"):
            self.literal()  # raises: binary literals only in APPEND
        self.error(f"expected string, found {self.found()}")

    def astring_bytes(self, chars=ASTRING_CHAR, what="string"):
        """astring = 1*ASTRING-CHAR / string (or list-mailbox with LIST_CHAR)."""
        c = self.peek()
        if c in (0x22, 0x7B) or self.peek_bytes(b"~{"):
            return self.string()
        s = self.scan(chars)
        if not s:
            self.error(f"expected {what}, found {self.found()}")
        return s

    def text(self, raw, what="string"):
        """Bytes of a string argument as str: UTF-8, no NUL (RFC 9051 9: CHAR8)."""
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.error(f"invalid UTF-8 in {what}")
        if "\x00" in s:
            self.error(f"NUL byte in {what}")
        return s

    def astring(self, what="string"):
        return self.text(self.astring_bytes(what=what), what)

    def nstring(self):
        if self.take_word(b"NIL"):
            return None
        return self.text(self.string())

    def take_word(self, word):
        """Consume the atom ``word`` (case-insensitive) if it comes next, whole."""
        n = len(word)
        if self.peek_bytes(word):
            after = self.data[self.pos + n] if self.pos + n < self.end else None
            if after is None or after not in ATOM_CHAR:
                self.pos += n
                return True
        return False

    def atom(self, what="atom"):
        s = self.scan(ATOM_CHAR)
        if not s:
            self.error(f"expected {what}, found {self.found()}")
        return s.decode("ascii")

    # Mailbox names.

    def mailbox(self):
        """mailbox = "INBOX" / astring; modified UTF-7 unless UTF8=ACCEPT (RFC 6855 3)."""
        return self.mailbox_text(self.astring_bytes(what="mailbox name"))

    def list_mailbox(self):
        """list-mailbox = 1*list-char / string: a LIST pattern with % and * wildcards.
        None for a pattern that is not modified UTF-7: it matches no mailbox."""
        raw = self.astring_bytes(LIST_CHAR, "mailbox pattern")
        try:
            return self.mailbox_text(raw)
        except ParseError as e:
            if e.no:
                return None
            raise

    def mailbox_text(self, raw):
        if self.utf8 or any(c >= 0x80 for c in raw):
            # UTF-8 names: RFC 6855 3; also accepted from IMAP4rev1 clients that send
            # raw UTF-8 without enabling it (mUTF-7 is 7-bit, so there is no ambiguity).
            return self.text(raw, "mailbox name")
        name = _decode_mutf7(raw)
        if name is None:
            # Syntactically an astring, so not BAD: no mailbox has this name (SELECT,
            # STATUS...) and none can be created with it; NO, as Dovecot answers.
            raise ParseError(self.tag, "invalid modified UTF-7 in mailbox name", "CANNOT", no=True)
        if "\x00" in name:
            self.error("NUL byte in mailbox name")
        return name

    # Numbers.

    def number(self, what="number", limit=MAX_NUMBER, nonzero=False):
        digits = self.scan(_DIGITS)
        if not digits:
            self.error(f"expected {what}, found {self.found()}")
        if len(digits) > 20 or int(digits) > limit:
            self.error(f"{what} too large")
        n = int(digits)
        if nonzero and n == 0:
            self.error(f"{what} must not be zero")
        return n

    def nz_number(self, what="number"):
        return self.number(what, nonzero=True)

    def number64(self, what="number"):
        return self.number(what, MAX_NUMBER64)

    def modseq(self, what="mod-sequence"):
        # RFC 7162 7: mod-sequence-value (and mod-sequence-valzer) = 1*DIGIT, 63 bits.
        return self.number(what, MAX_NUMBER64)

    # Sequence sets.

    def seq_number(self):
        if self.take(b"*"):
            return STAR
        return self.nz_number("sequence number")

    def seqset(self, allow_searchres=True):
        """sequence-set (RFC 9051 9), or "$" (RFC 5182 2.1) for the saved search result."""
        if self.peek() == 0x24:
            if not allow_searchres:
                self.error("$ not allowed here")
            self.pos += 1
            return SeqSet(searchres=True)
        ranges = []
        while True:
            lo = self.seq_number()
            hi = lo
            if self.take(b":"):
                hi = self.seq_number()
            # RFC 9051 9 (seq-range): "2:4" and "4:2" are the same; "*" is the largest.
            if lo is STAR or (hi is not STAR and lo > hi):
                lo, hi = hi, lo
            ranges.append((lo, hi))
            if not self.take(b","):
                break
        return SeqSet(ranges=tuple(ranges))

    # Dates.

    def date(self):
        """date = date-text / DQUOTE date-text DQUOTE; date-text = dd-Mon-yyyy."""
        quoted = self.take(b'"')
        day = self.scan(_DIGITS)
        d = self._date_rest(day)
        if quoted:
            self.expect(b'"', "closing quote of date")
        return d

    def _date_rest(self, day):
        if not 1 <= len(day) <= 2:
            self.error("invalid day in date")
        self.expect(b"-", "'-' in date")
        month = _MONTH_NUMBER.get(self.data[self.pos : self.pos + 3].upper().decode("latin-1"))
        if month is None or self.pos + 3 > self.end:
            self.error("invalid month in date")
        self.pos += 3
        self.expect(b"-", "'-' in date")
        year = self.scan(_DIGITS)
        if len(year) != 4:
            self.error("invalid year in date")
        try:
            return date(int(year), month, int(day))
        except ValueError:
            self.error("invalid date")

    def date_time(self):
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        self.expect(b'"', "date-time")
        self.take(b" ")  # date-day-fixed = (SP DIGIT) / 2DIGIT
        d = self._date_rest(self.scan(_DIGITS))
        self.sp()
        parts = []
        for i in range(3):
            if i:
                self.expect(b":", "':' in time")
            digits = self.scan(_DIGITS)
            if len(digits) != 2:
                self.error("invalid time in date-time")
            parts.append(int(digits))
        self.sp()
        c = self.peek()
        if c not in (0x2B, 0x2D):
            self.error("invalid zone in date-time")
        self.pos += 1
        zone = self.scan(_DIGITS)
        if len(zone) != 4:
            self.error("invalid zone in date-time")
        zh, zm = int(zone[:2]), int(zone[2:])
        self.expect(b'"', "closing quote of date-time")
        if zm >= 60 or zh >= 24:
            self.error("invalid zone in date-time")
        offset = timedelta(hours=zh, minutes=zm)
        if c == 0x2D:
            offset = -offset
        try:
            return datetime(d.year, d.month, d.day, parts[0], parts[1], parts[2], tzinfo=timezone(offset))
        except ValueError:
            self.error("invalid time in date-time")

    # Flags.

    def flag(self):
        """flag = "\\" atom / atom (RFC 9051 9: flag, flag-keyword, flag-extension)."""
        if self.take(b"\\"):
            name = "\\" + self.atom("flag")
            return SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("flag")

    def flag_list(self):
        """flag-list = "(" [flag *(SP flag)] ")"."""
        self.expect(b"(", "flag list")
        flags = []
        if self.take(b")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.close_or_sp():
                return flags

    # Generic parenthesised atom lists.

    def atom_list(self, what, allow_empty=True):
        self.expect(b"(", f"'(' for {what}")
        items = []
        if self.take(b")"):
            if not allow_empty:
                self.error(f"empty {what}")
            return items
        while True:
            items.append(self.atom(what).upper())
            if self.close_or_sp():
                return items

    # Commands. Each returns the args dict; the caller checks the end of the command.

    def cmd_noargs(self):
        return {}

    def cmd_login(self):
        """LOGIN SP userid SP password."""
        self.sp()
        user = self.astring("user name")
        self.sp()
        password = self.astring("password")
        return {"user": user, "password": password}

    def cmd_authenticate(self):
        """AUTHENTICATE SP auth-type [SP (base64 / "=")] (RFC 4959 SASL-IR)."""
        self.sp()
        mech = self.atom("mechanism").upper()
        initial = None
        if not self.at_end():
            self.sp()
            raw = self.scan(ATOM_CHAR)  # base64 chars and "=" are ATOM-CHARs
            if not raw:
                self.error(f"expected initial response, found {self.found()}")
            if raw == b"=":
                initial = b""  # RFC 4959 3: "=" is an empty initial response
            else:
                try:
                    initial = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    self.error("invalid base64 in initial response")
        return {"mechanism": mech, "initial": initial}

    def cmd_enable(self):
        """ENABLE 1*(SP capability) (RFC 5161 4)."""
        caps = []
        while True:
            self.sp()
            caps.append(self.atom("capability").upper())
            if self.at_end():
                return {"capabilities": caps}

    def cmd_cancelupdate(self):
        """CANCELUPDATE 1*(SP quoted) (RFC 5267 4.3): tags of SEARCH/SORT contexts."""
        tags = []
        while True:
            self.sp()
            tags.append(self.text(self.quoted(), "search tag"))
            if self.at_end():
                return {"tags": tags}

    def cmd_genurlauth(self):
        """GENURLAUTH 1*(SP url-rump SP mechanism) (RFC 4467 7)."""
        pairs = []
        while True:
            self.sp()
            url = self.astring("URL")
            self.sp()
            pairs.append((url, self.atom("URLAUTH mechanism").upper()))
            if len(pairs) > MAX_URLFETCH:
                self.error(f"at most {MAX_URLFETCH} URLs per GENURLAUTH")
            if self.at_end():
                return {"urls": pairs}

    def cmd_resetkey(self):
        """RESETKEY [SP mailbox *(SP mechanism)] (RFC 4467 7)."""
        if self.at_end():
            return {"mailbox": None, "mechanisms": []}
        self.sp()
        mailbox = self.mailbox()
        mechs = []
        while not self.at_end():
            self.sp()
            mechs.append(self.atom("URLAUTH mechanism").upper())
        return {"mailbox": mailbox, "mechanisms": mechs}

    def cmd_urlfetch(self):
        """URLFETCH 1*(SP url) (RFC 4467 7), where a url may be "(" url *(SP param) ")"
        with BODYPARTSTRUCTURE, BINARY or BODY (RFC 5524 3)."""
        items = []
        while True:
            self.sp()
            if self.take(b"("):
                url = self.astring("URL")
                params = []
                while not self.take(b")"):
                    if self.at_end():
                        self.error("unbalanced parentheses: missing ')'")
                    self.sp()
                    word = self.atom("URLFETCH parameter").upper()
                    if word not in ("BODYPARTSTRUCTURE", "BINARY", "BODY"):
                        self.error(f"unknown URLFETCH parameter {word}")
                    params.append(word)
                if "BINARY" in params and "BODY" in params:
                    self.error("URLFETCH takes BODY or BINARY, not both")  # RFC 5524 3
                items.append((url, params))
            else:
                items.append((self.astring("URL"), None))
            if len(items) > MAX_URLFETCH:
                self.error(f"at most {MAX_URLFETCH} URLs per URLFETCH")
            if self.at_end():
                return {"urls": items}

    def metadata_mailbox(self):
        """A mailbox name, or "" for the server's entries (RFC 5464 4.2, 4.3)."""
        if self.take(b'""') and (self.at_end() or self.peek() == 0x20):
            return ""
        return self.mailbox()

    def metadata_entry(self):
        """entry = astring (RFC 5464 5): "/private/..." or "/shared/...", slash
        separated, no wildcards, no empty parts, no controls (RFC 5464 3.2.1)."""
        raw = self.astring_bytes(what="metadata entry")
        name = self.text(raw, "metadata entry")
        low = name.lower()
        if not (low.startswith("/private/") or low.startswith("/shared/")):
            self.error("metadata entry must start with /private/ or /shared/")
        if len(name) > MAX_METADATA_ENTRY or "*" in name or "%" in name or "//" in name or name.endswith("/"):
            self.error("invalid metadata entry name")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            self.error("invalid metadata entry name")
        return name

    def metadata_entries(self):
        """entry *(SP entry) ")", after the "(" (RFC 5464 5)."""
        entries = []
        while True:
            entries.append(self.metadata_entry())
            if len(entries) > MAX_METADATA_ITEMS:
                self.error("too many metadata entries")
            if self.close_or_sp():
                return entries

    def cmd_getmetadata(self):
        """GETMETADATA [SP "(" options ")"] SP mailbox SP entries (RFC 5464 4.2): options
        MAXSIZE n and DEPTH 0/1/infinity; one entry or a list."""
        self.sp()
        maxsize, depth = None, 0
        if self.take(b"("):
            while True:
                word = self.atom("metadata option").upper()
                self.sp()
                if word == "MAXSIZE":
                    maxsize = self.number()
                elif word == "DEPTH":
                    d = self.atom("depth").lower()
                    if d not in ("0", "1", "infinity"):
                        self.error("DEPTH must be 0, 1 or infinity")
                    depth = None if d == "infinity" else int(d)
                else:
                    self.error(f"unknown GETMETADATA option {word}")
                if self.close_or_sp():
                    break
            self.sp()
        mailbox = self.metadata_mailbox()
        self.sp()
        entries = self.metadata_entries() if self.take(b"(") else [self.metadata_entry()]
        return {"mailbox": mailbox, "entries": entries, "maxsize": maxsize, "depth": depth}

    def cmd_setmetadata(self):
        """SETMETADATA SP mailbox SP "(" entry SP value *(SP entry SP value) ")" (RFC
        5464 4.3); value = nstring / literal8, NIL removes the entry."""
        self.sp()
        mailbox = self.metadata_mailbox()
        self.sp()
        self.expect(b"(")
        items = []
        while True:
            entry = self.metadata_entry()
            self.sp()
            if self.take_word(b"NIL"):
                value = None
            elif self.peek() == 0x22:
                value = self.quoted()
            else:
                value = self.literal(binary_ok=True)[0]
            items.append((entry, value))
            if len(items) > MAX_METADATA_ITEMS:
                self.error("too many metadata entries")
            if self.close_or_sp():
                break
        return {"mailbox": mailbox, "items": items}

    def cmd_select(self):
        """SELECT/EXAMINE SP mailbox [select-params] (RFC 7162 7: CONDSTORE, QRESYNC)."""
        self.sp()
        args = {"mailbox": self.mailbox(), "condstore": False, "qresync": None}
        if self.at_end():
            return args
        self.sp()
        self.expect(b"(", "'(' for select parameters")
        seen = set()
        while True:
            name = self.atom("select parameter").upper()
            if name in seen:
                self.error(f"duplicate select parameter {name}")
            seen.add(name)
            if name == "CONDSTORE":
                args["condstore"] = True
            elif name == "QRESYNC":
                self.sp()
                args["qresync"] = self.qresync_param()
            else:
                self.error(f"unknown select parameter {name}")
            if self.close_or_sp():
                return args

    def qresync_param(self):
        """"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
        (RFC 7162 3.2.5.1, 7)."""
        self.expect(b"(", "'(' for QRESYNC parameters")
        uidvalidity = self.nz_number("uidvalidity")
        self.sp()
        modseq = self.modseq()
        known_uids = None
        seq_match = None
        if self.take(b" "):
            if self.peek() != 0x28:
                known_uids = self.known_set("known UIDs")
                if self.take(b" "):
                    seq_match = self.seq_match_data()
            else:
                seq_match = self.seq_match_data()
        self.expect(b")", "')' after QRESYNC parameters")
        return {"uidvalidity": uidvalidity, "modseq": modseq, "known_uids": known_uids, "seq_match": seq_match}

    def known_set(self, what):
        """A sequence set without "*" or "$" (RFC 7162 7: known-uids, known-sequence-set,
        known-uid-set)."""
        seqset = self.seqset(allow_searchres=False)
        if any(STAR in r for r in seqset.ranges):
            self.error(f"* not allowed in {what}")
        return seqset

    def seq_match_data(self):
        """seq-match-data = "(" known-sequence-set SP known-uid-set ")" (RFC 7162 7)."""
        self.expect(b"(", "'(' for sequence match data")
        seqs = self.known_set("known sequence set")
        self.sp()
        uids = self.known_set("known UID set")
        self.expect(b")", "')' after sequence match data")
        return (seqs, uids)

    def cmd_create(self):
        """CREATE SP mailbox [SP "(" create-param ")"] (RFC 6154 3: USE (attrs))."""
        self.sp()
        args = {"mailbox": self.mailbox(), "use": []}
        if self.at_end():
            return args
        self.sp()
        self.expect(b"(", "'(' for create parameters")
        seen = set()
        while True:
            name = self.atom("create parameter").upper()
            if name != "USE":
                self.error(f"unknown create parameter {name}")
            if name in seen:
                self.error(f"duplicate create parameter {name}")
            seen.add(name)
            self.sp()
            self.expect(b"(", "'(' for USE attributes")
            if not self.take(b")"):
                while True:
                    self.expect(b"\\", "special-use attribute")
                    args["use"].append("\\" + self.atom("special-use attribute"))
                    if self.close_or_sp():
                        break
            if self.close_or_sp():
                return args

    def cmd_mailbox(self):
        """DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT: SP mailbox."""
        self.sp()
        return {"mailbox": self.mailbox()}

    def cmd_rename(self):
        """RENAME SP mailbox SP mailbox."""
        self.sp()
        old = self.mailbox()
        self.sp()
        return {"old": old, "new": self.mailbox()}

    def cmd_list(self):
        """LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
        (RFC 9051 6.3.9, RFC 5258 3, RFC 5819 2)."""
        self.sp()
        select = []
        if self.peek() == 0x28:
            select = self.atom_list("LIST selection option")
            for opt in select:
                if opt not in LIST_SELECT_OPTS:
                    self.error(f"unknown LIST selection option {opt}")  # RFC 5258 3
            if "RECURSIVEMATCH" in select and set(select) <= {"RECURSIVEMATCH", "REMOTE"}:
                self.error("RECURSIVEMATCH requires another selection option")  # RFC 5258 3
            self.sp()
        reference = self.mailbox()
        self.sp()
        patterns = []
        if self.peek() == 0x28:
            # patterns = "(" list-mailbox *(SP list-mailbox) ")" (RFC 5258 3)
            self.pos += 1
            while True:
                patterns.append(self.list_mailbox())
                if self.close_or_sp():
                    break
        else:
            patterns.append(self.list_mailbox())
        ret = {}
        if not self.at_end():
            self.sp()
            if not self.take_word(b"RETURN"):
                self.error(f"expected RETURN, found {self.found()}")
            self.sp()
            self.expect(b"(", "'(' for LIST return options")
            if not self.take(b")"):
                while True:
                    opt = self.atom("LIST return option").upper()
                    if opt not in LIST_RETURN_OPTS:
                        self.error(f"unknown LIST return option {opt}")
                    if opt in ret:
                        self.error(f"duplicate LIST return option {opt}")
                    if opt == "STATUS":
                        self.sp()
                        ret[opt] = self.status_items()  # RFC 5819 2
                    elif opt == "METADATA":
                        # RFC 9590 3: METADATA SP "(" entry *(SP entry) ")"
                        self.sp()
                        self.expect(b"(", "'(' for METADATA entries")
                        ret[opt] = self.metadata_entries()
                    else:
                        ret[opt] = True
                    if self.close_or_sp():
                        break
        return {"reference": reference, "patterns": patterns, "select": select, "return": ret}

    def cmd_lsub(self):
        """LSUB SP mailbox SP list-mailbox (RFC 3501 6.3.9)."""
        self.sp()
        reference = self.mailbox()
        self.sp()
        return {"reference": reference, "pattern": self.list_mailbox()}

    def status_items(self):
        items = self.atom_list("status item", allow_empty=False)
        for item in items:
            if item not in STATUS_ITEMS:
                self.error(f"unknown status item {item}")
        return items

    def cmd_status(self):
        """STATUS SP mailbox SP "(" status-att *(SP status-att) ")"."""
        self.sp()
        mailbox = self.mailbox()
        self.sp()
        return {"mailbox": mailbox, "items": self.status_items()}

    def append_message(self):
        """append-message = append-opts SP append-data (RFC 3502 6.3.11, RFC 9051 6.3.12):
        [SP flag-list] [SP date-time] SP (literal / literal8 / "UTF8" SP "(" literal8 ")").
        Expects to be before the SP that starts the options."""
        flags = None
        when = None
        while True:
            self.sp()
            c = self.peek()
            if c == 0x28 and flags is None and when is None:
                flags = self.flag_list()
                continue
            if c == 0x22 and when is None:
                when = self.date_time()
                continue
            if c == 0x7B or self.peek_bytes(b"~{"):
                data, binary = self.literal(binary_ok=True, spool_ok=True)
                utf8 = False
                break
            if self.take_word(b"UTF8"):
                # RFC 6855 4: append-data =/ "UTF8" SP "(" literal8 ")"
                self.sp()
                self.expect(b"(", "'(' after UTF8")
                data, binary = self.literal(binary_ok=True, spool_ok=True)
                self.expect(b")", "')' after UTF8 literal")
                utf8 = True
                break
            if self.take_word(b"CATENATE"):
                # RFC 4469 5: "CATENATE" SP "(" cat-part *(SP cat-part) ")";
                # cat-part = "URL" SP url / "TEXT" SP literal (literal8 with BINARY).
                self.sp()
                self.expect(b"(", "'(' after CATENATE")
                parts, binary = [], False
                while True:
                    if self.take_word(b"URL"):
                        self.sp()
                        parts.append(("url", self.astring("URL")))
                    elif self.take_word(b"TEXT"):
                        self.sp()
                        data, is_binary = self.literal(binary_ok=True, spool_ok=True)
                        binary = binary or is_binary
                        parts.append(("text", data))
                    else:
                        self.error(f"expected URL or TEXT in CATENATE, found {self.found()}")
                    if len(parts) > MAX_CATENATE_PARTS:
                        self.error(f"more than {MAX_CATENATE_PARTS} CATENATE parts", "LIMIT")
                    if self.close_or_sp():
                        break
                return {"flags": flags or [], "date": when, "data": None, "catenate": parts,
                        "binary": binary, "utf8": False}
            self.error(f"expected message literal, found {self.found()}")
        return {"flags": flags or [], "date": when, "data": data, "binary": binary, "utf8": utf8}

    def cmd_append(self):
        """APPEND SP mailbox 1*append-message (RFC 3502 6.3.11 MULTIAPPEND)."""
        self.sp()
        mailbox = self.mailbox()
        messages = [self.append_message()]
        while not self.at_end():
            messages.append(self.append_message())
        return {"mailbox": mailbox, "messages": messages}

    def cmd_replace(self):
        """[UID] REPLACE SP sequence-set SP mailbox append-message (RFC 8508 6)."""
        self.sp()
        seqset = self.seqset()
        self.sp()
        mailbox = self.mailbox()
        return {"seqset": seqset, "mailbox": mailbox, "message": self.append_message()}

    # SEARCH.

    def search_return_opts(self, allowed=SEARCH_RETURN_OPTS):
        """[SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"] (RFC 4731 3.1).
        Returns None when absent. "RETURN ()" means "RETURN (ALL)" (RFC 4731 3.1)."""
        save = self.pos
        self.sp()
        if not self.take_word(b"RETURN"):
            self.pos = save
            return None
        self.sp()
        opts = self.atom_list("search return option")
        out = []
        items = iter(opts)
        for opt in items:
            if opt == "PARTIAL" and "PARTIAL" in allowed:
                # RFC 9394 3.1: "PARTIAL" SP partial-range, kept as ("PARTIAL", lo, hi).
                rng = next(items, None)
                if any(isinstance(o, tuple) for o in out):
                    self.error("PARTIAL given twice")
                out.append(("PARTIAL",) + _partial_range(rng, self))
                continue
            if opt not in allowed:
                self.error(f"unknown search return option {opt}")
            if opt == "CONTEXT":
                continue
            if opt not in out:
                out.append(opt)
        return tuple(out) if out else ("ALL",)

    def charset(self):
        raw = self.astring_bytes(what="charset")
        name = raw.decode("latin-1").upper()
        cs = SEARCH_CHARSETS.get(name)
        if cs is None:
            self.error(f"unsupported charset {raw.decode('ascii', 'replace')}", "BADCHARSET")
        return cs

    def search_program(self, return_opts=None, charset=""):
        """search-program = ["CHARSET" SP charset SP] search-key *(SP search-key)."""
        if not charset and self.take_word(b"CHARSET"):
            self.sp()
            charset = self.charset()
            self.sp()
        key = self.search_keys()
        return SearchProgram(key=key, charset=charset, return_opts=return_opts)

    def cmd_search(self):
        """[UID] SEARCH [search-return-opts] SP search-program (RFC 9051 6.4.4)."""
        return_opts = self.search_return_opts()
        self.sp()
        return {"program": self.search_program(return_opts)}

    def cmd_esearch(self):
        """ESEARCH [SP "IN" SP "(" source-mbox ")"] [search-return-opts] SP search-program
        (RFC 7377 4). ``sources``: [(filter, [mailbox names] or None)], None without IN
        (the selected mailbox). SAVE and UPDATE are not return options here (RFC 7377
        2.1: results of several mailboxes cannot be saved or kept current)."""
        sources = None
        save = self.pos
        self.sp()
        if self.take_word(b"IN"):
            self.sp()
            self.expect(b"(")
            sources = self.search_sources()
        else:
            self.pos = save
        return_opts = self.search_return_opts(ESEARCH_RETURN_OPTS)
        self.sp()
        return {"sources": sources, "program": self.search_program(return_opts)}

    def search_sources(self):
        """source-mbox = filter-mailboxes *(SP filter-mailboxes), up to the ")" (RFC 7377
        4, RFC 5465 6: "selected", "inboxes", "personal", "subscribed", "subtree",
        "subtree-one", "mailboxes"; the last three with one mailbox or a list)."""
        out = []
        names = 0
        while True:
            word = self.atom("mailbox filter").upper()
            if word in SEARCH_FILTERS_PLAIN:
                out.append((word, None))
            elif word in SEARCH_FILTERS_NAMED:
                self.sp()
                boxes = self.one_or_more_mailbox()
                names += len(boxes)
                out.append((word, boxes))
            else:
                self.error(f"unknown mailbox filter {word}")
            if len(out) + names > MAX_SEARCH_MAILBOXES:
                self.error("too many mailboxes")
            if self.take(b")"):
                return out
            self.sp()
            if self.peek() == 0x28:
                # scope-options (RFC 7377 4): none are defined.
                self.error("scope options are not supported")

    def one_or_more_mailbox(self):
        """one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")" (RFC 5465 8)."""
        if not self.take(b"("):
            return [self.mailbox()]
        boxes = []
        while True:
            boxes.append(self.mailbox())
            if len(boxes) > MAX_SEARCH_MAILBOXES:
                self.error("too many mailboxes")
            if self.close_or_sp():
                return boxes

    def cmd_notify(self):
        """NOTIFY SP ("NONE" / "SET" [SP "STATUS"] 1*(SP event-group)) (RFC 5465 8).
        ``groups``: None for NONE, else [(filter, [mailbox names] or None, events)] with
        events None for NONE or [(event name, [FetchAtt] or None)]."""
        self.sp()
        if self.take_word(b"NONE"):
            self.expect_end()
            return {"groups": None, "status": False}
        if not self.take_word(b"SET"):
            self.error(f"expected NONE or SET, found {self.found()}")
        self.sp()
        status = self.take_word(b"STATUS")
        if status:
            self.sp()
        groups = []
        while True:
            self.expect(b"(", "'(' of an event group")
            groups.append(self.notify_group())
            if len(groups) > MAX_NOTIFY_GROUPS:
                self.error("too many event groups")
            if self.at_end():
                return {"groups": groups, "status": status}
            self.sp()

    def notify_group(self):
        """event-group = "(" filter-mailboxes SP events ")", after the "("."""
        word = self.atom("mailbox filter").upper()
        boxes = None
        if word in SEARCH_FILTERS_NAMED:
            # subtree-one is RFC 7377's addition to filter-mailboxes.
            self.sp()
            boxes = self.one_or_more_mailbox()
        elif word not in SEARCH_FILTERS_PLAIN:
            self.error(f"unknown mailbox filter {word}")
        self.sp()
        if self.take_word(b"NONE"):
            events = None
        else:
            self.expect(b"(", "'(' of the events")
            events = []
            while True:
                name = self.atom("event").upper()
                event = NOTIFY_EVENTS.get(name)
                if event is None or event not in NOTIFY_SUPPORTED:
                    # RFC 5465 3.1, 6: NO with the events the server does support.
                    raise ParseError(self.tag, f"unsupported event {name[:40]}",
                                     f"BADEVENT ({' '.join(NOTIFY_SUPPORTED)})", no=True)
                atts = None
                if event == "MessageNew" and self.peek_bytes(b" ("):
                    self.pos += 2
                    atts = []
                    while True:
                        atts.append(self.fetch_att())
                        if self.close_or_sp():
                            break
                events.append((event, atts))
                if self.close_or_sp():
                    break
        self.expect(b")", "')' after the events")
        return (word, boxes, events)

    def search_keys(self):
        """search-key *(SP search-key) up to the end of the command, as an "and" node.

        Iterative with an explicit stack, so hostile nesting cannot exhaust the Python
        stack: frames are [kind, operands] with kind "top", "paren", "or", "not"."""
        stack = [["top", []]]
        parens = 0
        while True:
            # Expecting the start of a search key.
            if self.peek() == 0x28:
                self.pos += 1
                parens += 1
                if parens > MAX_PAREN_DEPTH:
                    self.error("search program nested too deeply")
                if self.peek() == 0x29:
                    self.error("empty parenthesised search key")
                stack.append(["paren", []])
                if len(stack) > MAX_SEARCH_DEPTH:
                    self.error("search program nested too deeply")
                continue
            op = "or" if self.take_word(b"OR") else "not" if self.take_word(b"NOT") else None
            if op is not None:
                self.sp()
                stack.append([op, []])
                if len(stack) > MAX_SEARCH_DEPTH:
                    self.error("search program nested too deeply")
                continue
            key = self.search_leaf()
            # Reduce the completed key into the enclosing frames.
            while True:
                kind, items = stack[-1]
                items.append(key)
                if kind == "not" or (kind == "or" and len(items) == 2):
                    stack.pop()
                    key = SearchKey(kind, items)
                    continue
                if kind == "or":
                    self.sp()
                    break
                if kind == "paren" and self.peek() == 0x29:
                    self.pos += 1
                    parens -= 1
                    stack.pop()
                    key = SearchKey("and", items)
                    continue
                if self.at_end():
                    if kind == "paren":
                        self.error("unbalanced parentheses: missing ')'")
                    return SearchKey("and", items)
                if self.peek() == 0x29:
                    self.error("unbalanced parentheses: unexpected ')'")
                self.sp()
                break

    def search_leaf(self):
        c = self.peek()
        if c is not None and (c in _DIGITS or c in (0x2A, 0x24)):
            return SearchKey("seqset", [self.seqset()])
        name = self.atom("search key").upper()
        op = name.lower()
        if name in SEARCH_FLAG_KEYS:
            return SearchKey(op)
        if name not in SEARCH_ARG_KEYS:
            self.error(f"unknown search key {name}")
        self.sp()
        if name in SEARCH_STRING_KEYS:
            return SearchKey(op, [self.astring()])
        if name in SEARCH_DATE_KEYS:
            return SearchKey(op, [self.date()])
        if name in ("KEYWORD", "UNKEYWORD"):
            return SearchKey(op, [self.atom("keyword")])  # flag-keyword = atom
        if name == "HEADER":
            field = self.astring("header field name")
            self.sp()
            return SearchKey(op, [field, self.astring()])
        if name in ("LARGER", "SMALLER"):
            return SearchKey(op, [self.number64("size")])
        if name in ("OLDER", "YOUNGER"):
            return SearchKey(op, [self.nz_number("interval")])  # RFC 5032 4
        if name == "UID":
            return SearchKey(op, [self.seqset()])
        if name == "MODSEQ":
            # RFC 7162 3.1.5: "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer
            if self.peek() == 0x22:
                entry = self.quoted()
                if not entry.lower().startswith(b"/flags/"):
                    self.error("invalid MODSEQ entry name")
                self.sp()
                etype = self.atom("entry type").lower()
                if etype not in ("priv", "shared", "all"):
                    self.error("invalid MODSEQ entry type")
                self.sp()
            return SearchKey(op, [self.modseq()])
        raise AssertionError(name)  # pragma: no cover

    # FETCH.

    def cmd_fetch(self):
        """[UID] FETCH SP sequence-set SP (macro / fetch-att / "(" fetch-att *(SP fetch-att) ")")
        [SP "(" fetch-modifier *(SP fetch-modifier) ")"] (RFC 9051 6.4.5, RFC 7162 3.1.4)."""
        self.sp()
        seqset = self.seqset()
        self.sp()
        atts = []
        if self.take(b"("):
            while True:
                atts.append(self.fetch_att())
                if self.close_or_sp():
                    break
        else:
            save = self.pos
            word = self.scan(ATOM_CHAR).decode("ascii").upper()
            macro = FETCH_MACROS.get(word)
            if macro is not None and (self.at_end() or self.peek() == 0x20):
                atts = [FetchAtt(n) for n in macro]
            else:
                self.pos = save
                atts.append(self.fetch_att())
        changedsince = None
        vanished = False
        if not self.at_end():
            self.sp()
            self.expect(b"(", "'(' for FETCH modifiers")
            seen = set()
            while True:
                name = self.atom("FETCH modifier").upper()
                if name in seen:
                    self.error(f"duplicate FETCH modifier {name}")
                seen.add(name)
                if name == "CHANGEDSINCE":
                    self.sp()
                    changedsince = self.modseq()
                elif name == "VANISHED":
                    vanished = True
                else:
                    self.error(f"unknown FETCH modifier {name}")
                if self.close_or_sp():
                    break
            if vanished:
                # RFC 7162 3.2.6: VANISHED only with UID FETCH and with CHANGEDSINCE.
                if not self.uid:
                    self.error("VANISHED requires UID FETCH")
                if changedsince is None:
                    self.error("VANISHED requires CHANGEDSINCE")
        return {"seqset": seqset, "atts": atts, "changedsince": changedsince, "vanished": vanished}

    def fetch_att(self):
        start = self.pos
        name = self.scan(ATOM_CHAR - set(b"[<")).decode("ascii").upper()
        if not name:
            self.error(f"expected FETCH attribute, found {self.found()}")
        if self.peek() == 0x5B:
            if name in ("BODY", "BODY.PEEK"):
                section = self.section()
                return FetchAtt("BODY[]", section, name == "BODY.PEEK", self.partial())
            if name in ("BINARY", "BINARY.PEEK"):
                section = self.section_binary()
                return FetchAtt("BINARY[]", section, name == "BINARY.PEEK", self.partial())
            if name == "BINARY.SIZE":
                return FetchAtt("BINARY.SIZE[]", self.section_binary())
            self.pos = start
            self.error(f"unknown FETCH attribute {name}")
        if name in FETCH_SIMPLE and self.peek() != 0x3C:
            if name == "PREVIEW" and self.peek_bytes(b" (LAZY"):
                # RFC 8970 3.1: PREVIEW (LAZY); the modifier only allows a lazy answer.
                self.pos += 1
                if any(m != "LAZY" for m in self.atom_list("PREVIEW modifier")):
                    self.error("unknown PREVIEW modifier")
            return FetchAtt(name)
        self.pos = start
        if name in FETCH_MACROS:
            self.error(f"FETCH macro {name} not allowed in a list")
        self.error(f"unknown FETCH attribute {name}")

    def section(self):
        """section = "[" [section-spec] "]" (RFC 9051 9)."""
        self.expect(b"[")
        if self.take(b"]"):
            return Section()
        part = ()
        if self.peek() in _DIGITS:
            part = self.section_part()
            if self.take(b"]"):
                return Section(part=part)
            self.expect(b".", "'.' or ']' in section")
        text = self.scan(ATOM_CHAR - set(b"[]<")).decode("ascii").upper()
        fields = ()
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            self.sp()
            fields = self.header_list()
        elif text not in ("HEADER", "TEXT", "MIME") or (text == "MIME" and not part):
            self.error(f"invalid section {text!r}" if text else f"invalid section, found {self.found()}")
        self.expect(b"]", "']' after section")
        return Section(part=part, text=text, fields=fields)

    def section_part(self):
        """section-part = nz-number *("." nz-number); stops before ".TEXT" etc."""
        parts = [self.nz_number("section part")]
        while self.peek() == 0x2E and self.pos + 1 < self.end and self.data[self.pos + 1] in _DIGITS:
            self.pos += 1
            parts.append(self.nz_number("section part"))
        return tuple(parts)

    def section_binary(self):
        """section-binary = "[" [section-part] "]" (RFC 3516 4.2)."""
        self.expect(b"[")
        part = ()
        if not self.take(b"]"):
            part = self.section_part()
            self.expect(b"]", "']' after binary section")
        return Section(part=part)

    def header_list(self):
        """header-list = "(" header-fld-name *(SP header-fld-name) ")"."""
        self.expect(b"(", "'(' for header field names")
        fields = []
        while True:
            name = self.astring_bytes(what="header field name")
            # RFC 5322 3.6.8: field-name = 1*ftext (printable ASCII except ":").
            if not name or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in name):
                self.error("invalid header field name")
            fields.append(name.decode("ascii").upper())
            if self.close_or_sp():
                return tuple(fields)

    def partial(self):
        """partial = "<" number64 "." nz-number64 ">"."""
        if not self.take(b"<"):
            return None
        offset = self.number64("partial offset")
        self.expect(b".", "'.' in partial")
        count = self.number("partial length", MAX_NUMBER64, nonzero=True)
        self.expect(b">", "'>' after partial")
        return (offset, count)

    # STORE, COPY, MOVE, EXPUNGE.

    def cmd_store(self):
        """[UID] STORE SP sequence-set [SP "(" UNCHANGEDSINCE n ")"] SP store-att-flags
        (RFC 9051 6.4.6, RFC 7162 3.1.3)."""
        self.sp()
        seqset = self.seqset()
        self.sp()
        unchangedsince = None
        if self.take(b"("):
            name = self.atom("STORE modifier").upper()
            if name != "UNCHANGEDSINCE":
                self.error(f"unknown STORE modifier {name}")
            self.sp()
            unchangedsince = self.modseq()
            self.expect(b")", "')' after STORE modifiers")
            self.sp()
        mode = "set"
        if self.take(b"+"):
            mode = "add"
        elif self.take(b"-"):
            mode = "remove"
        item = self.atom("FLAGS").upper()
        if item not in ("FLAGS", "FLAGS.SILENT"):
            self.error(f"expected FLAGS, found {item}")
        self.sp()
        if self.peek() == 0x28:
            flags = self.flag_list()
        else:
            flags = [self.flag()]
            while not self.at_end():
                self.sp()
                flags.append(self.flag())
        return {
            "seqset": seqset, "unchangedsince": unchangedsince, "mode": mode,
            "silent": item == "FLAGS.SILENT", "flags": flags,
        }

    def cmd_copy(self):
        """[UID] COPY/MOVE SP sequence-set SP mailbox (RFC 9051 6.4.7, 6.4.8)."""
        self.sp()
        seqset = self.seqset()
        self.sp()
        return {"seqset": seqset, "mailbox": self.mailbox()}

    def cmd_expunge(self):
        """EXPUNGE, or UID EXPUNGE SP sequence-set (RFC 9051 6.4.9)."""
        if not self.uid:
            return {}
        self.sp()
        return {"seqset": self.seqset()}

    # Others.

    def cmd_id(self):
        """ID SP ("(" *(string SP nstring) ")" / nil) (RFC 2971 3.3)."""
        self.sp()
        if self.take_word(b"NIL"):
            return {"params": None}
        self.expect(b"(", "'(' or NIL")
        params = {}
        if self.take(b")"):
            return {"params": params}
        while True:
            key = self.text(self.string(), "ID field")
            self.sp()
            params[key] = self.nstring()
            if len(params) > MAX_ID_PARAMS:
                self.error("too many ID parameters")
            if self.close_or_sp():
                return {"params": params}

    def cmd_sort(self):
        """[UID] SORT [search-return-opts] SP "(" sort-criterion *(SP sort-criterion) ")"
        SP charset SP search-key *(SP search-key) (RFC 5256 3, RFC 5267 3.2 ESORT)."""
        return_opts = self.search_return_opts()
        self.sp()
        self.expect(b"(", "'(' for sort criteria")
        criteria = []
        while True:
            reverse = False
            key = self.atom("sort key").upper()
            if key == "REVERSE":
                reverse = True
                self.sp()
                key = self.atom("sort key").upper()
            if key not in SORT_KEYS:
                self.error(f"unknown sort key {key}")
            criteria.append((key, reverse))
            if self.close_or_sp():
                break
        self.sp()
        charset = self.charset()
        self.sp()
        return {"criteria": criteria, "charset": charset, "program": self.search_program(return_opts, charset)}

    def cmd_thread(self):
        """[UID] THREAD SP thread-alg SP charset SP search-key *(SP search-key) (RFC 5256 4)."""
        self.sp()
        alg = self.atom("thread algorithm").upper()
        if alg not in THREAD_ALGORITHMS:
            self.error(f"unknown thread algorithm {alg}")
        self.sp()
        charset = self.charset()
        self.sp()
        return {"algorithm": alg, "charset": charset, "program": self.search_program(None, charset)}

    def cmd_getquota(self):
        """GETQUOTA SP quota-root (RFC 9208 4.2)."""
        self.sp()
        return {"root": self.astring("quota root")}

    def cmd_compress(self):
        """COMPRESS SP algorithm (RFC 4978 3)."""
        self.sp()
        return {"mechanism": self.atom("compression mechanism").upper()}


def _decode_mutf7(raw):
    """Modified UTF-7 (RFC 3501 5.1.3) to str, or None if invalid. Stricter than the
    codec alone: "&" must start "&-" or a base64 run ended by "-", and a base64 run must
    not encode printable US-ASCII or lone surrogates."""
    out = []
    i = 0
    n = len(raw)
    while i < n:
        j = raw.find(b"&", i)
        if j < 0:
            out.append(raw[i:].decode("ascii"))
            break
        out.append(raw[i:j].decode("ascii"))
        k = raw.find(b"-", j + 1)
        if k < 0:
            return None
        if k == j + 1:
            out.append("&")
        else:
            b64 = raw[j + 1 : k]
            if any(c not in _BASE64_MUTF7 for c in b64):
                return None
            try:
                s = imap4.decoder(raw[j : k + 1])[0]  # the "imap4-utf-7" codec (RFC 3501 5.1.3)
                s.encode("utf-8")  # lone surrogates fail here
            except (UnicodeError, ValueError):
                return None
            if not s or any(0x20 <= ord(ch) <= 0x7E for ch in s):
                return None
            out.append(s)
        i = k + 1
    return "".join(out)


_COMMANDS = {
    **{
        name: _Parser.cmd_noargs
        for name in (
            "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE", "NAMESPACE",
            "UNAUTHENTICATE",
        )
    },
    "EXPUNGE": _Parser.cmd_expunge,
    "LOGIN": _Parser.cmd_login,
    "AUTHENTICATE": _Parser.cmd_authenticate,
    "ENABLE": _Parser.cmd_enable,
    "SELECT": _Parser.cmd_select,
    "EXAMINE": _Parser.cmd_select,
    "CREATE": _Parser.cmd_create,
    "DELETE": _Parser.cmd_mailbox,
    "SUBSCRIBE": _Parser.cmd_mailbox,
    "UNSUBSCRIBE": _Parser.cmd_mailbox,
    "GETQUOTAROOT": _Parser.cmd_mailbox,
    "RENAME": _Parser.cmd_rename,
    "LIST": _Parser.cmd_list,
    "LSUB": _Parser.cmd_lsub,
    "STATUS": _Parser.cmd_status,
    "APPEND": _Parser.cmd_append,
    "REPLACE": _Parser.cmd_replace,
    "SEARCH": _Parser.cmd_search,
    "FETCH": _Parser.cmd_fetch,
    "STORE": _Parser.cmd_store,
    "COPY": _Parser.cmd_copy,
    "MOVE": _Parser.cmd_copy,
    "ID": _Parser.cmd_id,
    "SORT": _Parser.cmd_sort,
    "THREAD": _Parser.cmd_thread,
    "GETQUOTA": _Parser.cmd_getquota,
    "CANCELUPDATE": _Parser.cmd_cancelupdate,
    "ESEARCH": _Parser.cmd_esearch,
    "NOTIFY": _Parser.cmd_notify,
    "GETMETADATA": _Parser.cmd_getmetadata,
    "SETMETADATA": _Parser.cmd_setmetadata,
    "COMPRESS": _Parser.cmd_compress,
    "GENURLAUTH": _Parser.cmd_genurlauth,
    "RESETKEY": _Parser.cmd_resetkey,
    "URLFETCH": _Parser.cmd_urlfetch,
}
_UID_COMMANDS = frozenset(("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD", "REPLACE"))
