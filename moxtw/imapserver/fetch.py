"""Rendering of IMAP FETCH responses for one message.

Given a stored ``Message``, the parsed FETCH items (``types.FetchAtt``) and a way to open
the message file, ``render_fetch`` builds the complete untagged ``* n FETCH (...)``
response. Body sections are served byte-exact from the file by the offsets of the cached
part tree (``moxtw.message.Part``): only the bytes of the asked section, and of a partial
``<offset.count>`` only that range, are read. BINARY sections are decoded (base64,
quoted-printable) from the part's bytes.

The function does blocking file reads; callers run it off the reactor thread.

Setting \\Seen: a non-PEEK BODY[...], BINARY[...], RFC822 or RFC822.TEXT implicitly sets
\\Seen (RFC 9051 6.4.5). Two ways to use this module:

- Render, then store: ``render_fetch`` reports ``sets_seen`` and already includes FLAGS
  with \\Seen added in the response (RFC 9051 6.4.5: changed flags SHOULD be included);
  the caller stores \\Seen afterwards.
- Store, then render (needed with CONDSTORE, where the response must carry the new
  MODSEQ): call ``implies_seen(msg, atts, ctx)`` first, store \\Seen, and render the
  updated message with ``include_flags=True`` so FLAGS is in the response.

Items the index rows answer alone (flags, dates, sizes, PREVIEW, ENVELOPE and
BODYSTRUCTURE: ``ROW_ITEMS``) are rendered by ``RowRenderer`` from ``FetchRow`` tuples
(``Account.fetch_rows``), the fast path for the listings clients ask for whole mailboxes;
the ENVELOPE comes rendered from the index. Its responses are byte for byte those of
``render_fetch``.

RFCs: 9051 6.4.5 and 7.5.2 (FETCH, IMAP4rev2), 3501 (IMAP4rev1), 3516 (BINARY),
7162 (CONDSTORE MODSEQ), 8970 (PREVIEW), 8514 (SAVEDATE), 6855 (UTF8=ACCEPT strings).
"""

import json
from dataclasses import dataclass

from moxtw.imapserver.types import Section
from moxtw.message.encoding import decode_base64, decode_quoted_printable
from moxtw.message.imap import format_body_structure as body_structure
from moxtw.message.imap import format_envelope as envelope
from moxtw.message.imap import format_literal as literal
from moxtw.message.imap import format_string as string
from moxtw.message.imap import format_value as value
from moxtw.message.part import Part
from moxtw.message.part import parse as parse_message
from moxtw.store.model import CANONICAL, FLAG_COLUMNS, from_unix

SEEN = "\\Seen"
# Response code for BINARY of a section in an unknown transfer encoding (RFC 3516 4.3).
UNKNOWN_CTE = "UNKNOWN-CTE"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 9051 6.4.5: FETCH macros.
_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
# RFC 2045 6.1: identity encodings; base64 and quoted-printable are decoded.
_IDENTITY_CTE = {"", "7bit", "8bit", "binary"}
_DECODERS = {"base64": decode_base64, "quoted-printable": decode_quoted_printable}
# RFC 9051 9: ATOM-CHAR excludes atom-specials (and "]" is resp-special).
_ATOM_SPECIALS = set(b'(){ %*"\\]')


@dataclass
class FetchContext:
    """Session state that changes how FETCH responses look."""

    utf8: bool = False  # IMAP4rev2 or UTF8=ACCEPT enabled: UTF-8 allowed in quoted strings
    rev2: bool = False  # IMAP4rev2 enabled
    condstore: bool = False  # CONDSTORE/QRESYNC enabled: MODSEQ in every FETCH response
    readonly: bool = False  # mailbox selected with EXAMINE: \Seen is never set
    # Body sections larger than this are not read here but returned as FileRange parts,
    # for the caller to stream from the file (None: always read).
    stream_threshold: object = None
    # UIDs \Recent in this session (IMAP4rev1, RFC 3501 2.3.2): FLAGS include \Recent.
    recent: frozenset = frozenset()
    # UIDONLY enabled (RFC 9586 3.3): "* uid UIDFETCH (...)" without the UID item.
    uidonly: bool = False


def fetch_head(seq, uid, uidonly):
    """The start of an untagged FETCH response: "* seq FETCH (", or with UIDONLY
    (RFC 9586 3.3) "* uid UIDFETCH (", the UID item then being left out."""
    if uidonly:
        return b"* %d UIDFETCH (" % uid
    return b"* %d FETCH (" % seq


@dataclass(frozen=True)
class FileRange:
    """Bytes ``start`` to ``end`` of the message file, to be streamed by the caller."""

    start: int
    end: int


@dataclass
class FetchResult:
    """The rendered response; see the module docstring for ``sets_seen``.

    ``error``: when set (``UNKNOWN_CTE``), ``data`` is empty and the caller answers the
    command with ``NO [error]``.
    """

    data: bytes
    sets_seen: bool = False
    error: object = None
    # When a section is streamed: the response as a list of bytes and FileRange; ``data``
    # is then None.
    parts: object = None


class FetchError(Exception):
    """A FETCH item cannot be answered; ``code`` is the response code."""

    def __init__(self, code, text=""):
        super().__init__(text or code)
        self.code = code


def date_time(dt):
    """RFC 9051 9: date-time, "dd-Mon-yyyy hh:mm:ss +zzzz" (English month names)."""
    if dt is None:
        return b"NIL"
    off = dt.utcoffset()
    minutes = int(off.total_seconds()) // 60 if off is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    s = '"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        dt.day, _MONTHS[dt.month - 1], dt.year, dt.hour, dt.minute, dt.second,
        sign, minutes // 60, minutes % 60)
    return s.encode("ascii")


def _astring(s):
    """An atom when it is one, else a quoted string (header field names in sections)."""
    raw = s.encode("utf-8")
    if raw and raw.isascii() and all(0x20 < c < 0x7F and c not in _ATOM_SPECIALS for c in raw):
        return raw
    return string(s, True)


RECENT = "\\Recent"


def flags_list(flags):
    """RFC 9051 9: flag-list; flags are atoms (backslash flags and keywords)."""
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def _with_seen(flags):
    if SEEN in flags:
        return tuple(flags)
    system = set(f for f in flags if f.startswith("\\")) | {SEEN}
    out = [CANONICAL[c] for c in FLAG_COLUMNS if CANONICAL[c] in system]
    out.extend(f for f in flags if f.startswith("\\") and f not in out)
    out.extend(f for f in flags if not f.startswith("\\"))
    return tuple(out)


def section_spec(section):
    """The section as in the response: "1.2.HEADER.FIELDS (SUBJECT FROM)" (RFC 9051 7.5.2)."""
    if section is None:
        return b""
    items = [b"%d" % n for n in section.part]
    if section.text:
        items.append(section.text.upper().encode("ascii"))
    spec = b".".join(items)
    if section.text.upper() in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        spec += b" (" + b" ".join(_astring(f) for f in section.fields) + b")"
    return spec


# Which items set \Seen.


def _att_name(att):
    return att.name.upper()


def _is_body_fetch(att):
    """True for items that implicitly set \\Seen (RFC 9051 6.4.5)."""
    name = _att_name(att)
    if name in ("RFC822", "RFC822.TEXT"):
        return True
    return name in ("BODY[]", "BINARY[]") and not att.peek


def implies_seen(msg, atts, ctx):
    """Whether fetching ``atts`` sets \\Seen on ``msg``: a non-PEEK body item, a mailbox
    opened read-write and \\Seen not yet set."""
    if ctx.readonly or SEEN in msg.flags:
        return False
    return any(_is_body_fetch(a) for a in _expand(atts))


def _expand(atts):
    out = []
    for att in atts:
        macro = _MACROS.get(_att_name(att))
        if macro is None:
            out.append(att)
        else:
            out.extend(type(att)(name) for name in macro)
    return out


# Reading sections from the file.


class _Reader:
    """Opens the message file on first use and reads byte ranges from it."""

    def __init__(self, open_file):
        self._open = open_file
        self._file = None

    def read(self, start, end):
        if end <= start:
            return b""
        if self._file is None:
            self._file = self._open()
        self._file.seek(start)
        chunks = []
        left = end - start
        while left > 0:
            chunk = self._file.read(left)
            if not chunk:
                break  # File shorter than the index says: give what there is.
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _filter_header(header, names, keep):
    """Fields of a header section whose names are (keep=True) or are not in ``names``.

    RFC 9051 6.4.5: matching is ASCII case-insensitive, fields keep their order and
    folding, and the blank line ending the header is included when the message has one.
    """
    lines = header.splitlines(keepends=True)
    blank = b""
    if lines and lines[-1] in (b"\r\n", b"\n"):
        blank = lines.pop()
    wanted = set(n.upper() for n in names)
    out = []
    include = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            # RFC 5322 2.2.3: continuation of the field before.
            if include:
                out.append(line)
            continue
        name, colon, _ = line.partition(b":")
        name = name.rstrip(b" \t").decode("ascii", "replace").upper() if colon else None
        include = (name in wanted) == keep if name is not None else not keep
        if include:
            out.append(line)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\r\n"
    return b"".join(out) + blank


def _section_range(root, section):
    """Resolve a BODY section: ("range", start, end), ("header", start, end, keep), or None
    for a part that does not exist (RFC 9051 6.4.5 rules for part numbers)."""
    text = section.text.upper()
    if not section.part:
        part = root
        message = root
    else:
        part = root.part_by_path(list(section.part))
        if part is None:
            return None
        # RFC 9051 6.4.5: HEADER and TEXT after part numbers refer to the message
        # embedded in a message/rfc822 part.
        message = part.message
    if text == "":
        if not section.part:
            return ("range", root.header_offset, root.end_offset)
        return ("range", part.body_offset, part.end_offset)
    if text == "MIME":
        # RFC 9051 6.4.5: the MIME header of the part itself.
        return ("range", part.header_offset, part.body_offset)
    if message is None:
        return None
    if text == "HEADER":
        return ("range", message.header_offset, message.body_offset)
    if text == "TEXT":
        return ("range", message.body_offset, message.end_offset)
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return ("header", message.header_offset, message.body_offset, text == "HEADER.FIELDS")
    raise ValueError("unknown section text %r" % section.text)


def _clip(start, end, partial):
    """Apply <offset.count> to a byte range (RFC 9051 6.4.5): past the end is empty."""
    if partial is None:
        return start, end
    offset, count = partial
    s = min(start + offset, end)
    return s, min(s + count, end)


def _slice(data, partial):
    if partial is None:
        return data
    offset, count = partial
    return data[offset:offset + count]


def _body_section(root, reader, section, partial):
    where = _section_range(root, section)
    if where is None:
        return b""
    if where[0] == "range":
        start, end = _clip(where[1], where[2], partial)
        return reader.read(start, end)
    _, start, end, keep = where
    return _slice(_filter_header(reader.read(start, end), section.fields, keep), partial)


def _binary_data(root, reader, section, partial):
    """Decoded section data (RFC 3516 4.2), or None when the part does not exist."""
    if section is None or not section.part:
        # The whole message, as stored.
        start, end = _clip(root.header_offset, root.end_offset, partial)
        return reader.read(start, end)
    part = root.part_by_path(list(section.part))
    if part is None:
        return None
    if part.message is not None or part.is_multipart():
        return _slice(_binary_body(part, reader), partial)
    cte = (part.content_transfer_encoding or "").lower()
    if cte in _IDENTITY_CTE:
        start, end = _clip(part.body_offset, part.end_offset, partial)
        return reader.read(start, end)
    return _slice(_binary_body(part, reader), partial)


def _binary_body(part, reader):
    """A part's body with every leaf's Content-Transfer-Encoding undone, as Dovecot
    answers BINARY for a message/rfc822 or multipart section: the structure (headers,
    boundaries, preamble, epilogue) is kept, each decoded leaf says "binary" in its
    Content-Transfer-Encoding field."""
    if part.message is not None:
        m = part.message
        return reader.read(part.body_offset, m.header_offset) + _binary_entity(m, reader) + reader.read(
            m.end_offset, part.end_offset)
    if part.is_multipart():
        out, pos = [], part.body_offset
        for child in part.parts:
            out.append(reader.read(pos, child.header_offset))
            out.append(_binary_entity(child, reader))
            pos = child.end_offset
        out.append(reader.read(pos, part.end_offset))
        return b"".join(out)
    cte = (part.content_transfer_encoding or "").lower()
    data = reader.read(part.body_offset, part.end_offset)
    if cte in _IDENTITY_CTE:
        return data
    decode = _DECODERS.get(cte)
    if decode is None:
        # RFC 3516 4.3: the server does not know how to decode this section.
        raise FetchError(UNKNOWN_CTE, "unknown content-transfer-encoding %s" % cte)
    return decode(data)


def _decodable(part):
    return (part.content_transfer_encoding or "").lower() in _DECODERS


def _binary_entity(part, reader):
    """A part inside a BINARY section: a leaf is decoded and marked binary when its
    encoding is one we undo; one we do not know stays as stored (UNKNOWN-CTE is only
    for the section asked, RFC 3516 4.3)."""
    header = reader.read(part.header_offset, part.body_offset)
    leaf = part.message is None and not part.is_multipart()
    if leaf:
        cte = (part.content_transfer_encoding or "").lower()
        if cte in _IDENTITY_CTE or not _decodable(part):
            return header + reader.read(part.body_offset, part.end_offset)
        header = _cte_binary(header)
    return header + _binary_body(part, reader)


def _cte_binary(header):
    """The header section with its Content-Transfer-Encoding field(s) saying binary."""
    out, skipping = [], False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue  # a continuation of the field replaced
        skipping = False
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else None
        if name == b"content-transfer-encoding":
            out.append(b"Content-Transfer-Encoding: binary\r\n")
            skipping = True
            continue
        out.append(line)
    return b"".join(out)


def _binary_size(root, reader, section):
    if section is None or not section.part:
        return root.end_offset - root.header_offset
    part = root.part_by_path(list(section.part))
    if part is None:
        return 0
    cte = (part.content_transfer_encoding or "").lower()
    if cte in _IDENTITY_CTE and part.message is None and not part.is_multipart():
        return part.end_offset - part.body_offset
    return len(_binary_data(root, reader, section, None))


def _root_part(msg):
    try:
        d = json.loads(msg.part_json) if msg.part_json else None
    except ValueError:
        d = None
    if not d:
        # No cached tree: treat the file as one text part without header.
        return Part(0, 0, msg.size)
    return Part.from_json(d)


def section_data(msg, open_file, section, partial):
    """The octets ``BODY[section]<partial>`` returns for ``msg`` (``section`` None: the
    whole message), or None when the section names a part that does not exist; for IMAP
    URLs (RFC 5092) in APPEND CATENATE (RFC 4469). Blocking: reads the file."""
    root = _root_part(msg)
    section = section or Section()
    if section.part and root.part_by_path(list(section.part)) is None:
        return None
    reader = _Reader(open_file)
    try:
        return _body_section(root, reader, section, partial)
    finally:
        reader.close()


def urlfetch_value(msg, open_file, section, partial, params, utf8=False):
    """What URLFETCH answers for a URL naming ``msg`` (bytes), or None when the URL
    cannot be answered (it then gets NIL). ``params`` None: the section's data as
    BODY[] gives it (RFC 4467 7); else a list of BODYPARTSTRUCTURE, BINARY, BODY (RFC
    5524 3), answered as a parenthesised list. Blocking: reads the file."""
    root = _root_part(msg)
    section = section or Section()
    part = root.part_by_path(list(section.part)) if section.part else root
    if part is None:
        return None
    reader = _Reader(open_file)
    structure = part
    try:
        if params is None or "BODY" in params:
            data = literal(_body_section(root, reader, section, partial))
        elif "BINARY" in params:
            if section.text:
                return None  # RFC 5524 3: BINARY is for body parts, not HEADER or TEXT
            try:
                data = _binary_data(root, reader, section, partial)
                if section.part and "BODYPARTSTRUCTURE" in params:
                    structure = _decoded_structure(part, _binary_entity(part, reader))
            except FetchError:
                return None  # RFC 5524 3: a part the server cannot decode gives NIL
            data = literal(data, binary=b"\0" in data)
        else:
            data = None
    finally:
        reader.close()
    if params is None:
        return data
    items = []
    if "BODYPARTSTRUCTURE" in params:
        if section.text:
            return None  # only body parts have a body structure
        items.append(b"BODYPARTSTRUCTURE " + body_structure(structure.bodystructure(extended=True), utf8))
    if data is not None:
        items.append((b"BINARY " if "BINARY" in params else b"BODY ") + data)
    return b"(" + b" ".join(items) + b")"


def _decoded_structure(part, entity):
    """The Part tree of ``part`` as BINARY gives it (``entity``: its MIME header and
    decoded body), for BODYPARTSTRUCTURE beside BINARY (RFC 5524 3): sizes and line
    counts are those of the decoded data, as Dovecot reports them (lines counted as line
    ends), the encodings those of the stored part. The stored tree when the shapes
    differ."""
    converted = parse_message(entity)
    pairs = list(zip(part.walk(), converted.walk()))
    if len(pairs) != sum(1 for _ in part.walk()) or len(pairs) != sum(1 for _ in converted.walk()):
        return part
    for orig, conv in pairs:
        if (orig.media_type, orig.media_subtype) != (conv.media_type, conv.media_subtype):
            return part
    for orig, conv in pairs:
        if conv.message is None and not conv.is_multipart() and conv.media_type in ("text", "message"):
            conv.lines = entity.count(b"\n", conv.body_offset, conv.end_offset)
        conv.content_transfer_encoding = orig.content_transfer_encoding
    return converted


def _body_data(data):
    """Section data as nstring: empty as "", else a literal (RFC 9051 7.5.2)."""
    if not data:
        return b'""'
    return literal(data)


def render_fetch(msg, seq, atts, open_file, ctx, *, include_uid=False, include_flags=False):
    """Render ``* seq FETCH (...)`` for ``msg`` with the items ``atts``.

    ``open_file()`` returns the message file (binary, CRLF); it is opened only when a body
    section is asked. ``include_uid``: UID FETCH, the UID is always included (RFC 9051
    6.4.8). ``include_flags``: include FLAGS even when not asked (after the caller stored
    an implied \\Seen). Returns a FetchResult.
    """
    atts = _expand(atts)
    sets_seen = implies_seen(msg, atts, ctx)
    flags = _with_seen(msg.flags) if sets_seen else tuple(msg.flags)
    if msg.uid in ctx.recent:
        flags += (RECENT,)
    utf8 = ctx.utf8
    items = []
    seen_names = set()
    trees = []  # The part tree, parsed from the index on first use.
    reader = _Reader(open_file)
    streams = {}  # index in items -> FileRange following that item

    def tree():
        if not trees:
            trees.append(_root_part(msg))
        return trees[0]

    def add(name, data):
        if name in seen_names:
            return  # The same item asked twice (e.g. BODY[] and BODY.PEEK[]): once.
        seen_names.add(name)
        items.append(name + b" " + data)

    if ctx.uidonly:
        seen_names.add(b"UID")  # RFC 9586 3.3: the UID is in the response's head
    try:
        if include_uid:
            add(b"UID", b"%d" % msg.uid)
        for att in atts:
            name = _att_name(att)
            if name == "UID":
                add(b"UID", b"%d" % msg.uid)
            elif name == "FLAGS":
                add(b"FLAGS", flags_list(flags))
            elif name == "INTERNALDATE":
                add(b"INTERNALDATE", date_time(msg.received))
            elif name == "SAVEDATE":
                # RFC 8514 4: the date the message was saved in this mailbox.
                add(b"SAVEDATE", date_time(msg.saved))
            elif name == "RFC822.SIZE":
                add(b"RFC822.SIZE", b"%d" % msg.size)
            elif name == "MODSEQ":
                # RFC 7162 3.1.4.1: "MODSEQ" SP "(" mod-sequence-value ")".
                add(b"MODSEQ", b"(%d)" % msg.modseq)
            elif name == "PREVIEW":
                # RFC 8970 3.2: "PREVIEW" SP nstring.
                add(b"PREVIEW", string(msg.preview, utf8))
            elif name == "ENVELOPE":
                cached = msg.row.get("envelope_imap") if msg.row else None
                add(b"ENVELOPE", cached if cached is not None else envelope(msg.envelope, utf8))
            elif name == "BODYSTRUCTURE":
                add(b"BODYSTRUCTURE", body_structure(msg.bodystructure, utf8))
            elif name == "BODY":
                # RFC 9051 7.5.2: BODY is BODYSTRUCTURE without extension data.
                add(b"BODY", body_structure(tree().bodystructure(extended=False), utf8))
            elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
                # RFC 9051 6.4.5 / RFC 3501: RFC822 is BODY[], RFC822.HEADER is
                # BODY.PEEK[HEADER], RFC822.TEXT is BODY[TEXT].
                text = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[name]
                data = _body_section(tree(), reader, Section(text=text), None)
                add(name.encode("ascii"), _body_data(data))
            elif name == "BODY[]" and _streamable(tree(), att, ctx):
                section = att.section or Section()
                start, end = _clip(*_section_range(tree(), section)[1:3], att.partial)
                rname = b"BODY[" + section_spec(section) + b"]"
                if att.partial is not None:
                    rname += b"<%d>" % att.partial[0]
                # A literal header now, the bytes streamed by the caller (RFC 9051 4.3).
                add(rname, b"{%d}\r\n" % (end - start))
                streams[len(items) - 1] = FileRange(start, end)
            elif name == "BODY[]":
                section = att.section or Section()
                data = _body_section(tree(), reader, section, att.partial)
                # RFC 9051 7.5.2: BODY.PEEK is reported as BODY; a partial as <origin>.
                rname = b"BODY[" + section_spec(section) + b"]"
                if att.partial is not None:
                    rname += b"<%d>" % att.partial[0]
                add(rname, _body_data(data))
            elif name == "BINARY[]":
                section = att.section or Section()
                data = _binary_data(tree(), reader, section, att.partial)
                rname = b"BINARY[" + section_spec(section) + b"]"
                if att.partial is not None:
                    rname += b"<%d>" % att.partial[0]
                if not data:
                    # Empty, or a part that does not exist.
                    add(rname, b'""')
                else:
                    # RFC 3516 4.2: literal8 when the decoded data holds NUL octets.
                    add(rname, literal(data, binary=b"\0" in data))
            elif name == "BINARY.SIZE[]":
                section = att.section or Section()
                size = _binary_size(tree(), reader, section)
                add(b"BINARY.SIZE[" + section_spec(section) + b"]", b"%d" % size)
            else:
                raise ValueError("unknown FETCH item %r" % att.name)
        if (sets_seen or include_flags) and b"FLAGS" not in seen_names:
            # RFC 9051 6.4.5: flags changed by an implied \Seen SHOULD be included.
            add(b"FLAGS", flags_list(flags))
        if ctx.condstore and b"MODSEQ" not in seen_names:
            # RFC 7162 3.1.4.1: with CONDSTORE enabled, FETCH responses carry MODSEQ.
            add(b"MODSEQ", b"(%d)" % msg.modseq)
    except FetchError as e:
        return FetchResult(b"", False, e.code)
    finally:
        reader.close()
    if streams:
        parts = [fetch_head(seq, msg.uid, ctx.uidonly)]
        for i, item in enumerate(items):
            parts.append((b" " if i else b"") + item)
            if i in streams:
                parts.append(streams[i])
        parts.append(b")\r\n")
        return FetchResult(None, sets_seen, None, parts)
    data = fetch_head(seq, msg.uid, ctx.uidonly) + b" ".join(items) + b")\r\n"
    return FetchResult(data, sets_seen, None)


def _streamable(root, att, ctx):
    """Whether a BODY[] item is a plain byte range big enough to stream."""
    if ctx.stream_threshold is None:
        return False
    where = _section_range(root, att.section or Section())
    if where is None or where[0] != "range":
        return False
    start, end = _clip(where[1], where[2], att.partial)
    return end - start > ctx.stream_threshold


# FETCH items answered from index rows (Account.fetch_rows), without part tree or file.
ROW_ITEMS = frozenset({
    "UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE", "SAVEDATE", "PREVIEW", "ENVELOPE",
    "BODYSTRUCTURE", "FAST", "ALL",
})
# The FetchRow fields each item needs.
_ROW_FIELDS = {
    "INTERNALDATE": ("received", "received_tz"),
    "SAVEDATE": ("saved",),
    "RFC822.SIZE": ("size",),
    "PREVIEW": ("preview",),
    "ENVELOPE": ("envelope_imap", "envelope_json"),
    "BODYSTRUCTURE": ("bodystructure_json",),
}


class RowRenderer:
    """Renders ``* n FETCH (...)`` for items of ROW_ITEMS from FetchRow tuples.

    ``include_uid``: UID FETCH (RFC 9051 6.4.8). With CONDSTORE enabled, MODSEQ is added
    (RFC 7162 3.1.4.1). None of these items sets \\Seen."""

    def __init__(self, atts, ctx, include_uid=False):
        names = ["UID"] if include_uid else []
        for att in _expand(atts):
            name = _att_name(att)
            if name not in ROW_ITEMS:
                raise ValueError("not an index row item: %r" % att.name)
            if name not in names:
                names.append(name)
        self.uidonly = ctx.uidonly
        if ctx.uidonly and "UID" in names:
            names.remove("UID")  # RFC 9586 3.3: in the response's head
        if ctx.condstore and "MODSEQ" not in names:
            names.append("MODSEQ")
        self.names = tuple(names)
        self.utf8 = ctx.utf8
        self.recent = ctx.recent
        self._flags = {}  # rendered FLAGS by flags: most messages share a few
        # The FetchRow fields to ask Account.fetch_rows for.
        self.fields = tuple(f for n in names for f in _ROW_FIELDS.get(n, ()))

    def render(self, row, seq):
        utf8 = self.utf8
        items = []
        for name in self.names:
            if name == "UID":
                items.append(b"UID %d" % row.uid)
            elif name == "FLAGS":
                key = row.flags + (RECENT,) if row.uid in self.recent else row.flags
                flags = self._flags.get(key)
                if flags is None:
                    flags = self._flags[key] = b"FLAGS " + flags_list(key)
                items.append(flags)
            elif name == "MODSEQ":
                items.append(b"MODSEQ (%d)" % row.modseq)
            elif name == "ENVELOPE":
                env = row.envelope_imap
                if env is None:
                    env = envelope(json.loads(row.envelope_json), utf8)
                items.append(b"ENVELOPE " + env)
            elif name == "INTERNALDATE":
                items.append(b"INTERNALDATE " + date_time(from_unix(row.received, row.received_tz)))
            elif name == "RFC822.SIZE":
                items.append(b"RFC822.SIZE %d" % row.size)
            elif name == "SAVEDATE":
                items.append(b"SAVEDATE " + date_time(from_unix(row.saved)))
            elif name == "PREVIEW":
                items.append(b"PREVIEW " + string(row.preview, utf8))
            else:  # BODYSTRUCTURE
                items.append(b"BODYSTRUCTURE " + body_structure(json.loads(row.bodystructure_json), utf8))
        return fetch_head(seq, row.uid, self.uidonly) + b" ".join(items) + b")\r\n"

    def render_all(self, jobs):
        """One buffer with the responses for [(FetchRow, seq)]."""
        render = self.render
        return b"".join([render(row, seq) for row, seq in jobs])


__all__ = [
    "FetchContext", "FetchError", "FetchResult", "FileRange", "ROW_ITEMS", "RowRenderer",
    "UNKNOWN_CTE", "body_structure",
    "date_time", "envelope", "flags_list", "implies_seen", "literal", "render_fetch",
    "section_data", "section_spec", "string", "value",
]
