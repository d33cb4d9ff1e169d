"""IMAP URLs naming a message or a part of one (RFC 5092), for APPEND CATENATE (RFC 4469).

Accepted: the relative form ``/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]``
and the absolute one ``imap://[user[;AUTH=...]@]host[:port]/...`` when the host is this
server's. Mailbox names and sections are %-encoded UTF-8 (RFC 5092 5 and 6). An absolute
URL may end in ``[;EXPIRE=datetime];URLAUTH=access[:mechanism:token]`` (RFC 5092 3.5, RFC
4467 2): ``MessageURL.urlauth`` then holds those parts, checked by
``moxtw.imapserver.urlauth``. Without URLAUTH a URL is resolved inside the logged-in
account only.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_to_bytes

from moxtw.imapserver import parser as imapparser

MAX_URL = 8192

_URL = re.compile(
    r"^(?:imap://(?P<authority>[^/]*))?"
    r"/(?P<mailbox>[^;]*?)(?:;uidvalidity=(?P<uidvalidity>[0-9]{1,10}))?"
    r"/;uid=(?P<uid>[0-9]{1,10})"
    r"(?:/;section=(?P<section>[^/;]*))?"
    r"(?:/;partial=(?P<offset>[0-9]{1,10})(?:\.(?P<length>[0-9]{1,10}))?)?"
    # RFC 5092 3.5 / RFC 4467 2.1: [;EXPIRE=date-time];URLAUTH=access[:mech:token]
    r"(?:;expire=(?P<expire>[^;/]+))?"
    r"(?:;urlauth=(?P<access>[^:;/]+)(?P<authorized>:(?P<mechanism>[^:;/]+):(?P<token>[^:;/]*))?)?$",
    re.IGNORECASE,
)


class URLError(Exception):
    pass


@dataclass(frozen=True)
class URLAuth:
    """The URLAUTH parts of a URL (RFC 4467 2)."""
    rump: str  # the URL up to and including the access identifier (RFC 4467 2.4)
    access: str  # "anonymous", "authuser", "user+<user>", "submit+<user>", as written
    expire: object  # aware datetime or None
    mechanism: object  # upper case, or None for a rump URL
    token: object  # str or None


@dataclass(frozen=True)
class MessageURL:
    mailbox: str
    uidvalidity: object  # int or None
    uid: int
    section: object  # moxtw.imapserver.types.Section or None (the whole message)
    partial: object  # (offset, length) or None
    user: object = None  # the %-decoded iuserinfo user of an absolute URL, or None
    host: object = None  # the host of an absolute URL (lower case), or None
    urlauth: object = None  # URLAuth or None


def _decode(text, what):
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise URLError(f"{what} in URL is not UTF-8")


def parse_url(text, hostname, host_ok=None):
    """The MessageURL of ``text``; URLError when it is not one we can resolve. The host
    of an absolute URL must be ``hostname``, or one ``host_ok(host)`` accepts."""
    if len(text) > MAX_URL:
        raise URLError("URL too long")
    m = _URL.match(text)
    if m is None:
        raise URLError("not an IMAP message URL (RFC 5092)")
    authority = m.group("authority")
    user = host = None
    if authority is not None:
        userinfo, _, host = authority.rpartition("@")
        host = (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower()
        if host != hostname.lower() and not (host_ok is not None and host_ok(host)):
            raise URLError(f"URL names another server ({host})")
        if userinfo:
            # RFC 5092 3.2: enc-user [";AUTH=" ...]
            user = _decode(userinfo.split(";", 1)[0], "user")
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
    urlauth = None
    if m.group("access") is not None:
        if user is None:
            # RFC 5092 3.5: authimapurl = "imap://" enc-user [iauth] "@" hostport "/" ...
            raise URLError("a URLAUTH URL names the user and the server")
        expire = None
        if m.group("expire") is not None:
            expire = _parse_expire(unquote_to_bytes(m.group("expire")).decode("ascii", "replace"))
        rump = text[: m.start("authorized")] if m.group("authorized") else text
        mech = m.group("mechanism")
        urlauth = URLAuth(rump, _decode(m.group("access"), "access"), expire, mech.upper() if mech else None,
                          m.group("token"))
    elif m.group("expire") is not None:
        raise URLError(";EXPIRE= without ;URLAUTH=")
    return MessageURL(mailbox, uidvalidity, uid, section, partial, user, host, urlauth)


# RFC 3339 5.6 date-time: full-date "T" full-time, with a time zone (RFC 5092 3.5).
_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$")


def _parse_expire(text):
    """RFC 3339 date-time with a zone (RFC 5092 3.5: ";EXPIRE=" datetime)."""
    if not _DATE_TIME.match(text):
        raise URLError("bad ;EXPIRE= date-time (RFC 3339, with a zone)")
    if "." in text:
        # fromisoformat takes at most 6 fraction digits; the time is compared to seconds.
        head, _, rest = text.partition(".")
        digits = re.match(r"[0-9]+", rest).group(0)
        text = head + "." + digits[:6].ljust(6, "0") + rest[len(digits):]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise URLError("bad ;EXPIRE= date-time")
    if when.tzinfo is None:
        raise URLError(";EXPIRE= date-time needs a zone")
    return when
