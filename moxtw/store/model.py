"""Records the store hands out, and the rules for flags and mailbox names."""

import json
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from moxtw.store.errors import FlagError, MailboxNameError

# RFC 9051 2.3.2: system flags. \Recent is gone in IMAP4rev2 and never stored.
SYSTEM_FLAGS = {
    "\\seen": "seen",
    "\\answered": "answered",
    "\\flagged": "flagged",
    "\\deleted": "deleted",
    "\\draft": "draft",
}
FLAG_COLUMNS = tuple(SYSTEM_FLAGS.values())
CANONICAL = {col: "\\" + col.capitalize() for col in FLAG_COLUMNS}

# RFC 9051 9: atom-specials may not appear in a keyword (flag-keyword = atom).
_ATOM_SPECIALS = set('(){ %*"\\]')

INBOX = "Inbox"
DEFAULT_MAILBOXES = (
    # RFC 6154 special-use attributes.
    ("Inbox", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
    ("Rejects", None),
)
SPECIAL_USES = {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
MAX_MAILBOX_NAME = 1000
MAX_KEYWORD = 200


def split_flags(flags):
    """Split IMAP flags into ({column: True}, sorted lower-cased keywords).

    Raises FlagError for unknown system flags and keywords that are not atoms.
    """
    system = {}
    keywords = set()
    for flag in flags:
        if not isinstance(flag, str) or not flag:
            raise FlagError(f"invalid flag {flag!r}")
        low = flag.lower()
        if low.startswith("\\"):
            if low == "\\recent":
                continue  # RFC 3501 2.3.2: session flag, cannot be stored
            if low not in SYSTEM_FLAGS:
                raise FlagError(f"unknown system flag {flag}")
            system[SYSTEM_FLAGS[low]] = True
            continue
        if (
            len(flag) > MAX_KEYWORD
            or any(c in _ATOM_SPECIALS or ord(c) <= 0x20 or ord(c) >= 0x7F for c in flag)
        ):
            raise FlagError(f"invalid keyword {flag!r}")
        keywords.add(low)
    return system, sorted(keywords)


# Keywords are matched case-insensitively (stored lower-case) but shown in their
# registered spelling (IANA IMAP keywords registry, RFC 5788): clients such as mbsync
# compare "$Forwarded" byte for byte.
KEYWORD_SPELLING = {
    k.lower(): k
    for k in (
        "$Forwarded", "$Junk", "$NotJunk", "$Phishing", "$MDNSent", "$Important",
        "$SubmitPending", "$Submitted", "$MailFlagBit0", "$MailFlagBit1", "$MailFlagBit2",
        "Junk", "NonJunk", "NotJunk",
    )
}


def display_keyword(keyword):
    return KEYWORD_SPELLING.get(keyword, keyword)


def flags_tuple(row_or_dict, keywords):
    out = [CANONICAL[c] for c in FLAG_COLUMNS if row_or_dict[c]]
    out.extend(display_keyword(k) for k in keywords)
    return tuple(out)


def normalize_mailbox_name(name):
    """Return the stored form of a mailbox name or raise MailboxNameError.

    Names are NFC UTF-8 with "/" as hierarchy separator; INBOX (any case, RFC 9051 5.1) is
    spelled "Inbox", also as a parent.
    """
    if not isinstance(name, str):
        raise MailboxNameError("mailbox name must be text")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise MailboxNameError("empty mailbox name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: from bytes that were not UTF-8
        raise MailboxNameError("mailbox name is not valid UTF-8") from None
    if len(encoded) > MAX_MAILBOX_NAME:
        raise MailboxNameError("mailbox name too long")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        raise MailboxNameError("control characters in mailbox name")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise MailboxNameError("empty hierarchy component in mailbox name")
    first, sep, rest = name.partition("/")
    if first.lower() == "inbox":
        name = INBOX + sep + rest
    return name


def check_new_mailbox_name(name):
    """Like normalize_mailbox_name, for a mailbox about to be created (CREATE, RENAME,
    delivery into a missing mailbox): "." and ".." hierarchy components are refused too.

    They read as "this level" and "the parent" to clients, tools and file systems, and
    "a/../b" would name a different mailbox than it shows. Existing mailboxes with such
    names stay reachable, so they can still be renamed or deleted.
    """
    name = normalize_mailbox_name(name)
    if any(part in (".", "..") for part in name.split("/")):
        raise MailboxNameError('"." or ".." as hierarchy component in mailbox name')
    return name


def parents(name):
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class Placed(list):
    """What an APPEND, COPY or MOVE placed in a mailbox (Messages, or (old uid, new uid)
    pairs), with the mailbox's UIDVALIDITY read in the same transaction, for APPENDUID
    and COPYUID (RFC 4315 3): another session may delete the mailbox (or delete and
    create it again) right after the commit, so it cannot be looked up by name later."""

    def __init__(self, items, uidvalidity):
        super().__init__(items)
        self.uidvalidity = uidvalidity


@dataclass(frozen=True)
class Mailbox:
    id: int
    name: str
    special_use: object
    uidvalidity: int
    uidnext: int
    modseq: int
    total: int
    unseen: int
    deleted: int
    size: int
    keywords: tuple

    @classmethod
    def from_row(cls, row):
        return cls(
            id=row["id"],
            name=row["name"],
            special_use=row["special_use"],
            uidvalidity=row["uidvalidity"],
            uidnext=row["uidnext"],
            modseq=row["modseq"],
            total=row["total"],
            unseen=row["unseen"],
            deleted=row["deleted"],
            size=row["size"],
            keywords=tuple(display_keyword(k) for k in json.loads(row["keywords"])),
        )


def to_unix(dt):
    return int(dt.timestamp())


def from_unix(ts, tz_minutes=0):
    return datetime.fromtimestamp(ts, timezone(timedelta(minutes=tz_minutes)))


@dataclass(frozen=True)
class Message:
    """One message in one mailbox. JSON columns decode on first use."""

    id: int
    mailbox_id: int
    uid: int
    modseq: int
    flags: tuple
    size: int
    received: datetime
    saved: datetime
    message_id: str
    subject: str
    thread_id: int
    preview: str
    envelope_json: str = field(repr=False)
    bodystructure_json: str = field(repr=False)
    part_json: str = field(repr=False)
    row: dict = field(repr=False, compare=False)

    @property
    def envelope(self):
        return json.loads(self.envelope_json)

    @property
    def bodystructure(self):
        return json.loads(self.bodystructure_json)

    @property
    def part(self):
        return json.loads(self.part_json)

    @property
    def keywords(self):
        return tuple(f for f in self.flags if not f.startswith("\\"))

    @classmethod
    def from_row(cls, row):
        d = dict(row)
        return cls(
            id=d["id"],
            mailbox_id=d["mailbox_id"],
            uid=d["uid"],
            modseq=d["modseq"],
            flags=flags_tuple(d, json.loads(d["keywords"])),
            size=d["size"],
            received=from_unix(d["received"], d["received_tz"]),
            saved=from_unix(d["saved"]),
            message_id=d["message_id"],
            subject=d["subject"],
            thread_id=d["thread_id"],
            preview=d["preview"],
            envelope_json=d["envelope"],
            bodystructure_json=d["bodystructure"],
            part_json=d["part"],
            row=d,
        )


@dataclass
class DeliveryFacts:
    """What the SMTP server learned about an incoming message, kept for reputation."""

    remote_ip: str = ""
    ehlo_domain: str = ""
    mailfrom: str = ""
    rcptto: str = ""
    msgfrom_localpart: str = ""
    msgfrom_domain: str = ""
    msgfrom_org_domain: str = ""
    ehlo_validated: bool = False
    mailfrom_validated: bool = False
    msgfrom_validated: bool = False
    spf_result: str = ""
    dkim_domains: tuple = ()
    dmarc_result: str = ""
    iprev_result: str = ""
    tls_version: str = ""
    tls_cipher: str = ""
    requiretls: bool = False
    is_reject: bool = False
    is_forward: bool = False
    is_mailing_list: bool = False
    dsn: bool = False
    junk_score: object = None
    junk_reason: str = ""  # why the junk analysis accepted it, or refused it for a Rejects copy (its reason)


@dataclass
class SearchCriteria:
    """Conditions answered from the index; all given ones must hold (AND)."""

    uid_ranges: object = None  # [(lo, hi)], inclusive
    flags_set: tuple = ()  # e.g. ("\\Seen", "$junk")
    flags_unset: tuple = ()
    received_since: object = None  # datetime, inclusive
    received_before: object = None  # datetime, exclusive
    sent_since: object = None
    sent_before: object = None
    larger: object = None  # RFC822.SIZE > larger
    smaller: object = None  # RFC822.SIZE < smaller
    modseq_min: object = None  # MODSEQ >= modseq_min (RFC 7162 3.1.5)
    message_id: object = None
    subject_contains: object = None
    from_contains: object = None
    text: object = None  # full-text match on headers and text parts (whole words)
    # Prefilters on the search text of moxtw.message.searchtext (IMAP SEARCH BODY, TEXT,
    # HEADER), case-insensitive substrings: a message passes when its text is not indexed
    # (text_indexed = 0) or when the trigram index has it. Strings shorter than 3 characters
    # (after lower-casing) cannot be looked up and are not tested. Callers confirm on the
    # text (Account.search_texts) or the file.
    body_contains: tuple = ()  # each occurs in the body text
    text_contains: tuple = ()  # each occurs in the header text or the body text
    header_contains: tuple = ()  # (field name, string): the field is present, with the string
