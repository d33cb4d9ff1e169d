"""Delivery status notifications (DSNs): the messages that tell a sender what became of
their message.

``compose`` builds a ``multipart/report; report-type=delivery-status`` message (RFC 6522)
with a human-readable part, the machine-readable delivery status (RFC 3464) and the
original message or its header section. For SMTPUTF8 messages the internationalized
variants are used: ``message/global-delivery-status``, ``message/global`` and
``message/global-headers`` (RFC 6533). ``parse_reply`` and ``status`` derive the
enhanced status code (RFC 3463) from the error text the queue stores.

``QueueDSN`` is the queue's ``dsn`` hook (``moxtw.queue.QueueService``): it reads the
original message of a queue entry, composes the DSN and queues it to the entry's sender
with the null reverse-path, so it is delivered like any other message.

RFCs: 3461 (SMTP DSN extension: NOTIFY, RET, ENVID, ORCPT), 3462/6522 (multipart/report),
3463 (enhanced status codes), 3464 (message/delivery-status), 3834 (Auto-Submitted),
6533 (internationalized DSNs).
"""

import os
import re
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime

from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.message import fix_line_endings
from moxtw.message import parse as parse_message
from moxtw.queue.service import DEFAULT_MAX_ATTEMPTS, retry_delay
from moxtw.smtp.xtext import xtext_decode

log = Logger(namespace="moxtw.queue.dsn")

KIND_FAILED = "failed"
KIND_DELAYED = "delayed"
KINDS = (KIND_FAILED, KIND_DELAYED)

# The full original message is returned only up to this size; larger ones get their
# header section only.
MAX_FULL_ORIGINAL = 1024 * 1024
# Header sections longer than this are cut (at a line end) in the returned headers.
MAX_HEADERS = 64 * 1024

# Status when the error text has no reply code at all (RFC 3463): a final failure of
# unknown cause, or "no answer from host" (X.4.1) for connection problems while retrying.
STATUS_FAILED_UNKNOWN = "5.0.0"
STATUS_DELAYED_NO_REPLY = "4.4.1"
# RFC 3463 X.4.7: delivery time expired; a final failure whose last error was temporary.
STATUS_EXPIRED = "5.4.7"

_LINE_MAX = 76  # folding target for header and field lines (RFC 5322 2.1.1: 78)
_LINE_HARD = 900  # physical line cap, below the 998 of RFC 5322 2.1.1

# A reply line: code, optional "-"/" ", optional enhanced code (RFC 5321 4.2, RFC 3463 2).
_REPLY = re.compile(r"^\s*([2-5][0-9][0-9])(?:[ -]|$)\s*(?:([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.]))?")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class RecipientStatus:
    """The per-recipient facts of a DSN (RFC 3464 2.3).

    ``orcpt`` is the raw RFC 3461 ORCPT value (``rfc822;xtext``) or ""; ``status`` an
    enhanced status code ("5.1.1"); ``diagnostic`` the last error, usually an SMTP reply
    (may be multi-line); ``remote_mta`` the host that gave it, or None; times are aware
    datetimes or None."""

    recipient: str
    orcpt: str = ""
    status: str = STATUS_FAILED_UNKNOWN
    diagnostic: str = ""
    remote_mta: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


# -- status codes


def parse_reply(text):
    """(reply code or None, enhanced code or None) from the first line of an error text:
    "550 5.1.1 no such user" -> (550, "5.1.1"); "451 try later" -> (451, None);
    "connection refused" -> (None, None). An enhanced code whose class differs from the
    reply code's is ignored (RFC 3463 2: the class digits must agree)."""
    m = _REPLY.match(text or "")
    if m is None:
        return None, None
    code = int(m.group(1))
    enhanced = None
    if m.group(2) is not None and m.group(2) == m.group(1)[0]:
        enhanced = f"{m.group(2)}.{int(m.group(3))}.{int(m.group(4))}"
    return code, enhanced


def status(error, kind):
    """The RFC 3463 status code for a DSN of ``kind`` from the stored error text.

    Failed: the enhanced code of a 5xx reply, else 5.0.0 from the reply code; a final
    failure after temporary errors (4xx) is 5.4.7, delivery time expired. Delayed: the
    enhanced code of a 4xx reply, else 4.0.0; without any reply code 4.4.1 (no answer
    from host: connection problems)."""
    if kind not in KINDS:
        raise ValueError(f"unknown DSN kind {kind!r}")
    code, enhanced = parse_reply(error)
    if kind == KIND_FAILED:
        if code is None:
            return STATUS_FAILED_UNKNOWN
        if code // 100 == 5:
            return enhanced or "5.0.0"
        return STATUS_EXPIRED
    # RFC 3464 2.3.4: a delayed action goes with a 4.x.x status.
    if code is None:
        return STATUS_DELAYED_NO_REPLY
    if code // 100 == 4:
        return enhanced or "4.0.0"
    return "4.0.0"


# -- composing


def compose(*, kind, hostname, sender, recipients, original_headers, original, envid, ret,
            now, message_id_domain, smtputf8, arrival_date=None, message_id=None):
    """The DSN message (bytes, CRLF line endings) to ``sender`` about ``recipients``
    (a list of RecipientStatus), all of one original message.

    ``original_headers``: the original's header section; ``original``: the whole original
    message, or None. ``ret`` is the RFC 3461 RET value ("FULL", "HDRS" or None); the full
    message is returned for failures with RET=FULL or without RET, when given and at most
    MAX_FULL_ORIGINAL bytes; otherwise the header section. ``smtputf8`` selects the RFC
    6533 content types. ``message_id``: without angle brackets; default random at
    ``message_id_domain``."""
    if kind not in KINDS:
        raise ValueError(f"unknown DSN kind {kind!r}")
    if not recipients:
        raise ValueError("no recipients")
    if message_id is None:
        message_id = f"{os.urandom(12).hex()}@{message_id_domain}"
    original_headers = _header_section(fix_line_endings(bytes(original_headers)))
    subject = _original_subject(original_headers)

    full = (
        kind == KIND_FAILED
        and (ret or "FULL").upper() == "FULL"  # RFC 3461 4.3: RET=FULL, default ours
        and original is not None
        and len(original) <= MAX_FULL_ORIGINAL
    )
    parts = [
        _text_part(kind, hostname, recipients, subject, now, smtputf8, full),
        _status_part(kind, hostname, recipients, envid, arrival_date, smtputf8),
        _original_part(fix_line_endings(bytes(original)) if full else original_headers, full, smtputf8),
    ]
    boundary = _boundary(parts)
    eight_bit = any(_has_8bit(p) for p in parts)

    prefix = "Delivery failure" if kind == KIND_FAILED else "Delivery delayed"
    headers = [
        # RFC 3464 2.1 / RFC 5321 6.2: from the postmaster of the reporting MTA.
        ("From", f"Mail Delivery Subsystem <postmaster@{hostname}>"),
        ("To", f"<{sender}>"),
        ("Subject", _header_text(f"{prefix}: {subject}" if subject else prefix, smtputf8)),
        ("Date", format_datetime(_utc(now))),
        ("Message-ID", f"<{message_id}>"),
        ("Auto-Submitted", "auto-replied"),  # RFC 3834 5
        ("MIME-Version", "1.0"),
        # RFC 6522 3: multipart/report with the report type of the second part.
        ("Content-Type", f'multipart/report; report-type=delivery-status; boundary="{boundary}"'),
    ]
    if eight_bit:
        headers.append(("Content-Transfer-Encoding", "8bit"))  # RFC 2045 6.4
    out = [b"".join(_field(n, v) for n, v in headers), b"\r\n"]
    out.append(b"This is a delivery status notification in MIME format (RFC 3464).\r\n")
    for part in parts:
        out.append(b"\r\n--" + boundary.encode() + b"\r\n")
        out.append(part)
    out.append(b"\r\n--" + boundary.encode() + b"--\r\n")
    return b"".join(out)


def _text_part(kind, hostname, recipients, subject, now, smtputf8, full):
    """RFC 6522 3: the first part, for humans."""
    lines = []
    if kind == KIND_FAILED:
        lines.append("Your message could not be delivered to the following recipients.")
        lines.append("The mail system has given up; no further attempts will be made.")
    else:
        lines.append("Delivery of your message to the following recipients is delayed.")
        lines.append("The mail system keeps trying; you do not need to send it again.")
    lines.append("")
    if subject:
        lines.append(f"Subject: {subject}")
        lines.append("")
    for r in recipients:
        lines.append(f"Recipient: {r.recipient}")
        lines.append(f"Status: {r.status} ({_describe(r.status)})")
        if r.remote_mta:
            lines.append(f"Reported by: {r.remote_mta}")
        if r.diagnostic:
            lines.append("Error:")
            for line in r.diagnostic.splitlines():
                if line.strip():
                    lines.extend(textwrap.wrap(_clean(line), _LINE_MAX, initial_indent="    ",
                                               subsequent_indent="      "))
        if r.last_attempt is not None:
            lines.append(f"Last attempt: {format_datetime(_utc(r.last_attempt))}")
        if r.will_retry_until is not None:
            lines.append(f"Will retry until: {format_datetime(_utc(r.will_retry_until))}")
        lines.append("")
    if kind == KIND_FAILED:
        lines.append("What you can do: check the recipient address for typing errors and")
        lines.append("send the message again. If the error mentions a policy, spam or")
        lines.append("security requirement, contact the recipient another way, or ask the")
        lines.append("administrator of your mail server for help.")
        lines.append("")
        lines.append("The original message is attached." if full
                     else "The header of the original message is attached.")
    else:
        lines.append("You will get another notification if delivery fails for good.")
        lines.append("If the message is urgent, contact the recipient another way.")
    lines.append("")
    lines.append(f"-- The mail system at {hostname}")
    text = "\r\n".join(lines) + "\r\n"
    data = text.encode("utf-8")
    if not _has_8bit(data):
        cte = "7bit"
    elif smtputf8:
        cte = "8bit"
    else:
        # Keep the DSN 7-bit for paths without 8BITMIME.
        cte, data = "quoted-printable", _quoted_printable(data)
    head = _field("Content-Type", 'text/plain; charset="utf-8"')
    head += _field("Content-Transfer-Encoding", cte)
    head += _field("Content-Description", "Notification")
    return head + b"\r\n" + data


def _status_part(kind, hostname, recipients, envid, arrival_date, smtputf8):
    """RFC 3464 2: per-message fields, then a group of per-recipient fields for each."""
    groups = []
    msg = [_field("Reporting-MTA", f"dns; {hostname}")]  # RFC 3464 2.2.2
    if envid:
        # RFC 3464 2.2.1: ENVID as given (xtext-decoded), RFC 3461 4.4.
        msg.append(_field("Original-Envelope-Id", _dsn_text(_clean(xtext_decode(envid)), smtputf8)))
    if arrival_date is not None:
        msg.append(_field("Arrival-Date", format_datetime(_utc(arrival_date))))  # 2.2.5
    groups.append(b"".join(msg))
    for r in recipients:
        f = []
        if r.orcpt:
            f.append(_field("Original-Recipient", _orcpt(r.orcpt, smtputf8)))  # 2.3.1
        f.append(_field("Final-Recipient", _address_field(r.recipient, smtputf8)))  # 2.3.2
        f.append(_field("Action", kind))  # 2.3.3
        f.append(_field("Status", r.status))  # 2.3.4
        if r.remote_mta:
            f.append(_field("Remote-MTA", f"dns; {r.remote_mta}"))  # 2.3.5
        code, _ = parse_reply(r.diagnostic)
        if code is not None:
            f.append(_diagnostic_field(r.diagnostic, smtputf8))  # 2.3.6
        if r.last_attempt is not None:
            f.append(_field("Last-Attempt-Date", format_datetime(_utc(r.last_attempt))))  # 2.3.7
        if kind == KIND_DELAYED and r.will_retry_until is not None:
            f.append(_field("Will-Retry-Until", format_datetime(_utc(r.will_retry_until))))  # 2.3.9
        groups.append(b"".join(f))
    body = b"\r\n".join(groups)
    # RFC 6533 6.2: message/global-delivery-status may hold UTF-8; RFC 3464 is 7-bit.
    ctype = "message/global-delivery-status" if smtputf8 else "message/delivery-status"
    head = _field("Content-Type", ctype)
    if _has_8bit(body):
        head += _field("Content-Transfer-Encoding", "8bit")
    head += _field("Content-Description", "Delivery report")
    return head + b"\r\n" + body


def _original_part(data, full, smtputf8):
    """RFC 3462 / RFC 6522: the returned message or its headers (RFC 6533 6.3, 6.4 for
    the global types). message/* bodies cannot be re-encoded (RFC 2046 5.2.1): 8bit is
    declared when needed."""
    if full:
        ctype = "message/global" if smtputf8 else "message/rfc822"
        desc = "Undelivered message"
    else:
        ctype = "message/global-headers" if smtputf8 else "text/rfc822-headers"
        desc = "Header of the undelivered message"
    head = _field("Content-Type", ctype)
    if _has_8bit(data):
        head += _field("Content-Transfer-Encoding", "8bit")
    head += _field("Content-Description", desc)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return head + b"\r\n" + data


def _diagnostic_field(diagnostic, smtputf8):
    """RFC 3464 2.3.6: "smtp;" and the full reply; each line of a multi-line reply on a
    folded line of its own, long lines folded at spaces."""
    lines = [_dsn_text(_clean(line), smtputf8) for line in diagnostic.splitlines() if line.strip()]
    first = "Diagnostic-Code: smtp; " + lines[0]
    out = _fold_words(first)
    for line in lines[1:]:
        out += _fold_words(" " + line)
    return "\r\n".join(out).encode("utf-8") + b"\r\n"


# -- field encoding helpers


def _field(name, value):
    """A header field, folded at spaces near 76 columns; bytes with CRLF."""
    return ("\r\n".join(_fold_words(f"{name}: {value}")) + "\r\n").encode("utf-8")


def _fold_words(line):
    """Physical lines of ``line`` folded before spaces (RFC 5322 2.2.3); the continuation
    lines begin with the space. Words longer than a line are cut at _LINE_HARD."""
    out = []
    cur = ""
    for word in re.split(r"(?= )", line):
        if cur and len(cur) + len(word) > _LINE_MAX and cur.strip():
            out.append(cur)
            cur = word if word.startswith(" ") else " " + word
        else:
            cur += word
        while len(cur) > _LINE_HARD:
            out.append(cur[:_LINE_HARD])
            cur = " " + cur[_LINE_HARD:]
    out.append(cur)
    return out


def _clean(text):
    """One line of untrusted text without control characters."""
    return _CONTROL.sub("?", text.rstrip("\r\n")).replace("\t", " ").strip()


def _dsn_text(text, smtputf8):
    """Text for a delivery-status field: UTF-8 in the global variant, else non-ASCII as
    RFC 6533 3 embedded-unicode-char escapes (``\\x{E9}``)."""
    if smtputf8 or text.isascii():
        return text
    return "".join(c if ord(c) < 128 else "\\x{%X}" % ord(c) for c in text)


def _address_field(address, smtputf8):
    """RFC 3464 2.3.2 address-type ";" address: rfc822 for ASCII addresses, utf-8 for
    internationalized ones (RFC 6533 3)."""
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {_dsn_text(address, smtputf8)}"


def _orcpt(orcpt, smtputf8):
    """RFC 3461 4.2 ORCPT value ("rfc822;bob+2Bx@example.com", xtext) as an
    Original-Recipient value (RFC 3464 2.3.1), the address decoded."""
    addr_type, sep, addr = orcpt.partition(";")
    if not sep:
        addr_type, addr = "rfc822", orcpt
    return f"{addr_type.strip()}; {_dsn_text(_clean(xtext_decode(addr.strip())), smtputf8)}"


def _header_text(text, smtputf8):
    """Unstructured header text: UTF-8 as is for SMTPUTF8 (RFC 6532 3.2), else RFC 2047."""
    text = _clean(text)
    if smtputf8 or text.isascii():
        return text
    return Header(text, "utf-8", maxlinelen=_LINE_MAX).encode().replace("\n", "")


def _quoted_printable(data):
    """RFC 2045 6.7 quoted-printable of CRLF text."""
    import quopri

    lines = data.split(b"\r\n")
    return b"\r\n".join(quopri.encodestring(line).replace(b"=\n", b"=\r\n") for line in lines)


def _has_8bit(data):
    return any(b >= 0x80 for b in data)


def _boundary(parts):
    while True:
        b = "dsn-" + os.urandom(12).hex()
        if not any(b.encode() in p for p in parts):
            return b


def _utc(dt):
    return dt.astimezone(timezone.utc)


def _header_section(data):
    """The header fields of a message (through the CRLF of the last field), cut at
    MAX_HEADERS at a line end."""
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        head = b""
    elif end >= 0:
        head = data[: end + 2]
    else:
        head = data if data.endswith(b"\r\n") or not data else data + b"\r\n"
    if len(head) > MAX_HEADERS:
        cut = head.rfind(b"\r\n", 0, MAX_HEADERS)
        head = head[: cut + 2] if cut >= 0 else b""
    return head


def _original_subject(headers):
    try:
        return _clean(parse_message(headers + b"\r\n").header("Subject") or "")
    except Exception:
        return ""


def _describe(code):
    """A few words for common RFC 3463 codes."""
    detail = code.split(".", 1)[1] if "." in code else ""
    return _DESCRIPTIONS.get(detail) or ("permanent failure" if code.startswith("5") else "temporary failure")


_DESCRIPTIONS = {
    "1.1": "the recipient's mailbox does not exist",
    "1.2": "the recipient's domain does not exist or accepts no mail",
    "1.3": "bad recipient address syntax",
    "2.1": "the recipient's mailbox is disabled",
    "2.2": "the recipient's mailbox is full",
    "2.3": "the message is too large for the recipient",
    "3.4": "the message is too large",
    "4.1": "no answer from the recipient's mail server",
    "4.4": "unable to route to the recipient's mail server",
    "4.7": "delivery time expired",
    "7.1": "delivery not authorized, message refused",
}


# -- queue hook


def _read_original(queue, entry, max_full):
    """(header section, full message or None when larger than ``max_full``) of a queue
    entry: its file with ``msg_prefix``. Blocking; runs in a thread."""
    try:
        with queue.open_message(entry) as f:
            data = entry.msg_prefix + f.read(max_full + 1)
    except FileNotFoundError:
        # The message is gone (that is why delivery failed): a DSN without it, so the
        # sender still learns of the failure.
        return b"", None
    if len(data) > max_full:
        return _header_section(data[: max_full + 1]), None
    return _header_section(data), data


class QueueDSN:
    """The ``dsn`` hook of ``moxtw.queue.QueueService``: ``hook(entry, kind, error)``
    composes a DSN for one queue entry and adds it to ``queue`` to the entry's sender,
    with the null reverse-path (RFC 5321 4.5.5) and ``is_dsn`` so no DSN is
    ever sent about it. The Deferred fires with the new queue ids once the DSN is durable;
    the service kicks itself afterwards."""

    def __init__(self, queue, hostname, reactor=None, clock=None, max_full=MAX_FULL_ORIGINAL, dkim=None,
                 hold_rules=None):
        reactor = default_reactor(reactor)
        self.dkim = dkim  # DKIMSigners: DSNs are signed like other outgoing mail
        # hold_rules(account, sender_domain) -> hold predicate (moxtw.queue.holdrules)
        self.hold_rules = hold_rules
        self.queue = queue
        self.hostname = hostname
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.max_full = max_full

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def __call__(self, entry, kind, error):
        return self.many(kind, [(entry, error)])

    def many(self, kind, items):
        """One DSN about several recipients of one message (``items``: [(entry, error)]
        with the same base_id), as RFC 3464 2 lets a DSN report on several recipients.
        Deferred with the new queue ids."""
        return defer.Deferred.fromCoroutine(self._send(kind, list(items)))

    async def _send(self, kind, items):
        now = self.now()
        entry = items[0][0]
        if any(e.base_id != entry.base_id for e, _ in items):
            raise ValueError("one DSN covers recipients of one message")
        headers, original = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _read_original, self.queue, entry,
            self.max_full,
        )
        rcpts = [
            RecipientStatus(
                recipient=e.recipient,
                orcpt=e.dsn_orcpt,
                status=status(error, kind),
                diagnostic=error,
                remote_mta=None,  # known once the SMTP client records the host
                last_attempt=e.last_attempt if kind == KIND_DELAYED and e.last_attempt else now,
                will_retry_until=give_up_time(e) if kind == KIND_DELAYED else None,
            )
            for e, error in items
        ]
        message_id = f"{os.urandom(12).hex()}@{self.hostname}"
        msg = compose(
            kind=kind, hostname=self.hostname, sender=entry.sender, recipients=rcpts,
            original_headers=headers, original=original, envid=entry.dsn_envid or None,
            ret=entry.dsn_ret or None, now=now, message_id_domain=self.hostname,
            smtputf8=any(e.smtputf8 for e, _ in items), arrival_date=entry.queued, message_id=message_id,
        )
        subject = _original_subject(_header_section(msg))
        if self.dkim is not None:
            signature = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), self.dkim.sign, msg, now.timestamp())
            msg = signature + msg
        hold = self.hold_rules(None, "") if self.hold_rules is not None else False
        ids = await self.queue.add(
            msg, "", [entry.sender], sender_account=None, is_dsn=True,
            smtputf8=any(e.smtputf8 for e, _ in items), has_8bit=_has_8bit(msg), message_id=message_id,
            subject=subject, max_attempts=DEFAULT_MAX_ATTEMPTS, hold=hold,
        )
        log.info("queued {kind} DSN for {queueids} to {sender}", kind=kind,
                 queueids=",".join(str(e.id) for e, _ in items), sender=entry.sender, dsnids=ids)
        return ids


def give_up_time(entry):
    """When the last attempt of an entry is due, for Will-Retry-Until; None when the
    entry has no attempt limit (``max_attempts`` 0: retried until removed)."""
    if entry.max_attempts <= 0 or entry.last_attempt is None:
        return None
    t = entry.last_attempt
    for n in range(max(entry.attempts, 1), entry.max_attempts):
        t += retry_delay(n)
    return t
