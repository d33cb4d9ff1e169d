"""A dict-based resolver for unit tests: answers come from a table, synchronously."""

from twisted.internet import defer

from moxtw.dns.base import BaseResolver, normalize
from moxtw.dns.types import MX, Answer, DNSError, NoRecords, NotFound

MAX_CNAME_CHAIN = 8


class MockResolver(BaseResolver):
    """Answers from ``records``: ``{(name, rdtype): value}`` where value is a list of
    records (types as in :class:`moxtw.dns.Answer`; for MX also ``(pref, host)`` tuples),
    a :class:`DNSError` subclass or instance to raise. A name without any entry is
    NXDOMAIN; a name with entries of other types is NODATA. A ``(name, "CNAME")`` entry is
    followed for other types. ``authentic``: True for all answers, or a set of names (or
    ``(name, rdtype)`` pairs) whose answers are DNSSEC-authentic. ``default``: the
    answer (e.g. TemporaryFailure) for names without any entry, instead of NXDOMAIN. ``lookups`` records every
    ``(name, rdtype)`` asked, for assertions; ``run`` calls ``f`` at once."""

    def __init__(self, records=None, authentic=False, ttl=300, default=None):
        self.default = default
        self.records = {}
        for (name, rdtype), value in (records or {}).items():
            self.add(name, rdtype, value)
        self.authentic = authentic
        self.ttl = ttl
        self.lookups = []

    def add(self, name, rdtype, value):
        if rdtype == "MX" and isinstance(value, list):
            value = [v if isinstance(v, MX) else MX(int(v[0]), normalize(v[1]) if v[1] not in ("", ".") else "") for v in value]
        self.records[(normalize(name), rdtype.upper())] = value

    def _is_authentic(self, name, rdtype):
        if self.authentic is True or self.authentic is False:
            return self.authentic
        return name in self.authentic or (name, rdtype) in self.authentic

    def lookup_sync(self, name, rdtype):
        rdtype = rdtype.upper()
        asked = normalize(name)
        self.lookups.append((asked, rdtype))
        current = asked
        authentic = True
        for _ in range(MAX_CNAME_CHAIN):
            value = self.records.get((current, rdtype))
            if value is None and rdtype != "CNAME" and (current, "CNAME") in self.records:
                target = self.records[(current, "CNAME")]
                if isinstance(target, type) or isinstance(target, DNSError):
                    value = target
                else:
                    authentic = authentic and self._is_authentic(current, "CNAME")
                    current = normalize(target[0])
                    continue
            break
        if value is None and self.default is not None and not any(n == current for n, _ in self.records):
            value = self.default
        if value is None:
            if any(n == current for n, _ in self.records):
                raise NoRecords(asked, rdtype)
            raise NotFound(asked, rdtype)
        if isinstance(value, type) and issubclass(value, DNSError):
            raise value(asked, rdtype)
        if isinstance(value, DNSError):
            raise value
        if not value:
            raise NoRecords(asked, rdtype)
        return Answer(
            name=asked, rdtype=rdtype, records=tuple(value),
            authentic=authentic and self._is_authentic(current, rdtype),
            ttl=self.ttl, canonical=current,
        )

    def run(self, f, *args, **kwargs):
        return defer.maybeDeferred(f, *args, **kwargs)
