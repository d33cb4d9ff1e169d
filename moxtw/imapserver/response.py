"""Formatting of values in IMAP responses (RFC 9051 9: string, astring, nstring, mailbox,
flag-list, sequence-set, date-time), and of the nested ENVELOPE/BODYSTRUCTURE values
built by ``moxtw.message.imap``.

Functions return bytes ready to be joined into a response line, except ``format_seqset``
and ``date_time``, which return str (they are pure ASCII and often go into response
codes built as text). Non-ASCII text is only sent in quoted strings to clients that
enabled UTF8=ACCEPT or IMAP4rev2 (RFC 6855 3, RFC 9051 9: utf8-quoted); to others it
goes as a literal of UTF-8 bytes, and mailbox names in modified UTF-7 (RFC 3501 5.1.3).
"""

import base64
from datetime import timezone

from moxtw.imapserver.parser import ASTRING_CHAR, MONTHS

NIL = b"NIL"


def _bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _quotable(data, utf8):
    """Whether ``data`` can be sent as a quoted string: printable ASCII (and, for UTF-8
    clients, valid non-ASCII UTF-8); never CR, LF or NUL (RFC 9051 9: QUOTED-CHAR)."""
    if all(0x20 <= c < 0x7F for c in data):
        return True
    if not utf8:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ord(ch) >= 0x80 or 0x20 <= ord(ch) < 0x7F for ch in text)


def quoted(value):
    """A quoted string, escaping "\\" and '"'. The caller makes sure it is quotable."""
    data = _bytes(value)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value):
    """A synchronizing-form literal: ``{n}`` CRLF and the octets (RFC 9051 4.3)."""
    data = _bytes(value)
    return b"{%d}\r\n" % len(data) + data


def literal8(value):
    """A binary literal ``~{n}`` (RFC 3516 4.2: BINARY[] data that may hold NUL)."""
    data = _bytes(value)
    return b"~{%d}\r\n" % len(data) + data


def string(value, utf8=False):
    """string (RFC 9051 9): quoted when possible, else a literal."""
    data = _bytes(value)
    if _quotable(data, utf8):
        return quoted(data)
    return literal(data)


def nstring(value, utf8=False):
    """nstring: NIL for None, else a string."""
    if value is None:
        return NIL
    return string(value, utf8)


def astring(value, utf8=False):
    """astring: an atom when all characters allow it, else a string. "NIL" is quoted so
    no client mistakes it for nil."""
    data = _bytes(value)
    if data and all(c in ASTRING_CHAR for c in data) and data.upper() != NIL:
        return data
    return string(data, utf8)


def encode_mutf7(name):
    """Modified UTF-7 (RFC 3501 5.1.3). Our own encoder: Twisted's "imap4-utf-7" codec
    (Twisted 26.10) encodes "\\n" as "&-", which decodes to "&"."""
    out = []
    run = []

    def flush():
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) < 0x7F:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out).encode("ascii")


def mailbox_name(name, utf8=False):
    """A mailbox name: modified UTF-7 (RFC 3501 5.1.3) unless UTF8=ACCEPT (RFC 6855 3)."""
    if not utf8:
        name = encode_mutf7(name)
    return astring(name, utf8)


def flag_list(flags):
    """flag-list = "(" [flag *(SP flag)] ")"; flags are atoms (keywords) or "\\" atoms."""
    return b"(" + b" ".join(_bytes(f) for f in flags) + b")"


def number(n):
    return b"%d" % n


def list_value(value, utf8=False):
    """Render the nested value convention of ``moxtw.message.imap`` (ENVELOPE,
    BODYSTRUCTURE): None is NIL, str/bytes a string, int a number, list a parenthesised
    list."""
    out = []
    _render(value, utf8, out, 0)
    return b"".join(out)


def _render(value, utf8, out, depth):
    if depth > 100:
        raise ValueError("value nested too deeply")
    if value is None:
        out.append(NIL)
    elif isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(value, int):
        out.append(b"%d" % value)
    elif isinstance(value, (str, bytes)):
        out.append(string(value, utf8))
    elif isinstance(value, (list, tuple)):
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _render(item, utf8, out, depth + 1)
        out.append(b")")
    else:
        raise TypeError(f"cannot render {type(value).__name__} as an IMAP value")


def format_seqset(uids):
    """A sequence set for a list of numbers, in the given order, runs of consecutive
    ascending numbers compressed: [1, 2, 3, 5] -> "1:3,5". The order is kept because
    COPYUID pairs source and destination UIDs by position (RFC 4315 3); pass sorted
    lists for ESEARCH and VANISHED. Empty input gives ""."""
    parts = []
    start = prev = None
    for n in uids:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(_range(start, prev))
        start = prev = n
    if start is not None:
        parts.append(_range(start, prev))
    return ",".join(parts)


def _range(lo, hi):
    return str(lo) if lo == hi else f"{lo}:{hi}"


def date_time(when):
    """date-time, quoted (RFC 9051 9): '"dd-Mon-yyyy hh:mm:ss +zzzz"'. A naive datetime
    is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f'"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )
