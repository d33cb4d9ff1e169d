"""Subject passwords (mox's ``SubjectPass``): a first-time sender refused as likely junk is
told a token to put in the Subject of a new attempt, which then gets past the junk
filter. The token is ``(pass:...)``: base64url of the time it was made (5 bytes) and an
HMAC-SHA256 (first 12 bytes) of that time and the sender's From address, keyed per
account (a random key in the account's index). It is valid for the account's
``SubjectPass.Period`` and only for that From address.
"""

import base64
import hashlib
import hmac
import re
import struct

PREFIX = "(pass:"
EXPLANATION = ("Your message resembles spam. If it is legitimate, please send it again with the "
               "following added to the subject: ")
_TOKEN = re.compile(r"\(pass:([A-Za-z0-9_-]{1,64})\)")
MAC_SIZE = 12
MAX_TOKENS = 8  # tokens of a Subject checked (one per refusing account; 8 fit a 512-octet reply line)
MAX_SUBJECT = 8192  # characters of a Subject searched for them


def _mac(key, stamp, address):
    return hmac.new(key, stamp + address.lower().encode("utf-8"), hashlib.sha256).digest()[:MAC_SIZE]


def generate(key, address, now):
    """The token for ``address`` (the From address), made at Unix time ``now``."""
    stamp = struct.pack(">Q", int(now))[3:]  # 40 bits of seconds
    raw = stamp + _mac(key, stamp, address)
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") + ")"


def verify(key, subject, address, period, now):
    """``(ok, reason)``: whether ``subject`` carries a valid token for ``address`` no
    older than ``period`` seconds. Every token in the Subject counts (a message to two
    accounts carries both accounts' tokens), up to ``MAX_TOKENS`` in its first
    ``MAX_SUBJECT`` characters: a stuffed Subject costs a bounded number of HMACs."""
    reason = "no token in subject"
    for i, m in enumerate(_TOKEN.finditer((subject or "")[:MAX_SUBJECT])):
        if i >= MAX_TOKENS:
            break
        ok, reason = _verify_one(key, m.group(1), address, period, now)
        if ok:
            return ok, reason
    return False, reason


def _verify_one(key, text, address, period, now):
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return False, "malformed token"
    if len(raw) != 5 + MAC_SIZE:
        return False, "malformed token"
    stamp, mac = raw[:5], raw[5:]
    if not hmac.compare_digest(mac, _mac(key, stamp, address)):
        return False, "token not valid for this sender"
    made = struct.unpack(">Q", b"\0\0\0" + stamp)[0]
    if now - made > period or made - now > 300:
        return False, "token expired"
    return True, "valid token"


def explanation(tokens):
    """The refusal text asking the sender to add ``tokens`` (one per refusing account)."""
    return EXPLANATION + " ".join(tokens)


__all__ = ["EXPLANATION", "MAX_TOKENS", "explanation", "generate", "verify"]
