"""The resolver API: one blocking primitive, Deferred wrappers and typed conveniences.

A resolver implements :meth:`BaseResolver.lookup_sync` (blocking, for code already running
in the resolver's thread pool: pyspf, dkimpy) and :meth:`BaseResolver.run` (run a blocking
callable in that pool). Everything else is built on those two.
"""

import abc
import ipaddress
import re

from twisted.internet import defer

from moxtw.dns.types import Answer, DNSError, InvalidName, NoRecords, NotFound, TemporaryFailure

RDTYPES = frozenset({"A", "AAAA", "MX", "TXT", "PTR", "CNAME", "SRV", "TLSA", "NS", "SOA", "CAA"})

# RFC 3490 3.1: full stop, ideographic full stop, fullwidth full stop, halfwidth
# ideographic full stop all separate labels.
_LABEL_SEPARATORS = re.compile("[.\u3002\uff0e\uff61]")


def normalize(name):
    """``name`` as a lower-case A-label without the trailing dot; InvalidName if it cannot
    be a DNS name. Underscores are allowed (DKIM/DMARC/SRV labels, some MX hosts)."""
    if not isinstance(name, str):
        raise InvalidName(repr(name), "?", "not a string")
    text = name.strip()
    if not text.isascii():
        text = _LABEL_SEPARATORS.sub(".", text)
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise InvalidName(name, "?", "empty name")
    labels = []
    for label in text.split("."):
        if not label:
            raise InvalidName(name, "?", "empty label")
        if label.isascii():
            a = label.lower()
        else:
            try:
                import idna

                a = idna.encode(label, uts46=True).decode("ascii")
            except (ImportError, UnicodeError, ValueError):
                try:
                    a = label.encode("idna").decode("ascii")
                except UnicodeError as e:
                    raise InvalidName(name, "?", f"invalid internationalized label: {e}") from None
            if "." in a:
                # UTS 46 mapping can turn one character into several labels ("\u2488" is "1.").
                raise InvalidName(name, "?", "internationalized label maps to a dot")
        if len(a) > 63:
            raise InvalidName(name, "?", "label longer than 63 octets")
        labels.append(a)
    out = ".".join(labels)
    if len(out) > 253:
        raise InvalidName(name, "?", "name longer than 253 octets")
    return out


def client_ip(ip):
    """An IP address (str or ipaddress) as the address of a client: IPv4-mapped IPv6
    addresses (a v4 client seen on a dual-stack socket) become IPv4. Raises ValueError for
    text that is no address."""
    addr = ipaddress.ip_address(str(ip))
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def reverse_name(ip):
    """The PTR name of an IP address (RFC 1035 3.5, RFC 3596 2.5)."""
    return ipaddress.ip_address(ip).reverse_pointer


class BaseResolver(abc.ABC):
    """Deferred-based resolver. Lookups fail with :class:`NotFound`, :class:`NoRecords`,
    :class:`TemporaryFailure` or :class:`InvalidName` (all :class:`DNSError`)."""

    @abc.abstractmethod
    def lookup_sync(self, name, rdtype) -> Answer:
        """Blocking lookup of ``rdtype`` records of ``name`` (CNAMEs followed)."""

    @abc.abstractmethod
    def run(self, f, *args, **kwargs) -> defer.Deferred:
        """Run the blocking ``f(*args, **kwargs)`` in the resolver's thread pool."""

    def lookup(self, name, rdtype) -> defer.Deferred:
        return self.run(self.lookup_sync, name, rdtype)

    # -- conveniences, all returning Deferred[Answer]

    def mx(self, domain):
        return self.lookup(domain, "MX")

    def txt(self, name):
        return self.lookup(name, "TXT")

    def cname(self, name):
        return self.lookup(name, "CNAME")

    def srv(self, name):
        return self.lookup(name, "SRV")

    def tlsa(self, host, port, proto="tcp"):
        return self.lookup(f"_{int(port)}._{proto}.{normalize(host)}", "TLSA")

    def ptr(self, ip):
        return self.lookup(reverse_name(ip), "PTR")

    def ip(self, host, ipv4=True, ipv6=True):
        """A and AAAA records together (IPv6 first, as mox and RFC 6724 prefer), in one
        Answer; ``authentic`` only when every answer that had records was. Fails only
        when neither family gave records: TemporaryFailure if any lookup failed
        temporarily, else NotFound or NoRecords."""
        return self.run(self.ip_sync, host, ipv4, ipv6)

    def ip_sync(self, host, ipv4=True, ipv6=True):
        name = normalize(host)
        types = [t for t, on in (("AAAA", ipv6), ("A", ipv4)) if on]
        answers, errors = [], []
        for rdtype in types:
            try:
                answers.append(self.lookup_sync(name, rdtype))
            except DNSError as e:
                errors.append(e)
        if not answers:
            for cls in (TemporaryFailure, InvalidName, NotFound):
                for e in errors:
                    if isinstance(e, cls):
                        raise e
            raise NoRecords(name, "+".join(types))
        records = tuple(r for a in answers for r in a.records)
        return Answer(
            name=name, rdtype="+".join(types), records=records,
            authentic=all(a.authentic for a in answers),
            ttl=min(a.ttl for a in answers), canonical=answers[0].canonical,
        )
