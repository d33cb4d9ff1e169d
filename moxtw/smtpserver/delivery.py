"""Local delivery of an accepted message: mailbox choice by rulesets, trace headers,
and the store call, with results per recipient.

Used for mail received over SMTP and for local recipients of queued (submitted) mail,
so both take the same path.
"""

import re
from dataclasses import dataclass
from email.utils import format_datetime

from twisted.internet import defer
from twisted.logger import Logger

from moxtw import message as msgparse
from moxtw.smtp import codes as c
from moxtw.store import QuotaExceeded

log = Logger(namespace="moxtw.smtpserver")


@dataclass
class RcptResult:
    recipient: object  # smtpserver.recipients.Recipient
    ok: bool
    code: int = c.C250_COMPLETED
    se: str = c.SE_OTHER0
    text: str = "delivered"

    @property
    def permanent(self):
        return not self.ok and self.code >= 500


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
        if rs.VerifiedDomain and not _domain_verified(rs.VerifiedDomain, verified_domains):
            continue
        if rs.HeadersRegexp and not all(
            any(re.search(k, name) and re.search(v, value.lower()) for name, value in headers)
            for k, v in rs.HeadersRegexp.items()
        ):
            continue
        return rs.Mailbox, rs
    return destination.Mailbox, None


def _domain_verified(domain, verified):
    # A verified domain matches itself and its subdomains.
    domain = domain.lower()
    return any(d == domain or d.endswith("." + domain) for d in verified)


def received_header(
    *, from_ehlo, remote_ip, remote_name, hostname, local_ip, with_proto, msg_id, rcpt, now, tls
):
    """A Received trace header (RFC 5321 4.4, RFC 3848 protocol types), folded."""
    parts = [f"from {from_ehlo} ({remote_name or 'unknown'} [{remote_ip}])"]
    parts.append(f"by {hostname} ([{local_ip}])" + (f" ({tls})" if tls else ""))
    parts.append(f"via tcp with {with_proto} id {msg_id}" + (f" for <{rcpt}>" if rcpt else ""))
    value = "\r\n\t".join(parts) + f"; {format_datetime(now)}"
    return f"Received: {value}\r\n".encode("utf-8")


def return_path(mailfrom):
    """Return-Path (RFC 5321 4.4), added at final delivery."""
    return f"Return-Path: <{mailfrom}>\r\n".encode("utf-8")


def authentication_results(hostname, results=()):
    """Authentication-Results (RFC 8601) with the checks done; "none" when no checks ran."""
    if not results:
        return f"Authentication-Results: {hostname}; none\r\n".encode("utf-8")
    return (
        f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(results) + "\r\n"
    ).encode("utf-8")


def message_headers(data):
    """[(lower-case name, decoded value)] of a message's header section, and its first
    From address as text."""
    part = msgparse.parse(data)
    headers = []
    for name, _raw in part.headers:
        headers.append((name.lower(), part.header(name) or ""))
    froms = msgparse.parse_address_list(part.header_raw("From") or b"")
    msgfrom = f"{froms[0].localpart}@{froms[0].domain}" if froms else ""
    return headers, msgfrom


class LocalDelivery:
    """Delivers into the store; one copy per (account, mailbox), results per recipient."""

    def __init__(self, store):
        self.store = store

    @defer.inlineCallbacks
    def deliver(self, data, recipients, *, mailfrom, prefix, facts=None, verified_domains=()):
        """Deliver ``prefix + data`` to every Recipient. ``prefix``: trace headers for the
        message (Received, Authentication-Results); Return-Path is added here.

        Returns [RcptResult] in the order of ``recipients``. A failure for one account does
        not affect the others (RFC 5321 leaves partial results to the server; callers
        report them)."""
        headers, msgfrom = yield defer.maybeDeferred(message_headers, data)
        results = []
        done = {}
        for rcpt in recipients:
            mailbox, _rs = choose_mailbox(
                rcpt.destination, rcpt.mailbox, mailfrom or "", msgfrom, verified_domains, headers
            )
            key = (rcpt.account, mailbox)
            if key in done:
                prev = done[key]
                results.append(RcptResult(rcpt, prev.ok, prev.code, prev.se, prev.text))
                continue
            result = yield self._deliver_one(rcpt, mailbox, data, mailfrom, prefix, facts)
            done[key] = result
            results.append(result)
        return results

    @defer.inlineCallbacks
    def _deliver_one(self, rcpt, mailbox, data, mailfrom, prefix, facts):
        full = return_path(mailfrom or "") + prefix + data
        try:
            acc = yield self.store.open_account(rcpt.account)
            msg = yield acc.deliver(mailbox, full, facts=facts)
        except QuotaExceeded as e:
            # RFC 3463: 4.2.2 mailbox full (may clear), 5.2.3 message larger than the quota.
            if e.size > e.limit:
                return RcptResult(rcpt, False, c.C552_STORAGE_EXCEEDED, c.SE_MAILBOX_MSG_TOO_LARGE3,
                                  "message larger than the mailbox quota")
            return RcptResult(rcpt, False, c.C452_STORAGE_FULL, c.SE_MAILBOX_FULL2,
                              "mailbox full (quota exceeded)")
        except Exception:
            log.failure("delivering to {account}", account=rcpt.account)
            return RcptResult(rcpt, False, c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0,
                              "error delivering to mailbox, try again later")
        log.info(
            "delivered {account}/{mailbox} uid {uid}",
            account=rcpt.account, mailbox=mailbox, uid=msg.uid,
        )
        return RcptResult(rcpt, True)
