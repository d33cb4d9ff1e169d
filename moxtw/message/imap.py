"""IMAP ENVELOPE and BODYSTRUCTURE values of a parsed message, and their rendering.

Builds the values of RFC 9051 7.5.2 (and RFC 3501 7.4.2, same shape) from a
``Part`` tree, following the formal syntax of RFC 9051 9 (envelope, address,
body-type-1part, body-type-mpart, body-ext-1part, body-ext-mpart), and renders
them as IMAP syntax (``format_*``; FETCH uses these, and the store caches the
rendered ENVELOPE).

Values are JSON-able nested Python, so they can be cached in the index and
rendered by the IMAP server: None is NIL, str a string (quoted or literal is
the renderer's choice), int a number, list a parenthesized list.

Conventions chosen (RFC 9051 leaves case to the server): media type, subtype,
Content-Transfer-Encoding, disposition type and parameter names are sent in
upper case ("TEXT" "PLAIN" ("CHARSET" "utf-8") ... "BASE64"); parameter values
as sent by the author, with RFC 2231 continuations and charsets decoded to a
single (possibly non-ASCII) value. Envelope strings and Content-ID,
-Description, -MD5, -Location are the unfolded header values as written
(RFC 2047 words not decoded), decoded as UTF-8 with replacement characters.
"""

from moxtw.message.address import RawGroup, parse_raw
from moxtw.message.header import unfold


def _raw(part, name):
    value = part.header_raw(name)
    if value is None:
        return None
    return unfold(value).decode("utf-8", "replace")


def _addresses(part, name):
    """RFC 9051 9: "(" 1*address ")" / nil, with group markers (RFC 9051 7.5.2)."""
    value = _raw(part, name)
    if value is None:
        return None
    out = []
    for item in parse_raw(value):
        if isinstance(item, RawGroup):
            # Group start: NIL NIL group-name NIL; group end: all NIL.
            out.append([None, None, item.name, None])
            for mb in item.members:
                out.append(_address(mb))
            out.append([None, None, None, None])
        else:
            out.append(_address(item))
    return out or None


def _address(mb):
    # address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")".
    # A missing domain is sent as "" rather than NIL: NIL host marks groups.
    return [mb.name or None, mb.route or None, mb.localpart, mb.domain]


def envelope(part):
    """ENVELOPE: date subject from sender reply-to to cc bcc in-reply-to message-id."""
    from_ = _addresses(part, "from")
    # RFC 9051 7.5.2: absent or empty Sender and Reply-To take the From value.
    sender = _addresses(part, "sender") or from_
    reply_to = _addresses(part, "reply-to") or from_
    return [
        _raw(part, "date"),
        _raw(part, "subject"),
        from_,
        sender,
        reply_to,
        _addresses(part, "to"),
        _addresses(part, "cc"),
        _addresses(part, "bcc"),
        _raw(part, "in-reply-to"),
        _raw(part, "message-id"),
    ]


def _params(params):
    # body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    if not params:
        return None
    out = []
    for key, value in params.items():
        out.append(key.upper())
        out.append(value)
    return out


def _disposition(part):
    # body-fld-dsp = "(" string SP body-fld-param ")" / nil
    if part.disposition is None:
        return None
    return [part.disposition.upper(), _params(part.disposition_params)]


def _language(part):
    # body-fld-lang = nstring / "(" string *(SP string) ")"
    if not part.language:
        return None
    if len(part.language) == 1:
        return part.language[0]
    return list(part.language)


def bodystructure(part, extended=True):
    """BODYSTRUCTURE when extended, else BODY (no extension data)."""
    if part.media_type == "multipart" and part.parts:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        out = [bodystructure(child, extended) for child in part.parts]
        out.append(part.media_subtype.upper())
        if extended:
            # body-ext-mpart = body-fld-param [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]
            out.extend([_params(part.params), _disposition(part), _language(part), part.location])
        return out
    mtype, subtype = part.media_type.upper(), part.media_subtype.upper()
    is_message = part.message is not None
    if (mtype == "MULTIPART" or (mtype == "MESSAGE" and subtype in ("RFC822", "GLOBAL"))) and not is_message:
        # Not descended into (nesting or part limits): clients expect
        # structure for these types, so present the body as opaque data.
        mtype, subtype = "APPLICATION", "OCTET-STREAM"
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
    out = [mtype, subtype, _params(part.params), part.content_id, part.content_description,
           part.content_transfer_encoding.upper(), part.size]
    if is_message:
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        out.append(part.message.envelope())
        out.append(bodystructure(part.message, extended))
        out.append(part.lines)
    elif mtype == "TEXT":
        # body-type-text = media-text SP body-fields SP body-fld-lines
        out.append(part.lines)
    if extended:
        # body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]
        out.extend([part.content_md5, _disposition(part), _language(part), part.location])
    return out


# Rendering as IMAP syntax (RFC 9051 4.3, 9: string, nstring, literal, literal8), for FETCH
# and for the rendered ENVELOPE the store caches.


def format_literal(data, binary=False):
    """``{n}\\r\\n`` followed by the data; ``~{n}`` (literal8, RFC 3516 4.2) when binary."""
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % len(data) + data


def format_string(value, utf8=False):
    """A string: quoted when that is allowed, else a literal. None gives NIL."""
    if value is None:
        return b"NIL"
    if isinstance(value, bytes):
        raw = value
        try:
            value.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
    else:
        try:
            raw, ok = value.encode("utf-8"), True
        except UnicodeEncodeError:
            raw, ok = value.encode("utf-8", "surrogateescape"), False
    # RFC 9051 9: QUOTED-CHAR is any TEXT-CHAR (no CR, LF, NUL); non-ASCII only as UTF-8
    # when enabled (RFC 9051, RFC 6855 3); otherwise a literal carries it.
    if ok and b"\r" not in raw and b"\n" not in raw and b"\0" not in raw \
            and (utf8 or raw.isascii()):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return format_literal(raw)


def format_value(v, utf8=False):
    """Render a JSON-like value: None NIL, int number, str string, list parenthesized."""
    if v is None:
        return b"NIL"
    if isinstance(v, bool):
        raise TypeError("no IMAP rendering for bool")
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, (str, bytes)):
        return format_string(v, utf8)
    return b"(" + b" ".join(format_value(x, utf8) for x in v) + b")"


def format_envelope(env, utf8=False):
    """Render an ENVELOPE value as made by ``moxtw.message.imap`` (RFC 9051 7.5.2).

    RFC 9051 9: env-from = "(" 1*address ")" / nil: the addresses of a list follow each
    other without separating spaces.
    """
    if env is None:
        return b"NIL"
    items = []
    for i, v in enumerate(env):
        if 2 <= i <= 7 and isinstance(v, list):
            items.append(b"(" + b"".join(format_value(a, utf8) for a in v) + b")")
        else:
            items.append(format_value(v, utf8))
    return b"(" + b" ".join(items) + b")"


def format_body_structure(bs, utf8=False):
    """Render a BODY/BODYSTRUCTURE value as made by ``moxtw.message.imap``.

    RFC 9051 9: body-type-mpart = 1*body SP media-subtype ...: the bodies of a multipart
    follow each other without separating spaces; and the body inside a message/rfc822
    part is itself a body.
    """
    if bs and isinstance(bs[0], list):
        n = 0
        while n < len(bs) and isinstance(bs[n], list):
            n += 1
        rest = b"".join(b" " + format_value(x, utf8) for x in bs[n:])
        return b"(" + b"".join(format_body_structure(c, utf8) for c in bs[:n]) + rest + b")"
    if (len(bs) > 9 and isinstance(bs[0], str) and isinstance(bs[1], str)
            and bs[0].upper() == "MESSAGE" and bs[1].upper() in ("RFC822", "GLOBAL")
            and isinstance(bs[8], list)):
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        items = [format_value(x, utf8) for x in bs]
        items[7] = format_envelope(bs[7], utf8)
        items[8] = format_body_structure(bs[8], utf8)
        return b"(" + b" ".join(items) + b")"
    return format_value(bs, utf8)
