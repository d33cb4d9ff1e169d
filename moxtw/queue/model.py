"""Queue entries as Python values, and the SQL shared by the server and offline commands."""

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from moxtw.smtp.address import Address, Domain, parse_address, parse_domain


class QueueError(Exception):
    """Base class of the queue's errors."""


class EntryNotFound(QueueError, KeyError):
    """No queue entry with this id (delivered, dropped, or never existed)."""


# RFC 3461 4.1: NOTIFY is NEVER, or a list of SUCCESS, FAILURE and DELAY.
DSN_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY", "NEVER"})
# RFC 3461 4.3: RET=FULL or RET=HDRS.
DSN_RET_VALUES = frozenset({"FULL", "HDRS"})


@dataclass(frozen=True)
class QueueEntry:
    """One recipient of a queued message. Times are aware datetimes in UTC."""

    id: int
    base_id: int
    queued: datetime
    sender_account: str
    sender_localpart: str
    sender_domain: str
    recipient_localpart: str
    recipient_domain: str
    attempts: int
    max_attempts: int
    last_attempt: datetime | None
    next_attempt: datetime
    last_error: str
    hold: bool
    size: int
    message_id: str
    subject: str
    msg_prefix: bytes
    dsn_utf8: bytes | None
    has_8bit: bool
    smtputf8: bool
    is_dmarc_report: bool
    is_tls_report: bool
    is_dsn: bool
    require_tls: bool | None
    futurerelease_request: str
    dsn_ret: str
    dsn_envid: str
    dsn_notify: tuple = ()
    dsn_orcpt: str = ""
    transport: str = ""
    dialed_ips: dict = field(default_factory=dict)
    results: list = field(default_factory=list)

    @property
    def sender(self):
        """MAIL FROM as ``localpart@domain``; "" for the null reverse-path."""
        return join_address(self.sender_localpart, self.sender_domain)

    @property
    def recipient(self):
        return join_address(self.recipient_localpart, self.recipient_domain)

    @classmethod
    def from_row(cls, row):
        return cls(
            id=row["id"],
            base_id=row["base_id"],
            queued=from_unix(row["queued"]),
            sender_account=row["sender_account"],
            sender_localpart=row["sender_localpart"],
            sender_domain=row["sender_domain"],
            recipient_localpart=row["recipient_localpart"],
            recipient_domain=row["recipient_domain"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            last_attempt=from_unix(row["last_attempt"]) if row["last_attempt"] is not None else None,
            next_attempt=from_unix(row["next_attempt"]),
            last_error=row["last_error"],
            hold=bool(row["hold"]),
            size=row["size"],
            message_id=row["message_id"],
            subject=row["subject"],
            msg_prefix=bytes(row["msg_prefix"]),
            dsn_utf8=bytes(row["dsn_utf8"]) if row["dsn_utf8"] is not None else None,
            has_8bit=bool(row["has_8bit"]),
            smtputf8=bool(row["smtputf8"]),
            is_dmarc_report=bool(row["is_dmarc_report"]),
            is_tls_report=bool(row["is_tls_report"]),
            is_dsn=bool(row["is_dsn"]),
            require_tls=None if row["require_tls"] is None else bool(row["require_tls"]),
            futurerelease_request=row["futurerelease_request"],
            dsn_ret=row["dsn_ret"],
            dsn_envid=row["dsn_envid"],
            dsn_notify=tuple(v for v in row["dsn_notify"].split(",") if v),
            dsn_orcpt=row["dsn_orcpt"],
            transport=row["transport"],
            dialed_ips=json.loads(row["dialed_ips"]),
            results=json.loads(row["results"]),
        )


def to_unix(dt):
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: queue times must be timezone-aware")
    return dt.timestamp()


def from_unix(ts):
    return datetime.fromtimestamp(ts, timezone.utc)


def join_address(localpart, domain):
    """The address as text, localpart quoted where needed; "" for the null reverse-path."""
    if not localpart and not domain:
        return ""
    return str(Address(localpart, _domain(domain)))


@functools.lru_cache(maxsize=1024)
def _domain(text):
    if text.startswith("["):  # address literal: same text in both forms
        return Domain(text, text)
    return parse_domain(text)


def split_address(text):
    """``localpart@domain`` -> (localpart, lower-case U-label domain). "" -> ("", "")."""
    if text == "":
        return "", ""
    addr = parse_address(text)
    return addr.localpart, addr.domain.unicode


def address_filter(column_prefix, value):
    """SQL condition and arguments matching a full address, or a domain without "@"."""
    if "@" in value:
        lp, dom = split_address(value)
        return f"({column_prefix}_localpart = ? AND {column_prefix}_domain = ?)", [lp, dom]
    if value == "":
        return f"({column_prefix}_localpart = '' AND {column_prefix}_domain = '')", []
    return f"{column_prefix}_domain = ?", [parse_domain(value).unicode]


def select_entries(conn, account=None, sender=None, recipient=None, hold=None,
                   next_before=None, next_after=None, ids=None, limit=None):
    """Entries matching all given filters, ordered by id. ``sender``/``recipient`` match a
    full address, or all addresses of a domain when given without "@"; ``sender=""`` is the
    null reverse-path. ``next_before``/``next_after`` bound next_attempt (inclusive/exclusive)."""
    where = []
    args = []
    if account is not None:
        where.append("sender_account = ?")
        args.append(account)
    if sender is not None:
        cond, a = address_filter("sender", sender)
        where.append(cond)
        args.extend(a)
    if recipient is not None:
        cond, a = address_filter("recipient", recipient)
        where.append(cond)
        args.extend(a)
    if hold is not None:
        where.append("hold = ?")
        args.append(int(bool(hold)))
    if next_before is not None:
        where.append("next_attempt <= ?")
        args.append(to_unix(next_before))
    if next_after is not None:
        where.append("next_attempt > ?")
        args.append(to_unix(next_after))
    if ids is not None:
        ids = [int(i) for i in ids]
        where.append(f"id IN ({', '.join('?' for _ in ids)})")
        args.extend(ids)
    sql = "SELECT * FROM msg"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [QueueEntry.from_row(r) for r in conn.execute(sql, args)]
