"""IMAP URLs naming a message or a part of one (RFC 5092), for APPEND CATENATE (RFC 4469).

Accepted: the relative form ``/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]``
and the absolute one ``imap://[user[;AUTH=...]@]host[:port]/...`` when the host is this
server's. Mailbox names and sections are %-encoded UTF-8 (RFC 5092 5 and 6). URLAUTH
(``;EXPIRE=``, ``;URLAUTH=``) is not supported. A URL is always resolved inside the
logged-in account: it can never reach another account's mail.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from moxtw.imapserver import parser as imapparser

MAX_URL = 8192

_URL = re.compile(
    r"^(?:imap://(?P<authority>[^/]*))?"
    r"/(?P<mailbox>[^;]*?)(?:;uidvalidity=(?P<uidvalidity>[0-9]{1,10}))?"
    r"/;uid=(?P<uid>[0-9]{1,10})"
    r"(?:/;section=(?P<section>[^/]*))?"
    r"(?:/;partial=(?P<offset>[0-9]{1,10})(?:\.(?P<length>[0-9]{1,10}))?)?$",
    re.IGNORECASE,
)


class URLError(Exception):
    pass


@dataclass(frozen=True)
class MessageURL:
    mailbox: str
    uidvalidity: object  # int or None
    uid: int
    section: object  # moxtw.imapserver.types.Section or None (the whole message)
    partial: object  # (offset, length) or None


def _decode(text, what):
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise URLError(f"{what} in URL is not UTF-8")


def parse_url(text, hostname):
    """The MessageURL of ``text``; URLError when it is not one we can resolve."""
    if len(text) > MAX_URL:
        raise URLError("URL too long")
    m = _URL.match(text)
    if m is None:
        raise URLError("not an IMAP message URL (RFC 5092)")
    authority = m.group("authority")
    if authority is not None:
        host = authority.rpartition("@")[2]
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if host.lower() != hostname.lower():
            raise URLError(f"URL names another server ({host})")
    mailbox = _decode(m.group("mailbox"), "mailbox")
    if not mailbox:
        raise URLError("URL names no mailbox")
    uid = int(m.group("uid"))
    uidvalidity = int(m.group("uidvalidity")) if m.group("uidvalidity") else None
    if uid == 0 or uidvalidity == 0 or max(uid, uidvalidity or 0) > 0xFFFFFFFF:
        raise URLError("UID and UIDVALIDITY in a URL are 1 to 4294967295")
    section = None
    if m.group("section") is not None:
        spec = _decode(m.group("section"), "section")
        try:
            section = imapparser.parse_section(spec)
        except imapparser.ParseError as e:
            raise URLError(f"bad section in URL: {e.text}")
    partial = None
    if m.group("offset") is not None:
        offset = int(m.group("offset"))
        length = int(m.group("length")) if m.group("length") else None
        if length == 0:
            raise URLError("PARTIAL length in a URL is at least 1")
        partial = (offset, length or 2 ** 63)  # no length: to the end
    return MessageURL(mailbox, uidvalidity, uid, section, partial)
