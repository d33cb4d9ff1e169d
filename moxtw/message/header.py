"""Header field values: unfolding, encoded words, MIME parameters, message-ids.

Implements RFC 5322 2.2.3 (unfolding), RFC 2047 (encoded words in unstructured
text and phrases), RFC 2045 5.1 / RFC 2183 (Content-Type and
Content-Disposition with parameters), RFC 2231 (parameter continuations,
charsets and languages) and RFC 5322 3.6.4 (message identifiers). Everything
here is tolerant of real-world breakage and never raises on bad input.
"""

import re
from urllib.parse import unquote_to_bytes

from moxtw.message import charset as _charset
from moxtw.message.encoding import decode_base64

# Parameter strings longer than this are cut before parsing; real ones are
# far shorter, and this bounds the work hostile headers cause.
MAX_PARAM_INPUT = 64 * 1024
# RFC 2231 3: continuation numbers above this are ignored.
MAX_CONTINUATIONS = 1000

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FOLD_STR = re.compile(r"\r?\n(?=[ \t])")


def unfold(value):
    """RFC 5322 2.2.3: remove the CRLFs of folding, strip surrounding whitespace.

    Accepts bytes or str and returns the same type.
    """
    if isinstance(value, str):
        return _FOLD_STR.sub("", value).strip(" \t\r\n")
    return _FOLD.sub(b"", value).strip(b" \t\r\n")


def to_str(value):
    """Header bytes to str: UTF-8 when valid (RFC 6532), else windows-1252."""
    if isinstance(value, str):
        return value
    return _charset.decode_8bit(value)


# RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=".
# RFC 2231 5 adds an optional "*language" after the charset. Encoded text may
# not contain "?" or spaces; spaces are tolerated because some senders emit them.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _q_decode(text):
    # RFC 2047 4.2: "_" is a space, "=XX" an octet.
    data = text.encode("utf-8", "surrogateescape").replace(b"_", b" ")
    return _Q_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), data)


def decode_words(value):
    """Decode RFC 2047 encoded words in a header value to str; never raises.

    Whitespace between adjacent encoded words is dropped (RFC 2047 6.2) and
    their octets are joined before charset decoding, so characters split across
    words survive. Words in unknown charsets are left as written.
    """
    if value is None:
        return ""
    s = to_str(value)
    if "=?" not in s:
        return s
    out = []
    pos = 0
    pending_charset = None
    pending = []

    def flush():
        if pending:
            out.append(_charset.decode(b"".join(pending), pending_charset))
            pending.clear()

    for m in _ENCODED_WORD.finditer(s):
        between = s[pos:m.start()]
        if not (pending and between.strip(" \t\r\n") == ""):
            flush()
            out.append(between)
        label, enc, text = m.groups()
        codec = _charset.lookup(label)
        if codec is None:
            flush()
            out.append(m.group(0))
            pos = m.end()
            continue
        if enc in "bB":
            raw = decode_base64(text)
        else:
            raw = _q_decode(text)
        if pending and pending_charset != label:
            flush()
        pending_charset = label
        pending.append(raw)
        pos = m.end()
    flush()
    out.append(s[pos:])
    return "".join(out)


def strip_comments(s):
    """Remove RFC 5322 3.2.2 comments (nested, outside quoted strings)."""
    if "(" not in s:
        return s
    out = []
    depth = 0
    quoted = False
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif quoted:
            out.append(c)
            if c == "\\" and i + 1 < n:
                i += 1
                out.append(s[i])
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
            out.append(c)
        elif c == "(":
            depth = 1
            out.append(" ")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _split_params(s):
    """Split "; a=b; c="d;e"" into [(key, value, was_quoted)]."""
    result = []
    i = 0
    n = len(s)
    while i < n:
        # Skip separators and whitespace.
        while i < n and s[i] in "; \t\r\n":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and s[i] not in "=;":
            i += 1
        key = s[start:i].strip()
        if i >= n or s[i] == ";":
            # Attribute without value: ignored (RFC 2045 requires one).
            continue
        i += 1  # "="
        while i < n and s[i] in " \t\r\n":
            i += 1
        if i < n and s[i] == '"':
            # RFC 5322 3.2.4 quoted-string; a missing end quote runs to the end.
            i += 1
            buf = []
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(s[i])
                i += 1
            i += 1
            value = "".join(buf)
            quoted = True
            # Skip anything between the closing quote and the next ";".
            while i < n and s[i] != ";":
                i += 1
        else:
            start = i
            while i < n and s[i] != ";":
                i += 1
            value = s[start:i].strip()
            quoted = False
        if key:
            result.append((key.lower(), value, quoted))
    return result


_CONTINUATION = re.compile(r"^(.*?)\*([0-9]+)(\*?)$")


def _pct_decode(value):
    try:
        return unquote_to_bytes(value)
    except Exception:
        return value.encode("utf-8", "surrogateescape")


def parse_params(s):
    """Parse MIME parameters (RFC 2045 5.1) with RFC 2231 extensions.

    Returns an ordered dict with lowercase names and decoded str values.
    Extended values (RFC 2231 4, "name*=charset'lang'%xx") and continuations
    (RFC 2231 3, "name*0", "name*1*", ...) are combined and decoded. RFC 2047
    encoded words inside values are left alone; see ``decode_words``.
    """
    if len(s) > MAX_PARAM_INPUT:
        s = s[:MAX_PARAM_INPUT]
    plain = {}
    extended = {}
    continued = {}
    order = []
    for key, value, quoted in _split_params(s):
        m = _CONTINUATION.match(key)
        if m:
            if len(m.group(2)) > 4 or not m.group(1):
                continue
            name, num, star = m.group(1), int(m.group(2)), m.group(3)
            if num > MAX_CONTINUATIONS:
                continue
            segments = continued.setdefault(name, {})
            segments.setdefault(num, (bool(star), value))
            order.append(name)
        elif key.endswith("*") and len(key) > 1:
            name = key[:-1]
            extended.setdefault(name, value)
            order.append(name)
        else:
            plain.setdefault(key, value)
            order.append(key)
    result = {}
    for name in order:
        if name in result:
            continue
        if name in continued:
            value = _join_continuations(continued[name])
            if value is None:
                value = extended.get(name, plain.get(name))
                if name in extended:
                    value = _decode_extended(value)
        elif name in extended:
            value = _decode_extended(extended[name])
        else:
            value = plain[name]
        if value is not None:
            result[name] = value
    return result


def _decode_extended(value):
    # RFC 2231 4: charset'language'percent-encoded-octets.
    parts = value.split("'", 2)
    if len(parts) != 3:
        return _charset.decode(_pct_decode(value), "utf-8")
    label, _lang, text = parts
    return _charset.decode(_pct_decode(text), label or "utf-8")


def _join_continuations(segments):
    # RFC 2231 3: segments are numbered from 0 without gaps; we take what is
    # there in order, tolerating gaps.
    if not segments:
        return None
    label = None
    chunks = []
    for num in sorted(segments):
        encoded, value = segments[num]
        if encoded:
            if num == min(segments):
                parts = value.split("'", 2)
                if len(parts) == 3:
                    label, _lang, value = parts
            chunks.append(_pct_decode(value))
        else:
            chunks.append(value.encode("utf-8", "surrogateescape"))
    return _charset.decode(b"".join(chunks), label or "utf-8")


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(r"\s*(" + _TOKEN + r")\s*/\s*(" + _TOKEN + r")\s*")
_DISPOSITION = re.compile(r"\s*(" + _TOKEN + r")\s*")


def parse_content_type(value):
    """Parse a Content-Type value (RFC 2045 5.1).

    Returns (type, subtype, params) with lowercase type and subtype, or None
    when the value is not a valid media type (the caller then applies the
    RFC 2045 5.2 default).
    """
    s = strip_comments(to_str(value))
    m = _MEDIA_TYPE.match(s)
    if not m:
        return None
    rest = s[m.end():]
    return m.group(1).lower(), m.group(2).lower(), parse_params(rest)


def parse_disposition(value):
    """Parse Content-Disposition (RFC 2183): (lowercase type, params) or None."""
    s = strip_comments(to_str(value))
    m = _DISPOSITION.match(s)
    if not m:
        return None
    return m.group(1).lower(), parse_params(s[m.end():])


_MSG_ID = re.compile(r"<\s*([^<>\s]*(?:\s+[^<>\s]+)*)\s*>")


def parse_message_ids(value):
    """Return the message-ids in a Message-ID/In-Reply-To/References value.

    RFC 5322 3.6.4: ids are in angle brackets; they are returned without the
    brackets. A value without brackets that looks like a single id is
    accepted as one (common breakage).
    """
    if value is None:
        return []
    s = strip_comments(to_str(unfold(value)))
    ids = [m.group(1).replace(" ", "") for m in _MSG_ID.finditer(s)]
    ids = [i for i in ids if i]
    if not ids:
        bare = s.strip()
        if bare and " " not in bare and "<" not in bare and ">" not in bare:
            ids = [bare]
    return ids
