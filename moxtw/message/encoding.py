"""Content-Transfer-Encoding decoding (RFC 2045 6), tolerant of broken input.

Base64 with missing padding, line noise or stray characters is decoded as far
as it goes; quoted-printable with invalid escapes keeps them literally. Neither
function raises.
"""

import binascii
import re

_B64_KEEP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_DELETE = bytes(c for c in range(256) if c not in _B64_KEEP)
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def decode_base64(data):
    """Decode base64, ignoring characters outside the alphabet and bad padding."""
    if isinstance(data, str):
        data = data.encode("ascii", "ignore")
    # RFC 2045 6.8: characters outside the alphabet are ignored. Padding ends
    # a block; senders that concatenate padded blocks get each one decoded.
    clean = data.translate(_URLSAFE, _B64_DELETE)
    if b"=" not in clean:
        return _decode_block(clean)
    return b"".join(_decode_block(block) for block in clean.split(b"=") if block)


def _decode_block(clean):
    rem = len(clean) % 4
    if rem == 1:
        # A lone sextet carries no complete octet.
        clean = clean[:-1]
    elif rem:
        clean += b"=" * (4 - rem)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


_QP_SOFT = re.compile(rb"=[ \t]*\r?\n")
_QP_TRAILING = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def decode_quoted_printable(data):
    """Decode quoted-printable (RFC 2045 6.7); invalid escapes are kept as is."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    # RFC 2045 6.7 rule 5: soft line breaks, with transport-added whitespace
    # tolerated before the line end.
    data = _QP_SOFT.sub(b"", data)
    # RFC 2045 6.7 rule 3: whitespace at the end of an encoded line was added in
    # transport and is deleted (encoded whitespace, "=20", stays).
    data = _QP_TRAILING.sub(b"", data)
    try:
        return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return data


def decode_transfer(data, cte):
    """Decode a body given its lowercase Content-Transfer-Encoding."""
    if cte == "base64":
        return decode_base64(data)
    if cte == "quoted-printable":
        return decode_quoted_printable(data)
    return data
