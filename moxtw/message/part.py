"""The MIME part tree of a message, with byte offsets into the original data.

Parses the header section (RFC 5322 2.2, 3.6) and the MIME structure
(RFC 2045, RFC 2046 5.1 multipart incl. multipart/digest defaults,
RFC 2046 5.2.1 message/rfc822, RFC 6532 message/global) without copying
bodies: every part records where its header section, body and end are in the
data it was parsed from, so IMAP can serve BODY[1.2], BODY[1.2.MIME] and
BODY[1.HEADER] byte-exact from the stored file, and the tree can be cached as
JSON (``Part.to_json``) and restored without the data.

Parsing is iterative (no recursion on input structure), bounded in depth,
number of parts and stored header bytes, tolerant of bare LF line endings,
missing boundaries and garbage, and never raises.
"""

import re

from moxtw.message import charset as _charset
from moxtw.message import imap as _imap
from moxtw.message.encoding import decode_transfer
from moxtw.message.header import (
    decode_words, parse_content_type, parse_disposition, strip_comments, to_str, unfold)

# Parts nested deeper than this (multipart or message/rfc822 levels) are not
# descended into; they are kept as single leaf parts.
MAX_DEPTH = 50
# At most this many parts in one message; further parts are not split out.
MAX_PARTS = 10000
# Header bytes kept per part; the header section is still found beyond this.
MAX_HEADER_BYTES = 1024 * 1024
# Header fields kept per part.
MAX_HEADER_FIELDS = 5000

# RFC 5322 3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_BLANK_LINE = re.compile(rb"\n\r?\n")


class Part:
    """One MIME part: offsets into the message data plus its parsed MIME fields.

    ``headers`` holds (name, value) with the value as written after the colon
    (folding and leading space kept), so ``name + ":" + value + CRLF`` gives
    back each field. After ``from_json`` the headers are empty until
    ``load_headers`` is called with the message data; the MIME fields, offsets
    and the envelope of message parts are restored without it.
    """

    __slots__ = (
        "header_offset", "body_offset", "end_offset", "_headers", "_by_name", "media_type",
        "media_subtype", "params", "content_id", "content_description",
        "content_transfer_encoding", "content_md5", "disposition",
        "disposition_params", "language", "location", "parts", "message",
        "lines", "_envelope",
    )

    def __init__(self, header_offset=0, body_offset=0, end_offset=0):
        self.header_offset = header_offset
        self.body_offset = body_offset
        self.end_offset = end_offset
        self._headers = []
        self._by_name = None
        self.media_type = "text"
        self.media_subtype = "plain"
        self.params = {}
        self.content_id = None
        self.content_description = None
        self.content_transfer_encoding = "7bit"
        self.content_md5 = None
        self.disposition = None
        self.disposition_params = {}
        self.language = []
        self.location = None
        self.parts = []
        self.message = None
        self.lines = 0
        self._envelope = None

    def __repr__(self):
        return "<Part %s/%s header=%d body=%d end=%d parts=%d%s>" % (
            self.media_type, self.media_subtype, self.header_offset, self.body_offset,
            self.end_offset, len(self.parts), " message" if self.message else "")

    @property
    def size(self):
        """Body size in bytes."""
        return self.end_offset - self.body_offset

    # Headers.

    @property
    def headers(self):
        return self._headers

    @headers.setter
    def headers(self, headers):
        self._headers = headers
        self._by_name = None

    def _values(self, name):
        by_name = self._by_name
        if by_name is None:
            # Built once: summary, envelope and message authentication look up dozens of
            # fields per message.
            by_name = self._by_name = {}
            for hname, value in self._headers:
                by_name.setdefault(hname.lower(), []).append(value)
        return by_name.get(name.lower(), ())

    def header_raw(self, name):
        """First field with this name (case-insensitive): value bytes as written,
        folding kept, surrounding whitespace stripped; None when absent."""
        values = self._values(name)
        return values[0].strip(b" \t\r\n") if values else None

    def header_values_raw(self, name):
        """All fields with this name, as for ``header_raw``."""
        return [value.strip(b" \t\r\n") for value in self._values(name)]

    def header(self, name):
        """First field with this name, unfolded and RFC 2047 decoded; None when absent."""
        value = self.header_raw(name)
        if value is None:
            return None
        return decode_words(unfold(value))

    def header_all(self, name):
        """All fields with this name, unfolded and RFC 2047 decoded."""
        return [decode_words(unfold(v)) for v in self.header_values_raw(name)]

    def load_headers(self, data):
        """Parse this part's header fields again from the message data (after from_json)."""
        try:
            _parse_header_section(data, self, self.header_offset, self.body_offset)
        except Exception:
            self.headers = []
        self._envelope = None

    # Bodies.

    def decoded_body(self, data):
        """The body with its Content-Transfer-Encoding undone; tolerant, never raises."""
        try:
            return decode_transfer(data[self.body_offset:self.end_offset], self.content_transfer_encoding)
        except Exception:
            return data[self.body_offset:self.end_offset]

    def text(self, data):
        """The decoded body as str, using the charset parameter with fallbacks."""
        return _charset.decode(self.decoded_body(data), self.params.get("charset"))

    def filename(self):
        """Attachment file name from Content-Disposition or Content-Type, decoded; "" if none."""
        name = self.disposition_params.get("filename") or self.params.get("name") or ""
        return decode_words(name)

    def is_multipart(self):
        return self.media_type == "multipart" and bool(self.parts)

    # Navigation.

    def walk(self):
        """All parts depth-first in document order, this one first (no recursion)."""
        stack = [self]
        while stack:
            p = stack.pop()
            yield p
            if p.message is not None:
                stack.append(p.message)
            stack.extend(reversed(p.parts))

    def part_by_path(self, path):
        """The part for IMAP section numbers (RFC 9051 6.4.5), 1-based; None if absent.

        A non-multipart part has only part 1, itself. After the first number, a
        message/rfc822 part is stepped into: its numbers address the parts of
        the embedded message (the embedded message itself when that is not
        multipart). For HEADER/TEXT of a message/rfc822 section, use the
        returned part's ``message``.
        """
        p = self
        at_message = True  # p is a message (not a body part) whose part 1 may be its body
        for idx, n in enumerate(path):
            if idx > 0 and p.message is not None:
                p = p.message
                at_message = True
            if p.is_multipart():
                if not 1 <= n <= len(p.parts):
                    return None
                p = p.parts[n - 1]
            elif n != 1 or not at_message:
                return None
            at_message = False
        return p

    # IMAP.

    def envelope(self):
        """IMAP ENVELOPE (RFC 9051 7.5.2) of this part's header as nested lists."""
        if self._envelope is None:
            # Computed once; after from_json it is the cached value.
            self._envelope = _imap.envelope(self)
        return self._envelope

    def bodystructure(self, extended=True):
        """IMAP BODYSTRUCTURE (extended) or BODY (not extended), RFC 9051 7.5.2."""
        return _imap.bodystructure(self, extended)

    # Cache.

    def to_json(self):
        """Compact JSON-able dict of the tree: offsets, MIME fields, envelopes of messages."""
        return self._to_json(True)

    def _to_json(self, is_message):
        d = {"h": self.header_offset, "b": self.body_offset, "e": self.end_offset}
        if (self.media_type, self.media_subtype) != ("text", "plain"):
            d["t"] = self.media_type + "/" + self.media_subtype
        if self.params:
            d["p"] = self.params
        for key, value in (("id", self.content_id), ("ds", self.content_description),
                           ("md5", self.content_md5), ("dp", self.disposition),
                           ("lc", self.location)):
            if value is not None:
                d[key] = value
        if self.content_transfer_encoding != "7bit":
            d["te"] = self.content_transfer_encoding
        if self.disposition_params:
            d["dpp"] = self.disposition_params
        if self.language:
            d["lg"] = self.language
        if self.lines:
            d["l"] = self.lines
        if self.parts:
            d["c"] = [c._to_json(False) for c in self.parts]
        if self.message is not None:
            d["m"] = self.message._to_json(True)
        if is_message:
            d["v"] = self.envelope()
        return d

    @classmethod
    def from_json(cls, d, _depth=0):
        """Restore a tree made by ``to_json``."""
        p = cls(d.get("h", 0), d.get("b", 0), d.get("e", 0))
        media = d.get("t", "text/plain")
        p.media_type, _, p.media_subtype = media.partition("/")
        p.params = dict(d.get("p", {}))
        p.content_id = d.get("id")
        p.content_description = d.get("ds")
        p.content_md5 = d.get("md5")
        p.disposition = d.get("dp")
        p.location = d.get("lc")
        p.content_transfer_encoding = d.get("te", "7bit")
        p.disposition_params = dict(d.get("dpp", {}))
        p.language = list(d.get("lg", []))
        p.lines = d.get("l", 0)
        p._envelope = d.get("v")
        if _depth < 2 * MAX_DEPTH + 2:
            p.parts = [cls.from_json(c, _depth + 1) for c in d.get("c", [])]
            if "m" in d:
                p.message = cls.from_json(d["m"], _depth + 1)
        return p


def _parse_header_section(data, part, start, end):
    """Find the header section of a part in data[start:end] and parse its fields.

    Sets part.headers and part.body_offset. The header section ends at an
    empty line (RFC 5322 2.1) or at the first line that is neither a field nor
    a continuation; then the body starts at that line.
    """
    headers = []
    stored = 0
    pos = start
    cur = None  # [name, value_start, value_end]
    body = end
    while pos < end:
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            line_end = content_end = end
        else:
            line_end = nl + 1
            content_end = nl
        if content_end > pos and data[content_end - 1] == 0x0D:
            content_end -= 1
        if content_end == pos:
            body = line_end
            break
        first = data[pos]
        if first == 0x20 or first == 0x09:
            # RFC 5322 2.2.3: folded continuation of the previous field.
            if cur is None:
                body = pos
                break
            cur[2] = content_end
            pos = line_end
            if cur[2] - cur[1] > MAX_HEADER_BYTES - stored:
                # One huge folded field: keep its start, skip to the body.
                stored += _store(data, headers, cur, MAX_HEADER_BYTES - stored)
                cur = None
                body = _skip_to_blank_line(data, pos, start, end)
                break
            continue
        colon = data.find(b":", pos, content_end)
        if colon <= pos:
            body = pos
            break
        name = data[pos:colon].rstrip(b" \t")  # RFC 5322 4.5: obs WSP before ":"
        if not _FIELD_NAME.fullmatch(name):
            body = pos
            break
        if cur is not None:
            stored += _store(data, headers, cur, MAX_HEADER_BYTES - stored)
        if len(headers) >= MAX_HEADER_FIELDS or stored >= MAX_HEADER_BYTES:
            # Limits reached: keep what we have, find the end of the section fast.
            cur = None
            body = _skip_to_blank_line(data, pos, start, end)
            break
        cur = [name.decode("ascii"), colon + 1, content_end]
        pos = line_end
    if cur is not None and stored < MAX_HEADER_BYTES and len(headers) < MAX_HEADER_FIELDS:
        _store(data, headers, cur, MAX_HEADER_BYTES - stored)
    part.headers = headers
    part.body_offset = body


def _skip_to_blank_line(data, pos, start, end):
    """Offset after the next empty line at or after line start pos, else end."""
    if pos >= end:
        return end
    # pos is at a line start: that line may itself be the empty one.
    if data[pos] == 0x0A:
        return pos + 1
    if data.startswith(b"\r\n", pos, end):
        return pos + 2
    m = _BLANK_LINE.search(data, pos - 1 if pos > start else pos, end)
    return m.end() if m else end


def _store(data, headers, cur, budget):
    name, vstart, vend = cur
    if vend - vstart > budget:
        vend = vstart + max(budget, 0)
    headers.append((name, data[vstart:vend]))
    return len(name) + 1 + vend - vstart


def _first_token(value):
    if value is None:
        return None
    s = strip_comments(to_str(unfold(value))).strip()
    return s.split(None, 1)[0].lower() if s else None


def _raw_str(part, name):
    value = part.header_raw(name)
    if value is None:
        return None
    return unfold(value).decode("utf-8", "replace")


def _apply_mime(part, in_digest):
    """Fill in the MIME fields from the headers (RFC 2045, RFC 2183, RFC 3066, RFC 2557)."""
    ct = part.header_raw("content-type")
    parsed = parse_content_type(unfold(ct)) if ct is not None else None
    if parsed is not None:
        part.media_type, part.media_subtype, part.params = parsed
    elif in_digest and ct is None:
        # RFC 2046 5.1.5: in a digest, the default is message/rfc822.
        part.media_type, part.media_subtype, part.params = "message", "rfc822", {}
    else:
        # RFC 2045 5.2: missing or invalid means text/plain; charset=us-ascii.
        part.media_type, part.media_subtype, part.params = "text", "plain", {"charset": "us-ascii"}
    part.content_transfer_encoding = _first_token(part.header_raw("content-transfer-encoding")) or "7bit"
    part.content_id = _raw_str(part, "content-id")
    part.content_description = _raw_str(part, "content-description")
    part.content_md5 = _raw_str(part, "content-md5")
    part.location = _raw_str(part, "content-location")
    disp = part.header_raw("content-disposition")
    if disp is not None:
        parsed = parse_disposition(unfold(disp))
        if parsed is not None:
            part.disposition, part.disposition_params = parsed
    lang = part.header_raw("content-language")
    if lang is not None:
        # RFC 3282 2: Content-Language is a comma-separated list of tags.
        s = strip_comments(to_str(unfold(lang)))
        part.language = [t.strip() for t in s.split(",") if t.strip()][:100]


def _count_lines(data, start, end):
    if end <= start:
        return 0
    n = data.count(b"\n", start, end)
    if data[end - 1] != 0x0A:
        n += 1  # A last line without line ending still counts.
    return n


def _delimiters(data, start, end, boundary):
    """Yield (line_start, line_end, closing) for boundary delimiter lines in data[start:end].

    RFC 2046 5.1.1: a delimiter line is "--" boundary at the start of a line,
    optionally "--" for the close delimiter, then optional linear whitespace.
    """
    marker = b"--" + boundary
    mlen = len(marker)
    pos = start
    while True:
        i = data.find(marker, pos, end)
        if i < 0:
            return
        pos = i + 1
        if i != start and data[i - 1] != 0x0A:
            continue
        j = i + mlen
        closing = data.startswith(b"--", j, end)
        if closing:
            j += 2
        while j < end and data[j] in (0x20, 0x09):
            j += 1
        if j >= end:
            line_end = end
        elif data[j] == 0x0A:
            line_end = j + 1
        elif data[j] == 0x0D and (j + 1 == end or data[j + 1] == 0x0A):
            line_end = min(j + 2, end)
        else:
            continue
        yield i, line_end, closing
        pos = line_end


def _split_multipart(data, part, budget):
    """Return (start, end) regions of the body parts of a multipart part."""
    boundary = part.params.get("boundary", "")
    regions = []
    if boundary:
        b = boundary.encode("utf-8", "surrogateescape")
        start, end = part.body_offset, part.end_offset
        current = None
        for line_start, line_end, closing in _delimiters(data, start, end, b):
            if current is not None:
                # RFC 2046 5.1.1: the CRLF before the delimiter belongs to it.
                pend = line_start
                if pend > current and data[pend - 1] == 0x0A:
                    pend -= 1
                    if pend > current and data[pend - 1] == 0x0D:
                        pend -= 1
                regions.append((current, pend))
                current = None
            if closing or len(regions) >= budget:
                break
            current = line_end
        if current is not None:
            # No close delimiter: the last part runs to the end.
            regions.append((current, end))
    return regions


def parse(data):
    """Parse a message into its Part tree; never raises."""
    if not isinstance(data, bytes):
        try:
            data = bytes(data)
        except Exception:
            data = str(data).encode("utf-8", "surrogateescape")
    try:
        return _parse(data)
    except Exception:
        # Last line of defence: the parser is written not to raise, but a
        # delivery must never fail on a malformed message.
        part = Part(0, 0, len(data))
        part.params = {"charset": "us-ascii"}
        part.lines = _count_lines(data, 0, len(data))
        return part


def _parse(data):
    root = Part(0, 0, len(data))
    count = 1
    # (part, depth, in_digest, implicit): the part's offsets are its region.
    stack = [(root, 0, False, False)]
    while stack:
        part, depth, in_digest, implicit = stack.pop()
        if implicit:
            part.params = {"charset": "us-ascii"}
        else:
            _parse_header_section(data, part, part.header_offset, part.end_offset)
            _apply_mime(part, in_digest)
        mt = part.media_type
        if mt == "text" or mt == "message":
            part.lines = _count_lines(data, part.body_offset, part.end_offset)
        if depth >= MAX_DEPTH or count >= MAX_PARTS:
            continue
        if mt == "multipart":
            regions = _split_multipart(data, part, MAX_PARTS - count)
            if regions:
                digest = part.media_subtype == "digest"
                for start, end in regions:
                    part.parts.append(Part(start, start, end))
                for child in reversed(part.parts):
                    stack.append((child, depth + 1, digest, False))
            else:
                # No boundary, or it never occurs: the body is one text part,
                # so the tree stays a valid multipart for IMAP.
                child = Part(part.body_offset, part.body_offset, part.end_offset)
                part.parts.append(child)
                stack.append((child, depth + 1, False, True))
            count += len(part.parts)
        elif mt == "message" and part.media_subtype in ("rfc822", "global"):
            # RFC 2046 5.2.1 / RFC 6532 3.5: the body is a complete message.
            part.message = Part(part.body_offset, part.body_offset, part.end_offset)
            stack.append((part.message, depth + 1, False, False))
            count += 1
    return root
