"""Values and errors of the resolver API, shared by the real and the mock resolver.

Names given to a resolver may be U-labels or A-labels, with or without the trailing dot;
names in answers are lower-case A-labels without the trailing dot.
"""

from dataclasses import dataclass, field


class DNSError(Exception):
    """A lookup that gave no records. ``name`` and ``rdtype`` say which."""

    def __init__(self, name, rdtype, text=""):
        self.name = name
        self.rdtype = rdtype
        self.text = text
        super().__init__(f"{rdtype} {name}: {text or self.describe}")

    describe = "lookup failed"
    temporary = False


class NotFound(DNSError):
    """NXDOMAIN: the name does not exist (RFC 8020: nor anything below it)."""

    describe = "no such domain"


class NoRecords(DNSError):
    """NODATA: the name exists but has no records of this type."""

    describe = "no records of this type"


class TemporaryFailure(DNSError):
    """SERVFAIL, REFUSED, timeout or a network error: trying later may work."""

    describe = "temporary failure"
    temporary = True


class InvalidName(DNSError):
    """The name cannot be looked up (bad IDNA, empty label, too long)."""

    describe = "invalid name"


@dataclass(frozen=True)
class MX:
    """An MX record. ``host`` is "" for the null MX (RFC 7505: preference 0, ".")."""

    preference: int
    host: str


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class SRV:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class SOA:
    """An SOA record (RFC 1035 3.3.13); ``rname`` is the mailbox as a domain name."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True)
class Answer:
    """Records of one lookup.

    ``records`` by type: A/AAAA: IP address strings; MX: :class:`MX`; TXT: ``str`` per
    record, its character-strings concatenated, decoded as UTF-8 with invalid bytes
    replaced (raw bytes in ``raw``); PTR/CNAME/NS: host names; TLSA: :class:`TLSA`; SRV:
    :class:`SRV` (target "" for ".", RFC 2782 "no service"); SOA: :class:`SOA`.
    ``name``: the name that was asked (A-label); ``canonical``: the name at
    the end of the CNAME chain (== name without CNAMEs); ``authentic``: DNSSEC-validated per
    the AD bit of a trusted resolver; ``ttl``: seconds the answer may be cached.
    """

    name: str
    rdtype: str
    records: tuple
    authentic: bool = False
    ttl: int = 0
    canonical: str = ""
    raw: tuple = field(default=(), compare=False)
