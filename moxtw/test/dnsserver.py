"""A real authoritative DNS server on loopback for end-to-end tests, built on twisted.names.

:class:`LoopbackDNS` serves an in-memory table over UDP and TCP on 127.0.0.1, one random
port for both, on the reactor; point a :class:`moxtw.dns.resolver.Resolver` at its
``address``. The table has the format of :class:`moxtw.dns.MockResolver`::

    {("example.org", "MX"): [(10, "mx.example.org")],       # or MX(10, "mx.example.org")
     ("mx.example.org", "A"): ["192.0.2.1"],
     ("example.org", "TXT"): ["v=spf1 -all"],               # str split in 255-byte strings
     ("www.example.org", "CNAME"): ["example.org"],
     ("_25._tcp.mx.example.org", "TLSA"): [TLSA(3, 1, 1, digest)],
     ("broken.example.org", "A"): TemporaryFailure}         # SERVFAIL

A :class:`DNSError` subclass (or instance) as value answers NXDOMAIN (NotFound), NODATA
(NoRecords) or SERVFAIL (TemporaryFailure); an int answers that rcode (``dns.EREFUSED``).
A name without entries is NXDOMAIN, a name with entries of other types NODATA; both carry
an SOA in the authority section (RFC 2308 3) whose MINIMUM is ``negative_ttl``. CNAMEs are
followed within the table and the target's records included (RFC 1034 4.3.2 step 3a).

Blocking lookups against it must run off the reactor thread (the resolver's thread pool,
through its Deferred API): the server answers on the reactor thread.
"""

import struct
from dataclasses import dataclass

from twisted.internet import defer, error, protocol
from twisted.names import dns, server

from moxtw.dns import MX, SOA, SRV, TLSA, DNSError, NoRecords, NotFound, TemporaryFailure, normalize

TLSA_TYPE = 52  # RFC 6698 7.1; twisted.names has no record class for it
CAA_TYPE = 257  # RFC 8659 7.1; neither for this one
UDP_PAYLOAD = 1232  # our EDNS UDP payload size (RFC 6891 6.2.5)
MAX_CHAIN = 8
DO_BIT = 0x8000  # RFC 3225 3: in the OPT record's TTL field

_TYPE_CODES = {"TLSA": TLSA_TYPE, "CAA": CAA_TYPE}
_TYPE_CODES.update({name: code for name, code in dns.REV_TYPES.items()})
_TYPE_NAMES = {code: name for name, code in _TYPE_CODES.items()}


@dataclass(frozen=True)
class Query:
    """A query the server received."""

    name: str
    rdtype: str
    transport: str  # "udp" or "tcp"
    edns: int | None  # EDNS version, None without an OPT record
    do: bool
    ad: bool
    payload: int  # the requester's UDP payload size, 512 without EDNS


def _host(host):
    return "" if host in ("", ".") else normalize(host)


def _character_strings(value):
    """A TXT record as its character-strings of at most 255 octets (RFC 1035 3.3.14)."""
    if isinstance(value, (tuple, list)):
        strings = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        if any(len(s) > 255 for s in strings):
            raise ValueError("TXT character-string longer than 255 octets")
        return strings
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def _payload(rdtype, value):
    """The twisted.names record for one value of the table."""
    if rdtype == "A":
        return dns.Record_A(value)
    if rdtype == "AAAA":
        return dns.Record_AAAA(value)
    if rdtype == "MX":
        pref, host = (value.preference, value.host) if isinstance(value, MX) else value
        # RFC 7505 3: the null MX is ".", the root, encoded as a zero-length name.
        return dns.Record_MX(int(pref), _host(host).encode("ascii"))
    if rdtype == "TXT":
        return dns.Record_TXT(*_character_strings(value))
    if rdtype in ("PTR", "CNAME", "NS"):
        cls = {"PTR": dns.Record_PTR, "CNAME": dns.Record_CNAME, "NS": dns.Record_NS}[rdtype]
        return cls(_host(value).encode("ascii"))
    if rdtype == "SRV":
        v = value if isinstance(value, SRV) else SRV(*value)
        return dns.Record_SRV(v.priority, v.weight, v.port, _host(v.target).encode("ascii"))
    if rdtype == "TLSA":
        v = value if isinstance(value, TLSA) else TLSA(*value)
        # RFC 6698 2.1: usage, selector, matching type (one octet each), then the data.
        return dns.UnknownRecord(struct.pack("!BBB", v.usage, v.selector, v.mtype) + bytes(v.data))
    if rdtype == "CAA":
        # RFC 8659 4.1: flags octet, tag length, tag, value; the table holds zone-file
        # text like '0 issue "letsencrypt.org"'.
        flags, tag, rest = value.split(" ", 2)
        data = rest.strip().strip('"').encode("ascii")
        return dns.UnknownRecord(struct.pack("!BB", int(flags), len(tag)) + tag.encode("ascii") + data)
    if rdtype == "SOA":
        v = value if isinstance(value, SOA) else SOA(*value)
        return dns.Record_SOA(_host(v.mname).encode("ascii"), _host(v.rname).encode("ascii"),
                              v.serial, v.refresh, v.retry, v.expire, v.minimum)
    raise ValueError(f"unsupported record type {rdtype}")


class Zone:
    """The table, and the answer to one question as ``(rcode, answers, authority)``.
    ``ttl`` is the TTL of all records; ``negative_ttl`` the SOA MINIMUM and ``soa_ttl``
    the SOA's own TTL (a resolver caches negative answers for the smaller, RFC 2308 5);
    ``soa`` False leaves the SOA out of negative answers."""

    def __init__(self, records=None, ttl=300, negative_ttl=60, soa_ttl=3600, soa=True):
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.soa_ttl = soa_ttl
        self.soa = soa
        self.entries = {}
        self.set(records or {})

    def set(self, records):
        """Replace the whole table."""
        self.entries = {}
        for (name, rdtype), value in records.items():
            self.add(name, rdtype, value)

    def add(self, name, rdtype, value):
        """Add or replace the entry of ``(name, rdtype)``."""
        rdtype = rdtype.upper()
        if rdtype not in _TYPE_CODES:
            raise ValueError(f"unknown record type {rdtype}")
        if isinstance(value, DNSError):
            value = type(value)
        if isinstance(value, type) and issubclass(value, DNSError):
            if value not in (NotFound, NoRecords, TemporaryFailure):
                raise ValueError(f"{value.__name__} has no DNS answer; give an rcode instead")
            entry = value
        elif isinstance(value, int):
            entry = value
        else:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"records of {name} {rdtype} must be a list")
            entry = []
            for v in value:
                target = _host(v) if rdtype == "CNAME" else None
                entry.append((target, _payload(rdtype, v)))
        self.entries[(normalize(name), rdtype)] = entry

    def _rr(self, name, rdtype, payload):
        return dns.RRHeader(name.encode("ascii"), _TYPE_CODES[rdtype], dns.IN, self.ttl,
                            payload, auth=True)

    def _soa(self):
        if not self.soa:
            return []
        # The table is one zone at the root, so this SOA encloses every name.
        payload = dns.Record_SOA(b"ns.loopback.test", b"hostmaster.loopback.test", 1,
                                 3600, 600, 86400, self.negative_ttl)
        return [dns.RRHeader(b"", dns.SOA, dns.IN, self.soa_ttl, payload, auth=True)]

    def answer(self, name, rdtype):
        answers = []
        current = name
        for _ in range(MAX_CHAIN):
            entry = self.entries.get((current, rdtype))
            if entry is None and rdtype != "CNAME":
                chained = self.entries.get((current, "CNAME"))
                if isinstance(chained, list) and chained:
                    target, payload = chained[0]
                    answers.append(self._rr(current, "CNAME", payload))
                    current = target
                    continue
                entry = chained
            break
        else:
            return dns.ESERVER, [], []  # CNAME loop
        if entry is NotFound:
            return dns.ENAME, answers, self._soa()
        if entry is NoRecords:
            return dns.OK, answers, self._soa()
        if entry is TemporaryFailure:
            return dns.ESERVER, [], []
        if isinstance(entry, int):
            return entry, [], []
        if entry:
            return dns.OK, answers + [self._rr(current, rdtype, p) for _, p in entry], []
        # RFC 2308 2.1/2.2: a name with other records is NODATA, else NXDOMAIN (RFC 6604
        # 3: the rcode is about the last name of the CNAME chain).
        if entry is not None or any(n == current for n, _ in self.entries):
            return dns.OK, answers, self._soa()
        return dns.ENAME, answers, self._soa()


class _Factory(server.DNSServerFactory):
    """twisted.names' server protocol plumbing; questions answered by the Zone, with
    EDNS, the AD bit and UDP truncation handled here."""

    def __init__(self, fixture):
        super().__init__()
        self.fixture = fixture
        self.lost = {}

    def connectionLost(self, protocol):
        super().connectionLost(protocol)
        d = self.lost.pop(protocol, None)
        if d is not None:
            d.callback(None)

    def handleQuery(self, message, protocol, address):
        fx = self.fixture
        question = message.queries[0]
        name = question.name.name.decode("ascii", "replace").lower().rstrip(".")
        rdtype = _TYPE_NAMES.get(question.type, f"TYPE{question.type}")
        opts = [r for r in message.additional if r.type == dns.OPT]
        edns, do, payload = None, False, 512
        if opts:
            # RFC 6891 6.1.2/6.1.3: the OPT CLASS is the payload size, the TTL holds the
            # extended rcode, version and flags.
            edns = (opts[0].ttl >> 16) & 0xFF
            do = bool(opts[0].ttl & DO_BIT)
            payload = max(512, opts[0].cls)
        udp = address is not None
        fx.queries.append(Query(name, rdtype, "udp" if udp else "tcp", edns, do,
                                bool(message.authenticData), payload))
        if udp and fx._drop:
            fx._drop -= 1
            return

        rcode, answers, authority = fx.zone.answer(name, rdtype)
        # RFC 6840 5.8: AD only for a requester that asked with DO or AD.
        ad = fx.ad and rcode in (dns.OK, dns.ENAME) and (do or bool(message.authenticData))
        response = dns.Message(
            id=message.id, answer=1, opCode=message.opCode, auth=1, recDes=message.recDes,
            recAv=0, rCode=rcode, authenticData=int(ad),
            checkingDisabled=message.checkingDisabled, maxSize=0)
        response.queries = message.queries[:]
        response.timeReceived = message.timeReceived  # DNSServerFactory.sendReply logs it
        response.answers = answers
        response.authority = authority
        if opts:
            # RFC 6891 7: answer EDNS with EDNS; RFC 3225 3: DO copied into the response.
            response.additional = [dns.RRHeader(b"", dns.OPT, UDP_PAYLOAD, DO_BIT if do else 0,
                                                dns.UnknownRecord(b""))]
        if udp and len(response.toStr()) > min(payload, UDP_PAYLOAD):
            # RFC 2181 9, RFC 1035 4.2.1: too large for UDP, set TC and let the requester
            # retry over TCP (RFC 7766 5).
            response.trunc = 1
            response.answers = []
            response.authority = []
        self.sendReply(protocol, response, address)


class LoopbackDNS:
    """An authoritative DNS server for ``records`` on 127.0.0.1, UDP and TCP on one port.

    ``start()`` binds and returns the port; ``address`` is "127.0.0.1:PORT" for
    ``Resolver(servers=[...])``; ``stop()`` returns a Deferred. ``set(records)`` and
    ``add(name, rdtype, value)`` change the table while running; ``ad``, ``ttl``,
    ``negative_ttl``, ``soa_ttl`` and ``soa`` (see :class:`Zone`) may be changed too.
    ``queries`` lists every :class:`Query` received; ``drop_next(n)`` leaves the next n
    UDP queries unanswered.
    """

    def __init__(self, records=None, ad=False, ttl=300, negative_ttl=60, soa_ttl=3600,
                 soa=True, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.zone = Zone(records, ttl=ttl, negative_ttl=negative_ttl, soa_ttl=soa_ttl, soa=soa)
        self.ad = ad
        self.queries = []
        self.port = None
        self._drop = 0
        self._factory = _Factory(self)
        self._udp = self._tcp = None

    def _zone_attribute(attr):
        return property(lambda self: getattr(self.zone, attr),
                        lambda self, value: setattr(self.zone, attr, value))

    ttl = _zone_attribute("ttl")
    negative_ttl = _zone_attribute("negative_ttl")
    soa_ttl = _zone_attribute("soa_ttl")
    soa = _zone_attribute("soa")
    del _zone_attribute

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def set(self, records):
        self.zone.set(records)

    def add(self, name, rdtype, value):
        self.zone.add(name, rdtype, value)

    def drop_next(self, n=1):
        self._drop = n

    def count(self, name=None, rdtype=None, transport=None):
        """Queries received, optionally only those for ``name``/``rdtype``/``transport``."""
        return sum(
            1 for q in self.queries
            if (name is None or q.name == normalize(name))
            and (rdtype is None or q.rdtype == rdtype)
            and (transport is None or q.transport == transport))

    def start(self):
        """Bind UDP on a free port and TCP on the same port (retrying on a clash)."""
        for _ in range(20):
            udp = self.reactor.listenUDP(0, dns.DNSDatagramProtocol(self._factory),
                                         interface="127.0.0.1")
            port = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(port, self._factory, interface="127.0.0.1")
            except error.CannotListenError:
                udp.stopListening()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            return port
        raise RuntimeError("no free port for UDP and TCP")

    def stop(self):
        ds = [defer.maybeDeferred(p.stopListening) for p in (self._udp, self._tcp) if p]
        self._udp = self._tcp = None
        for proto in list(self._factory.connections):
            d = defer.Deferred()
            self._factory.lost[proto] = d
            ds.append(d)
            proto.transport.abortConnection()
        return defer.gatherResults(ds).addCallback(lambda _: None)


class SilentUDP(protocol.DatagramProtocol):
    """A UDP port on 127.0.0.1 that takes queries and never answers; ``received`` holds
    the datagrams."""

    def __init__(self, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.received = []
        self.port = None
        self._listening = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._listening = self.reactor.listenUDP(0, self, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def datagramReceived(self, data, addr):
        self.received.append(data)

    def stop(self):
        p, self._listening = self._listening, None
        return defer.maybeDeferred(p.stopListening) if p else defer.succeed(None)


def loopback_dns(testcase, records=None, **kwargs):
    """A started :class:`LoopbackDNS`, stopped at the end of ``testcase``."""
    fx = LoopbackDNS(records, **kwargs)
    fx.start()
    testcase.addCleanup(fx.stop)
    return fx
