"""Mailbox choice by the destination's Rulesets (step 4 of local delivery).

A Ruleset matches on the SMTP MAIL FROM, the message From, a domain verified by SPF or
DKIM, and header fields, all by regular expressions from domains.toml; the first that
matches gives the mailbox.
"""

import re

from moxtw import message as msgparse
from moxtw.message.header import decode_words, unfold


def choose_mailbox(destination, default, mailfrom, msgfrom, verified_domains, headers):
    """The mailbox for a destination: the first Ruleset whose conditions all hold, else the
    destination's Mailbox. Returns (mailbox, ruleset or None).

    ``mailfrom`` and ``msgfrom``: addresses as text ("" for none); ``verified_domains``:
    domains verified by SPF or DKIM; ``headers``: [(lower-case name, decoded value)].
    """
    if destination is None:
        return default, None
    for rs in destination.Rulesets:
        if rs.SMTPMailFromRegexp and not re.search(rs.SMTPMailFromRegexp, mailfrom.lower()):
            continue
        if rs.MsgFromRegexp and not re.search(rs.MsgFromRegexp, msgfrom.lower()):
            continue
        if rs.VerifiedDomain and not domain_verified(rs.VerifiedDomain, verified_domains):
            continue
        if rs.HeadersRegexp and not all(
            any(re.search(k, name) and re.search(v, value.lower()) for name, value in headers)
            for k, v in rs.HeadersRegexp.items()
        ):
            continue
        return rs.Mailbox, rs
    return destination.Mailbox, None


def domain_verified(domain, verified):
    # A verified domain matches itself and its subdomains.
    domain = domain.lower()
    return any(d == domain or d.endswith("." + domain) for d in verified)


def message_headers(data):
    """[(lower-case name, decoded value)] of a message's header section, and its first
    From address as text. Only the header section is parsed, so the cost does not grow
    with the body (CPU work all the same: callers run it off the reactor)."""
    ends = [i + n for i, n in ((data.find(b"\r\n\r\n"), 4), (data.find(b"\n\n"), 2)) if i >= 0]
    part = msgparse.parse(bytes(data[:min(ends)]) if ends else data)
    headers = []
    for name, raw in part.headers:
        # Each field's own value (a repeated field such as Received is matched in each).
        headers.append((name.lower(), decode_words(unfold(raw.strip(b" \t\r\n")))))
    froms = msgparse.parse_address_list(part.header_raw("From") or b"")
    msgfrom = f"{froms[0].localpart}@{froms[0].domain}" if froms else ""
    return headers, msgfrom
