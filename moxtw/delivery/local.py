"""Delivery into the store (step 5): one copy per (account, mailbox), results per
recipient."""

import dataclasses
from dataclasses import dataclass

from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw.delivery.rules import choose_mailbox, message_headers
from moxtw.smtp import codes as c
from moxtw.store import QuotaExceeded

log = Logger(namespace="moxtw.delivery")


@dataclass
class RcptResult:
    recipient: object  # moxtw.delivery.recipients.Recipient
    ok: bool
    code: int = c.C250_COMPLETED
    se: str = c.SE_OTHER0
    text: str = "delivered"
    duplicate: bool = False  # same account and mailbox as an earlier recipient: its result

    @property
    def permanent(self):
        return not self.ok and self.code >= 500


def return_path(mailfrom):
    """Return-Path (RFC 5321 4.4), added at final delivery."""
    return f"Return-Path: <{mailfrom}>\r\n".encode("utf-8")


class LocalDelivery:
    """Delivers into the store; one copy per (account, mailbox), results per recipient."""

    def __init__(self, store):
        self.store = store

    @defer.inlineCallbacks
    def deliver(self, data, recipients, *, mailfrom, prefix, facts=None, verified_domains=(), scores=None,
                mailboxes=None):
        """Deliver ``prefix + data`` to every Recipient. ``prefix``: trace headers for the
        message (Received, Authentication-Results); Return-Path is added here.

        Returns [RcptResult] in the order of ``recipients``. A failure for one account does
        not affect the others (RFC 5321 leaves partial results to the server; callers
        report them)."""
        if any(r.destination is not None and r.destination.Rulesets for r in recipients):
            headers, msgfrom = yield threads.deferToThread(message_headers, data)
        else:
            headers, msgfrom = [], ""  # no ruleset to match: the header is not parsed here
        results = []
        done = {}
        for rcpt in recipients:
            if rcpt.disabled:
                results.append(RcptResult(rcpt, False, c.C450_MAILBOX_UNAVAILABLE, c.SE_MAILBOX_DISABLED1,
                                          "domain temporarily disabled"))
                continue
            mailbox, _rs = choose_mailbox(
                rcpt.destination, rcpt.mailbox, mailfrom or "", msgfrom, verified_domains, headers
            )
            if mailboxes and rcpt.account in mailboxes:
                mailbox = mailboxes[rcpt.account]  # AcceptRejectsToMailbox of the ruleset
            key = (rcpt.account, mailbox)
            if key in done:
                prev = done[key]
                results.append(RcptResult(rcpt, prev.ok, prev.code, prev.se, prev.text, duplicate=True))
                continue
            f = facts
            if facts is not None and scores and rcpt.account in scores:
                # The junk analysis's score and reason, recorded on the message (why it
                # got in, for users and admins).
                score, reason = scores[rcpt.account]
                f = dataclasses.replace(f, junk_score=score, junk_reason=reason)
            if f is not None and _rs is not None and _rs.IsForward:
                # A forward: the forwarder's IP and domains are no evidence about the sender.
                f = dataclasses.replace(f, is_forward=True)
            result = yield self._deliver_one(rcpt, mailbox, data, mailfrom, prefix, f)
            done[key] = result
            results.append(result)
        return results

    @defer.inlineCallbacks
    def _deliver_one(self, rcpt, mailbox, data, mailfrom, prefix, facts):
        full = (return_path(mailfrom or "") + prefix, data)  # joined by the store, or written in two pieces
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

    @defer.inlineCallbacks
    def deliver_reject(self, rcpt, mailbox, data, mailfrom, prefix, facts, junk_score=None, junk_reason=""):
        """Keep a copy of a message refused as junk in ``mailbox`` (the account's
        RejectsMailbox; "" keeps none), once per Message-ID and sender; never trained,
        and cleaned after 14 days (``moxtw.junk.rejects``). Errors are logged: the
        refusal stands."""
        if not mailbox:
            return False
        try:
            acc = yield self.store.open_account(rcpt.account)
            message_id = yield threads.deferToThread(_message_id, data)
            if message_id:
                def dup(conn):
                    return conn.execute(
                        "SELECT 1 FROM message m JOIN mailbox b ON b.id = m.mailbox_id WHERE b.name = ?"
                        " AND m.is_reject = 1 AND m.message_id = ? AND m.mailfrom = ? LIMIT 1",
                        (mailbox, message_id, mailfrom or "")).fetchone() is not None

                if (yield acc.read(dup)):
                    log.info("rejected message already in {mailbox} of {account}", mailbox=mailbox,
                             account=rcpt.account)
                    return False
            f = (dataclasses.replace(facts, is_reject=True, junk_score=junk_score, junk_reason=junk_reason)
                 if facts is not None else None)
            yield acc.deliver(mailbox, (return_path(mailfrom or "") + prefix, data), facts=f)
        except Exception:
            log.failure("storing rejected message for {account}", account=rcpt.account)
            return False
        log.info("rejected message kept in {account}/{mailbox}", account=rcpt.account, mailbox=mailbox)
        return True


def _message_id(data):
    """The Message-ID as the store keeps it (moxtw.message's summary)."""
    from moxtw import message as msgparse
    from moxtw.message.summary import first_message_id

    end = data.find(b"\r\n\r\n")
    part = msgparse.parse(bytes(data[:end + 4] if end >= 0 else data[:65536]))
    return first_message_id(part.header_raw("message-id"))
