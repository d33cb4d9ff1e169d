"""URLAUTH (RFC 4467): IMAP URLs that carry their own authorization, so that a user can
let another party (a submission server, another user, anyone) fetch one message or part.

A URL names its owner (``imap://user@host/...``) and an access identifier saying who may
fetch it. GENURLAUTH appends ``:INTERNAL:<token>``, the token being an HMAC-SHA256 of the
rump URL (everything up to the access identifier) under the mailbox's random access key;
URLFETCH recomputes it. RESETKEY replaces the key, which voids every URL issued for the
mailbox. No state is kept per URL.

Pure functions here; the session resolves owners and keys (moxtw.imapserver.session).
"""

import hashlib
import hmac
import os
import re
from datetime import datetime, timezone

MECHANISMS = ("INTERNAL",)  # RFC 4467 2.4: the one mechanism servers must support


class AccessError(Exception):
    pass


def parse_access(access):
    """(kind, user) of an access identifier (RFC 4467 2.3): ("anonymous", None),
    ("authuser", None), ("user", name) or ("submit", name); AccessError otherwise."""
    low = access.lower()
    if low in ("anonymous", "authuser"):
        return low, None
    kind, plus, user = access.partition("+")
    if plus and kind.lower() in ("user", "submit") and user:
        return kind.lower(), user  # enc-user, %-decoded with the URL (moxtw.imapserver.imapurl)
    raise AccessError(f"unknown URLAUTH access identifier {access!r}")


def token(key, rump):
    """The INTERNAL authorization token of a rump URL: lower-case hex (RFC 4467 2.4,
    enc-urlauth is at least 32 hex digits; this is 64)."""
    return hmac.new(key, rump.encode("utf-8"), hashlib.sha256).hexdigest()


_TOKEN = re.compile(r"[0-9a-fA-F]{32,128}")  # RFC 4467 2.4: enc-urlauth = 32*HEXDIG


def token_ok(key, rump, given):
    """Whether ``given`` is the token of ``rump`` under ``key``; constant time. Without a
    key (unknown owner, mailbox or key) a random one is used, so the time taken does not
    tell which mailboxes exist (RFC 4467 9)."""
    want = token(key if key is not None else os.urandom(32), rump)
    if given is None or not _TOKEN.fullmatch(given):
        return False
    return hmac.compare_digest(want.encode("ascii"), given.lower().encode("ascii")) and key is not None


def expired(urlauth, now=None):
    """Whether an ;EXPIRE= time has passed (RFC 4467 3: then URLFETCH fails)."""
    if urlauth.expire is None:
        return False
    return (now or _now()) >= urlauth.expire


def _now():
    return datetime.now(timezone.utc)


def owner_login(url, hostname):
    """The login address of the account a URL belongs to: ``user`` when it is a full
    address and the host is this server, else ``user@host``."""
    if "@" in url.user:
        return url.user if url.host == hostname.lower() else None
    return f"{url.user}@{url.host}"


def allows(access, fetcher_account, account_for_login):
    """Whether the session logged in to ``fetcher_account`` (a name) may fetch a URL with
    this access identifier (RFC 4467 3). ``submit+`` is for a submission server acting
    for that user (BURL, RFC 4468), which moxtw does not offer, so it allows no IMAP
    session."""
    try:
        kind, user = parse_access(access)
    except AccessError:
        return False
    if kind in ("anonymous", "authuser"):
        return True  # URLFETCH is only available after login, so both mean any user
    if kind == "submit":
        return False
    return account_for_login(user) == fetcher_account
