"""What submission does to a message before it is queued (RFC 6409 8).

Missing Date and Message-ID header fields are added (RFC 6409 8.2, 8.3), Bcc fields are
removed from the transmitted copy (RFC 5322 3.6.3 leaves the choice to the submitter;
sending them on would disclose the blind recipients), and the From and Sender addresses
are returned so the caller can check the account may use them.
"""

import os
import re
from email.utils import format_datetime

from moxtw import message as msgparse

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def split_header(data):
    """(header section without the blank line, separator, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i], sep, data[i + len(sep):]
    if data.startswith(b"\r\n") or data.startswith(b"\n"):
        return b"", data[: 2 if data.startswith(b"\r\n") else 1], data[2 if data.startswith(b"\r\n") else 1:]
    return data, b"", b""


def fields(header):
    """Header fields as raw byte strings, each with its folded continuation lines."""
    out = []
    for line in re.split(rb"(?<=\n)", header + b"\n" if header and not header.endswith(b"\n") else header):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def field_name(raw):
    m = _FIELD_NAME.match(raw)
    return m.group(1).decode("ascii").lower() if m else ""


def prepare(data, hostname, now):
    """Returns (new message bytes, message-id without <>, from [Address], sender [Address])."""
    header, _sep, body = split_header(data)
    kept = []
    names = set()
    for raw in fields(header):
        name = field_name(raw)
        names.add(name)
        if name == "bcc":
            continue
        if not raw.endswith(b"\r\n"):
            raw = raw.rstrip(b"\r\n") + b"\r\n"
        kept.append(raw)
    added = []
    if "date" not in names:
        added.append(f"Date: {format_datetime(now)}\r\n".encode())
    part = msgparse.parse(data)
    message_id = msgparse.summary(data).message_id if "message-id" in names else ""
    if not message_id and "message-id" not in names:
        message_id = f"{os.urandom(12).hex()}@{hostname}"
        added.append(f"Message-ID: <{message_id}>\r\n".encode())
    froms = msgparse.parse_address_list(part.header_raw("From") or b"")
    senders = msgparse.parse_address_list(part.header_raw("Sender") or b"")
    out = b"".join(kept) + b"".join(added) + b"\r\n" + body
    return out, message_id, froms, senders
