"""Binary parts of a message made storable as text.

RFC 3516 4.4: a message APPENDed as a literal8 may carry parts with
Content-Transfer-Encoding binary: bare LFs, lone CRs and NULs that are data, not line
ends. Stored as they are, the line-ending repair of the store would change them, and
BODY[] could not be sent at all (a literal cannot hold NUL, RFC 9051 4.3). So, as
Dovecot does, such parts are re-encoded as base64 before the message is stored: BINARY[]
decodes them back byte-exact, BODY[] is plain text, and the rest of the message is left
as it was.
"""

import base64
import re

from moxtw.message.part import parse

# A header field line starting with the field name, any case (RFC 5322 2.2).
_CTE_FIELD = re.compile(rb"content-transfer-encoding[ \t]*:", re.IGNORECASE)


def _convertible(part, data):
    if part.parts or part.message is not None:
        return False  # containers: their leaves are converted
    cte = part.content_transfer_encoding
    if cte == "binary":
        return True
    # RFC 2045 2.8: 7bit and 8bit data never hold NUL; a part that does is binary.
    return cte not in ("base64", "quoted-printable") and b"\0" in data[part.body_offset:part.end_offset]


def _header_without_cte(header):
    """The header section's bytes (without the blank line) with every
    Content-Transfer-Encoding field, and its continuation lines, removed."""
    out = []
    skipping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue  # RFC 5322 2.2.3: folded continuation of the removed field
        skipping = bool(_CTE_FIELD.match(line))
        if not skipping:
            out.append(line)
    text = b"".join(out)
    if text and not text.endswith(b"\n"):
        text += b"\r\n"
    return text


def _encoded(data):
    # RFC 2045 6.8: lines of at most 76 characters.
    b64 = base64.b64encode(data)
    return b"".join(b64[i:i + 76] + b"\r\n" for i in range(0, len(b64), 76))


def binary_parts_as_base64(data):
    """``data`` with its binary leaf parts re-encoded as base64; the same object when
    there are none."""
    root = parse(data)
    todo = [p for p in root.walk() if _convertible(p, data)]
    if not todo:
        return data
    todo.sort(key=lambda p: p.header_offset)
    out = []
    pos = 0
    for part in todo:
        body = data[part.body_offset:part.end_offset]
        header = data[part.header_offset:part.body_offset]
        # The header section ends in its blank line (or, for a part without headers,
        # is empty); the blank line is written again after the new field.
        stripped = re.sub(rb"\r?\n\r?\n\Z", b"\n", header) if header.strip() else b""
        new_header = _header_without_cte(stripped) + b"Content-Transfer-Encoding: base64\r\n\r\n"
        out.append(data[pos:part.header_offset])
        out.append(new_header)
        out.append(_encoded(body).rstrip(b"\r\n") if part.end_offset < len(data) else _encoded(body))
        pos = part.end_offset
    out.append(data[pos:])
    return b"".join(out)
