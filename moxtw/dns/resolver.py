"""The real resolver: dnspython's blocking stub resolver in a thread pool, with a TTL cache.

Queries go to the configured recursive resolvers (or those of /etc/resolv.conf) with EDNS0
(RFC 6891), the DO bit (RFC 3225) and the AD flag (RFC 6840 5.7), so a validating resolver
says whether the answer is DNSSEC-authentic. As in mox, that AD bit is only believed when
the resolver is configured as trusted (``trust_ad``): the path to it must be secure, e.g. a
local unbound (RFC 4035 4.9.3, RFC 6840 5.8).

Answers, NXDOMAIN and NODATA are cached in process, shared by all threads, bounded in size
with least-recently-used eviction; negative answers for the TTL of RFC 2308 section 5.
"""

import collections
import ipaddress
import math
import re
import threading
import time
from dataclasses import replace

import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from prometheus_client import Counter
from twisted.internet import threads as twisted_threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from moxtw.clock import default_reactor
from moxtw.dns.base import RDTYPES, BaseResolver, normalize
from moxtw.dns.types import (
    MX,
    SOA,
    SRV,
    TLSA,
    Answer,
    InvalidName,
    NoRecords,
    NotFound,
    TemporaryFailure,
)
from moxtw.metrics import REGISTRY

log = Logger(namespace="moxtw.dns")

LOOKUPS = Counter(
    "dns_lookups_total",
    "DNS lookups by record type and result (ok, nxdomain, nodata, temperror, invalid, "
    "cached: answered from the cache, positive or negative).",
    ["type", "result"],
    registry=REGISTRY,
)
for _t in sorted(RDTYPES):
    for _r in ("ok", "nxdomain", "nodata", "temperror", "invalid", "cached"):
        LOOKUPS.labels(type=_t, result=_r)
del _t, _r

# Positive answers are cached for at most a day, negative ones for at most an hour (RFC
# 2308 5 suggests 1 to 3 hours); without an SOA in the response for 5 minutes.
MAX_POSITIVE_TTL = 86400
MAX_NEGATIVE_TTL = 3600
NEGATIVE_TTL_WITHOUT_SOA = 300

# RFC 6891 6.2.5 leaves the size to us; 1232 avoids IP fragmentation (DNS flag day 2020).
EDNS_PAYLOAD = 1232

_BRACKETED = re.compile(r"^\[([^\]]+)\](?::(\d+))?$")


def parse_server(text):
    """``(ip, port)`` of a resolver address: "ip", "ip:port", "[ipv6]" or "[ipv6]:port".
    ValueError if it is not an IP address."""
    text = text.strip()
    m = _BRACKETED.match(text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    ip = ipaddress.ip_address(host)
    port = 53 if port is None else int(port)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in resolver address {text!r}")
    return str(ip), port


def system_servers():
    """The nameservers of /etc/resolv.conf as parsed by dnspython; 127.0.0.1 if there
    are none or the file cannot be read."""
    try:
        r = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError, ValueError):
        return [("127.0.0.1", 53)]
    out = []
    for ns in r.nameservers:
        if isinstance(ns, str):
            out.append((ns, r.nameserver_ports.get(ns, r.port)))
        elif isinstance(ns, dns.nameserver.Do53Nameserver):
            out.append((ns.address, ns.port))
    return out or [("127.0.0.1", 53)]


class _MonotonicClock:
    def seconds(self):
        return time.monotonic()


class _Cache:
    """A TTL cache shared between threads, bounded at ``size`` entries, least recently
    used evicted first. Values are stored with their expiry time."""

    def __init__(self, size, clock):
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._entries = collections.OrderedDict()

    def get(self, key):
        """``(value, seconds left)`` or None."""
        now = self.clock.seconds()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value, expires - now

    def put(self, key, value, ttl):
        if self.size <= 0 or ttl <= 0:
            return
        expires = self.clock.seconds() + ttl
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self):
        with self._lock:
            return len(self._entries)


def _host(name):
    """A dnspython name as lower-case text without the trailing dot; the root is ""."""
    if name == dns.name.root:
        return ""
    return name.to_text(omit_final_dot=True).lower()


def _convert(rdtype, rrset):
    """``(records, raw)`` of an rrset as the values of :class:`Answer`."""
    records, raw = [], []
    for rd in rrset:
        if rdtype in ("A", "AAAA"):
            records.append(rd.address)
        elif rdtype == "MX":
            # RFC 7505 3: the null MX has exchange "." (and preference 0).
            records.append(MX(rd.preference, _host(rd.exchange)))
        elif rdtype == "TXT":
            # RFC 7208 3.3, RFC 6376 3.6.2.2: the character-strings are concatenated.
            data = b"".join(rd.strings)
            raw.append(data)
            records.append(data.decode("utf-8", errors="replace"))
        elif rdtype in ("PTR", "CNAME", "NS"):
            records.append(_host(rd.target))
        elif rdtype == "SRV":
            records.append(SRV(rd.priority, rd.weight, rd.port, _host(rd.target)))
        elif rdtype == "TLSA":
            records.append(TLSA(rd.usage, rd.selector, rd.mtype, bytes(rd.cert)))
        elif rdtype == "CAA":
            # RFC 8659 4.1: flags, tag and value, as zone-file text ('0 issue "ca.example"').
            records.append(rd.to_text())
        elif rdtype == "SOA":
            records.append(SOA(_host(rd.mname), _host(rd.rname), rd.serial, rd.refresh,
                               rd.retry, rd.expire, rd.minimum))
    return tuple(records), tuple(raw)


def _negative_ttl(response, chain):
    """How long an NXDOMAIN or NODATA response may be cached: RFC 2308 5, the minimum of
    the SOA's TTL and its MINIMUM field, the SOA being that of a zone enclosing the last
    name of the CNAME chain; bounded by the TTLs of the CNAMEs followed."""
    ttl = None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and chain.canonical_name.is_subdomain(rrset.name):
            ttl = min(rrset.ttl, rrset[0].minimum)
            break
    if ttl is None:
        ttl = NEGATIVE_TTL_WITHOUT_SOA
    for crrset in chain.cnames:
        ttl = min(ttl, crrset.ttl)
    return min(ttl, MAX_NEGATIVE_TTL)


class Resolver(BaseResolver):
    """Stub resolver on dnspython, talking to ``servers`` (``"ip"``, ``"ip:port"``,
    ``"[ipv6]:port"``; None: those of /etc/resolv.conf).

    ``timeout``: seconds to wait for one server's answer; ``attempts``: rounds over all
    servers before a lookup fails temporarily. ``cache_size``: cached answers (0: no
    cache). ``threads``: size of the thread pool running the blocking lookups, started on
    first use and stopped by :meth:`stop` or at reactor shutdown. ``trust_ad``: believe
    the AD bit of the servers' responses (only for a validating resolver on a trusted
    path). ``clock``: gives the cache time (``seconds()``, e.g. :class:`task.Clock`);
    a monotonic clock by default.

    The Deferred API (:meth:`run` and all built on it) is for the reactor thread;
    :meth:`lookup_sync` for code already in the pool; on the reactor thread it would block
    the reactor while the servers are asked.
    """

    def __init__(self, servers=None, timeout=5.0, attempts=2, cache_size=10000, threads=8,
                 trust_ad=False, reactor=None, clock=None):
        if servers is None:
            self.servers = system_servers()
        else:
            self.servers = [parse_server(s) for s in servers]
        if not self.servers:
            raise ValueError("no DNS servers")
        if timeout <= 0 or attempts < 1 or threads < 1:
            raise ValueError("timeout must be positive, attempts and threads at least 1")
        self.timeout = float(timeout)
        self.attempts = int(attempts)
        self.trust_ad = bool(trust_ad)
        self.threads = int(threads)
        reactor = default_reactor(reactor)
        self._reactor = reactor
        self._cache = _Cache(int(cache_size), clock or _MonotonicClock())
        self._pool = None
        self._shutdown_trigger = None

    # -- thread pool

    def run(self, f, *args, **kwargs):
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.threads, name="moxtw-dns")
            self._pool.start()
            self._shutdown_trigger = self._reactor.addSystemEventTrigger(
                "before", "shutdown", self._at_shutdown)
        return twisted_threads.deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def _at_shutdown(self):
        self._shutdown_trigger = None
        self.stop()

    def stop(self):
        """Stop the thread pool, waiting for running lookups. Lookups started later start
        a new pool."""
        pool, self._pool = self._pool, None
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if pool is not None:
            pool.stop()

    # -- lookups

    def lookup_sync(self, name, rdtype):
        rdtype = rdtype.upper()
        if rdtype not in RDTYPES:
            raise ValueError(f"unsupported record type {rdtype!r}")
        try:
            asked = normalize(name)
        except InvalidName as e:
            LOOKUPS.labels(type=rdtype, result="invalid").inc()
            raise InvalidName(name, rdtype, e.text) from None

        hit = self._cache.get((asked, rdtype))
        if hit is not None:
            value, left = hit
            LOOKUPS.labels(type=rdtype, result="cached").inc()
            if isinstance(value, Answer):
                log.debug("dns {rdtype} {name}: cached", rdtype=rdtype, name=asked)
                return replace(value, ttl=math.ceil(left))
            cls, text = value
            log.debug("dns {rdtype} {name}: cached {error}", rdtype=rdtype, name=asked,
                      error=cls.__name__)
            raise cls(asked, rdtype, text)

        start = time.monotonic()
        result, ttl = self._query(asked, rdtype)
        ms = round((time.monotonic() - start) * 1000, 1)
        if isinstance(result, Answer):
            LOOKUPS.labels(type=rdtype, result="ok").inc()
            log.debug("dns {rdtype} {name}: {n} records", rdtype=rdtype, name=asked,
                      n=len(result.records), authentic=result.authentic, ms=ms)
            self._cache.put((asked, rdtype), result, ttl)
            return result
        label = {NotFound: "nxdomain", NoRecords: "nodata", InvalidName: "invalid"}.get(
            type(result), "temperror")
        LOOKUPS.labels(type=rdtype, result=label).inc()
        log.debug("dns {rdtype} {name}: {result}", rdtype=rdtype, name=asked, result=label,
                  error=result.text, ms=ms)
        if isinstance(result, (NotFound, NoRecords)):
            self._cache.put((asked, rdtype), (type(result), result.text), ttl)
        raise result

    def _query(self, asked, rdtype):
        """Ask the servers; ``(Answer or DNSError instance, seconds to cache)``."""
        try:
            qname = dns.name.Name([label.encode("ascii") for label in asked.split(".")] + [b""])
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel) as e:
            return InvalidName(asked, rdtype, str(e)), 0
        # RFC 3225 3: DO asks for DNSSEC records; RFC 6840 5.7: AD asks the resolver to
        # say whether it validated, even without DO.
        request = dns.message.make_query(
            qname, rdtype, want_dnssec=True, payload=EDNS_PAYLOAD,
            flags=dns.flags.RD | dns.flags.AD)
        servers = list(self.servers)
        errors = []
        for _ in range(self.attempts):
            for server in list(servers):
                host, port = server
                request.id = dns.entropy.random_16()  # RFC 5452 9.2: a new random ID per query
                try:
                    # Falls back to TCP when the UDP answer is truncated (RFC 7766 5).
                    # Answers with a wrong ID or source are ignored (RFC 5452 9.1).
                    response, _tcp = dns.query.udp_with_fallback(
                        request, host, timeout=self.timeout, port=port,
                        ignore_unexpected=True, ignore_errors=True)
                except dns.exception.Timeout:
                    errors.append(f"{host}:{port}: timeout")
                    continue
                except (OSError, EOFError, ValueError, dns.exception.DNSException) as e:
                    # Unreachable or broken server: do not ask it again for this lookup.
                    errors.append(f"{host}:{port}: {e.__class__.__name__}: {e}")
                    servers.remove(server)
                    continue
                rcode = response.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return self._result(asked, rdtype, response)
                if rcode == dns.rcode.YXDOMAIN:
                    # RFC 6672 2.2: a DNAME substitution made the name too long.
                    return InvalidName(asked, rdtype, "YXDOMAIN"), 0
                # SERVFAIL, REFUSED, NOTIMP, FORMERR: this server cannot answer, maybe
                # another can (RFC 1035 7.3). Not asked again: resolvers cache their
                # failures for a while (RFC 9520).
                errors.append(f"{host}:{port}: {dns.rcode.to_text(rcode)}")
                servers.remove(server)
            if not servers:
                break
        return TemporaryFailure(asked, rdtype, "; ".join(errors)), 0

    def _result(self, asked, rdtype, response):
        try:
            chain = response.resolve_chaining()
        except dns.exception.DNSException as e:
            # A CNAME chain too long, or records for a name said not to exist.
            return TemporaryFailure(asked, rdtype, f"bad response: {e}"), 0
        canonical = _host(chain.canonical_name)
        via = "" if canonical == asked else f"via CNAME {canonical}"
        # RFC 6604 3: with CNAMEs, the rcode is about the last name of the chain.
        if response.rcode() == dns.rcode.NXDOMAIN:
            return NotFound(asked, rdtype, via), _negative_ttl(response, chain)
        if chain.answer is None:
            return NoRecords(asked, rdtype, via), _negative_ttl(response, chain)
        records, raw = _convert(rdtype, chain.answer)
        ttl = min(chain.minimum_ttl, MAX_POSITIVE_TTL)
        answer = Answer(
            name=asked, rdtype=rdtype, records=records,
            # The AD bit is only as good as the path to the resolver (RFC 6840 5.8).
            authentic=self.trust_ad and bool(response.flags & dns.flags.AD),
            ttl=ttl, canonical=canonical, raw=raw,
        )
        return answer, ttl
