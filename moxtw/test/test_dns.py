"""Tests for moxtw.dns: name normalisation, the mock resolver, and the real resolver against
a real authoritative DNS server on loopback (moxtw.test.dnsserver)."""

import hashlib
import time

from twisted.internet import defer, task
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as names_error
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.dns import (
    MX, SOA, SRV, TLSA, InvalidName, MockResolver, NoRecords, NotFound,
    TemporaryFailure, normalize, reverse_name,
)
from moxtw.dns import resolver as dnsresolver
from moxtw.dns.resolver import Resolver, parse_server
from moxtw.metrics import REGISTRY
from moxtw.test.dnsserver import LoopbackDNS, SilentUDP, loopback_dns

DIGEST = hashlib.sha256(b"certificate").digest()
DKIM_KEY = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 9  # 414 bytes


class NormalizeTests(SynchronousTestCase):
    def test_lower_case_trailing_dot(self):
        self.assertEqual(normalize("Mail.Example.ORG."), "mail.example.org")
        self.assertEqual(normalize(" example.org "), "example.org")

    def test_idna(self):
        self.assertEqual(normalize("Bücher.Example."), "xn--bcher-kva.example")
        self.assertEqual(normalize("xn--bcher-kva.example"), "xn--bcher-kva.example")
        # UTS 46 maps fullwidth letters; IDNA2008 keeps sharp s (not "fass").
        self.assertEqual(normalize("ＥＸＡＭＰＬＥ.org"), "example.org")
        self.assertEqual(normalize("faß.de"), "xn--fa-hia.de")

    def test_idna_dots(self):
        # RFC 3490 3.1: ideographic and fullwidth full stops separate labels.
        self.assertEqual(normalize("bücher\u3002example\u3002"), "xn--bcher-kva.example")
        self.assertEqual(normalize("bücher\uff0eexample"), "xn--bcher-kva.example")
        # U+2488 maps to "1.", which would smuggle in an empty label.
        self.assertRaises(InvalidName, normalize, "a.\u2488.com")

    def test_underscores(self):
        self.assertEqual(normalize("_DMARC.example.org"), "_dmarc.example.org")
        self.assertEqual(normalize("_25._tcp.MX.example.org"), "_25._tcp.mx.example.org")

    def test_label_length(self):
        self.assertEqual(normalize("a" * 63 + ".org"), "a" * 63 + ".org")
        self.assertRaises(InvalidName, normalize, "a" * 64 + ".org")
        # The A-label counts, not the U-label: 60 characters, 69 octets as A-label.
        self.assertRaises(InvalidName, normalize, "bücher" * 10 + ".org")

    def test_name_length(self):
        name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 octets
        self.assertEqual(normalize(name), name)
        self.assertRaises(InvalidName, normalize, name + "b")

    def test_invalid(self):
        for bad in ("", ".", "a..b", ".a", None, b"example.org"):
            self.assertRaises(InvalidName, normalize, bad)

    def test_reverse_name(self):
        self.assertEqual(reverse_name("192.0.2.1"), "1.2.0.192.in-addr.arpa")
        self.assertEqual(reverse_name("2001:db8::1"),
                         "1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa")


class MockResolverTests(SynchronousTestCase):
    def setUp(self):
        self.r = MockResolver({
            ("example.org", "MX"): [(10, "MX.example.org."), MX(20, "mx2.example.org")],
            ("null.example.org", "MX"): [(0, ".")],
            ("example.org", "TXT"): ["v=spf1 -all"],
            ("www.example.org", "CNAME"): ["example.org"],
            ("mx.example.org", "A"): ["192.0.2.1"],
            ("mx.example.org", "AAAA"): ["2001:db8::1"],
            ("v4.example.org", "A"): ["192.0.2.2"],
            ("v4.example.org", "AAAA"): NoRecords,
            ("fail.example.org", "A"): TemporaryFailure,
            ("fail.example.org", "AAAA"): NoRecords,
            ("gone.example.org", "TXT"): NotFound("gone.example.org", "TXT", "custom"),
            ("_25._tcp.mx.example.org", "TLSA"): [TLSA(3, 1, 1, DIGEST)],
            ("1.2.0.192.in-addr.arpa", "PTR"): ["mx.example.org"],
        }, authentic={"example.org"})

    def test_records(self):
        a = self.successResultOf(self.r.mx("Example.ORG."))
        self.assertEqual(a.records, (MX(10, "mx.example.org"), MX(20, "mx2.example.org")))
        self.assertEqual((a.name, a.rdtype, a.canonical, a.authentic),
                         ("example.org", "MX", "example.org", True))
        self.assertEqual(self.successResultOf(self.r.mx("null.example.org")).records, (MX(0, ""),))
        self.assertEqual(self.r.lookups[0], ("example.org", "MX"))

    def test_nxdomain_nodata(self):
        self.failureResultOf(self.r.txt("nx.example.org"), NotFound)
        self.failureResultOf(self.r.txt("mx.example.org"), NoRecords)
        f = self.failureResultOf(self.r.txt("gone.example.org"), NotFound)
        self.assertEqual(f.value.text, "custom")

    def test_cname(self):
        a = self.successResultOf(self.r.txt("www.example.org"))
        self.assertEqual(a.records, ("v=spf1 -all",))
        self.assertEqual((a.name, a.canonical), ("www.example.org", "example.org"))
        # The CNAME itself is not in the authentic set.
        self.assertFalse(a.authentic)
        a = self.successResultOf(self.r.cname("www.example.org"))
        self.assertEqual(a.records, ("example.org",))

    def test_ip(self):
        a = self.successResultOf(self.r.ip("mx.example.org"))
        self.assertEqual(a.records, ("2001:db8::1", "192.0.2.1"))
        self.assertEqual(self.successResultOf(self.r.ip("v4.example.org")).records, ("192.0.2.2",))
        self.failureResultOf(self.r.ip("fail.example.org"), TemporaryFailure)
        self.failureResultOf(self.r.ip("nx.example.org"), NotFound)
        self.failureResultOf(self.r.ip("example.org"), NoRecords)

    def test_tlsa_ptr(self):
        self.assertEqual(self.successResultOf(self.r.tlsa("MX.example.org", 25)).records,
                         (TLSA(3, 1, 1, DIGEST),))
        self.assertEqual(self.successResultOf(self.r.ptr("192.0.2.1")).records, ("mx.example.org",))

    def test_invalid_name(self):
        self.failureResultOf(self.r.mx("a..b"), InvalidName)


class ConfigTests(SynchronousTestCase):
    def test_parse_server(self):
        self.assertEqual(parse_server("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(parse_server("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parse_server("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parse_server("[::1]"), ("::1", 53))
        self.assertEqual(parse_server("2001:db8::53"), ("2001:db8::53", 53))
        for bad in ("ns.example.org", "127.0.0.1:0", "127.0.0.1:70000", "[::1]:x", ""):
            self.assertRaises(ValueError, parse_server, bad)

    def test_resolver_arguments(self):
        self.assertRaises(ValueError, Resolver, servers=[])
        self.assertRaises(ValueError, Resolver, servers=["127.0.0.1"], attempts=0)
        self.assertRaises(ValueError, Resolver, servers=["127.0.0.1"], timeout=0)
        r = Resolver(servers=None)
        self.assertTrue(r.servers)
        self.assertEqual(Resolver(servers=["127.0.0.1:5300"]).servers, [("127.0.0.1", 5300)])

    def test_unsupported_type(self):
        r = Resolver(servers=["127.0.0.1:9"])
        self.assertRaises(ValueError, r.lookup_sync, "example.org", "HINFO")


class CacheTests(SynchronousTestCase):
    def test_lru_and_expiry(self):
        clock = task.Clock()
        c = dnsresolver._Cache(2, clock)
        c.put("a", 1, 10)
        c.put("b", 2, 100)
        self.assertEqual(c.get("a"), (1, 10))  # "a" is now the most recently used
        c.put("c", 3, 100)
        self.assertIsNone(c.get("b"))
        self.assertEqual(len(c), 2)
        clock.advance(10)
        self.assertIsNone(c.get("a"))
        self.assertEqual(c.get("c"), (3, 90))
        c.put("d", 4, 0)  # not cached
        self.assertIsNone(c.get("d"))

    def test_disabled(self):
        c = dnsresolver._Cache(0, task.Clock())
        c.put("a", 1, 10)
        self.assertIsNone(c.get("a"))


RECORDS = {
    ("example.org", "A"): ["192.0.2.10", "192.0.2.11"],
    ("example.org", "AAAA"): ["2001:db8::10"],
    ("example.org", "MX"): [(10, "MX1.Example.org."), (20, "mx2.example.org")],
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("example.org", "NS"): ["ns1.example.org"],
    ("example.org", "SOA"): [SOA("ns1.example.org", "hostmaster.example.org", 2024010101,
                                 7200, 3600, 1209600, 300)],
    ("null.example.org", "MX"): [(0, ".")],
    ("sel._domainkey.example.org", "TXT"): [DKIM_KEY],
    ("split.example.org", "TXT"): [("v=spf1 ", "include:a.example ", "-all"), "second"],
    ("latin1.example.org", "TXT"): [b"caf\xe9"],
    ("big.example.org", "TXT"): ["x" * 3000],
    ("_25._tcp.mx1.example.org", "TLSA"): [TLSA(3, 1, 1, DIGEST), TLSA(2, 0, 1, DIGEST[::-1])],
    ("_imaps._tcp.example.org", "SRV"): [SRV(0, 1, 993, "Mail.example.org.")],
    ("_pop3._tcp.example.org", "SRV"): [SRV(0, 0, 0, ".")],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["Example.ORG."],
    ("www.example.org", "CNAME"): ["alias.example.org"],
    ("alias.example.org", "CNAME"): ["example.org"],
    ("dangling.example.org", "CNAME"): ["nowhere.example.org"],
    ("loop1.example.org", "CNAME"): ["loop2.example.org"],
    ("loop2.example.org", "CNAME"): ["loop1.example.org"],
    ("servfail.example.org", "A"): TemporaryFailure,
    ("nodata.example.org", "A"): NoRecords,
    ("nx.example.org", "A"): NotFound,
    ("refused.example.org", "A"): tdns.EREFUSED,
    ("yx.example.org", "A"): 6,  # YXDOMAIN, RFC 2136 2.2
    ("bücher.example", "MX"): [(10, "mx.bücher.example")],
}


def lookups(rdtype, result):
    return REGISTRY.get_sample_value("dns_lookups_total", {"type": rdtype, "result": result})


class ResolverTests(TestCase):
    """The real resolver against a loopback authoritative server; the lookups run in the
    resolver's thread pool while the reactor serves the fixture."""

    timeout = 30

    def setUp(self):
        self.dns = loopback_dns(self, RECORDS)
        self.clock = task.Clock()

    def resolver(self, servers=None, **kwargs):
        kwargs.setdefault("timeout", 2)
        kwargs.setdefault("attempts", 1)
        kwargs.setdefault("clock", self.clock)
        r = Resolver(servers=servers or [self.dns.address], **kwargs)
        self.addCleanup(r.stop)
        return r

    @defer.inlineCallbacks
    def test_a_aaaa(self):
        r = self.resolver()
        a = yield r.lookup("Example.ORG.", "A")
        self.assertEqual(a.records, ("192.0.2.10", "192.0.2.11"))
        self.assertEqual((a.name, a.rdtype, a.canonical, a.ttl, a.authentic),
                         ("example.org", "A", "example.org", 300, False))
        a = yield r.lookup("example.org", "AAAA")
        self.assertEqual(a.records, ("2001:db8::10",))
        a = yield r.ip("example.org")
        self.assertEqual(a.records, ("2001:db8::10", "192.0.2.10", "192.0.2.11"))
        self.assertEqual(a.rdtype, "AAAA+A")

    @defer.inlineCallbacks
    def test_mx(self):
        r = self.resolver()
        a = yield r.mx("example.org")
        self.assertEqual(sorted(a.records, key=lambda mx: mx.preference),
                         [MX(10, "mx1.example.org"), MX(20, "mx2.example.org")])
        # RFC 7505: the null MX.
        a = yield r.mx("null.example.org")
        self.assertEqual(a.records, (MX(0, ""),))

    @defer.inlineCallbacks
    def test_txt(self):
        r = self.resolver()
        a = yield r.txt("example.org")
        self.assertEqual(a.records, ("v=spf1 ip4:192.0.2.0/24 -all",))
        self.assertEqual(a.raw, (b"v=spf1 ip4:192.0.2.0/24 -all",))
        # More than 255 bytes: several character-strings in one record, joined again.
        a = yield r.txt("sel._domainkey.example.org")
        self.assertGreater(len(DKIM_KEY), 255)
        self.assertEqual(a.records, (DKIM_KEY,))
        a = yield r.txt("split.example.org")
        self.assertEqual(sorted(a.records), ["second", "v=spf1 include:a.example -all"])

    @defer.inlineCallbacks
    def test_txt_invalid_utf8(self):
        a = yield self.resolver().txt("latin1.example.org")
        self.assertEqual(a.records, ("caf\ufffd",))
        self.assertEqual(a.raw, (b"caf\xe9",))

    @defer.inlineCallbacks
    def test_truncated_answer_over_tcp(self):
        # 3000 bytes do not fit the 1232-byte UDP payload: TC, then the same query over TCP.
        a = yield self.resolver().txt("big.example.org")
        self.assertEqual(a.records, ("x" * 3000,))
        self.assertEqual([q.transport for q in self.dns.queries], ["udp", "tcp"])

    @defer.inlineCallbacks
    def test_tlsa(self):
        # twisted.names has no TLSA class; the fixture sends the RFC 6698 wire format.
        a = yield self.resolver().tlsa("MX1.example.org", 25)
        self.assertEqual(a.name, "_25._tcp.mx1.example.org")
        self.assertEqual(set(a.records), {TLSA(3, 1, 1, DIGEST), TLSA(2, 0, 1, DIGEST[::-1])})

    @defer.inlineCallbacks
    def test_srv(self):
        r = self.resolver()
        a = yield r.srv("_imaps._tcp.example.org")
        self.assertEqual(a.records, (SRV(0, 1, 993, "mail.example.org"),))
        # RFC 2782: target "." means no service.
        a = yield r.srv("_pop3._tcp.example.org")
        self.assertEqual(a.records, (SRV(0, 0, 0, ""),))

    @defer.inlineCallbacks
    def test_ptr_ns_soa(self):
        r = self.resolver()
        a = yield r.ptr("192.0.2.10")
        self.assertEqual(a.records, ("example.org",))
        a = yield r.lookup("example.org", "NS")
        self.assertEqual(a.records, ("ns1.example.org",))
        a = yield r.lookup("example.org", "SOA")
        self.assertEqual(a.records, (SOA("ns1.example.org", "hostmaster.example.org",
                                         2024010101, 7200, 3600, 1209600, 300),))

    @defer.inlineCallbacks
    def test_cname_chain(self):
        r = self.resolver()
        a = yield r.lookup("www.example.org", "A")
        self.assertEqual(a.records, ("192.0.2.10", "192.0.2.11"))
        self.assertEqual((a.name, a.canonical), ("www.example.org", "example.org"))
        a = yield r.mx("www.example.org")
        self.assertEqual(a.canonical, "example.org")
        self.assertEqual(len(a.records), 2)
        # Asking for the CNAME itself gives the CNAME, not the chain.
        a = yield r.cname("www.example.org")
        self.assertEqual((a.records, a.canonical), (("alias.example.org",), "www.example.org"))
        # One query per lookup: the server sends the whole chain.
        self.assertEqual(self.dns.count("www.example.org"), 3)
        self.assertEqual(self.dns.count("example.org"), 0)

    @defer.inlineCallbacks
    def test_cname_chain_negative(self):
        r = self.resolver()
        # RFC 6604: the rcode is about the end of the chain.
        e = yield self.assertFailure(r.lookup("dangling.example.org", "A"), NotFound)
        self.assertEqual(e.name, "dangling.example.org")
        self.assertIn("nowhere.example.org", str(e))
        yield self.assertFailure(r.lookup("www.example.org", "PTR"), NoRecords)
        yield self.assertFailure(r.lookup("loop1.example.org", "A"), TemporaryFailure)

    @defer.inlineCallbacks
    def test_negative_answers(self):
        r = self.resolver()
        e = yield self.assertFailure(r.lookup("nx.example.org", "A"), NotFound)
        self.assertEqual((e.name, e.rdtype), ("nx.example.org", "A"))
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        yield self.assertFailure(r.lookup("nodata.example.org", "A"), NoRecords)
        yield self.assertFailure(r.lookup("null.example.org", "A"), NoRecords)
        e = yield self.assertFailure(r.lookup("servfail.example.org", "A"), TemporaryFailure)
        self.assertTrue(e.temporary)
        self.assertIn("SERVFAIL", str(e))
        e = yield self.assertFailure(r.lookup("refused.example.org", "A"), TemporaryFailure)
        self.assertIn("REFUSED", str(e))
        yield self.assertFailure(r.lookup("yx.example.org", "A"), InvalidName)

    @defer.inlineCallbacks
    def test_invalid_name(self):
        r = self.resolver()
        e = yield self.assertFailure(r.mx("a..example.org"), InvalidName)
        self.assertEqual(e.rdtype, "MX")
        yield self.assertFailure(r.mx("a" * 64 + ".org"), InvalidName)
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_idna(self):
        r = self.resolver()
        a = yield r.mx("Bücher.Example.")
        self.assertEqual(a.name, "xn--bcher-kva.example")
        self.assertEqual(a.records, (MX(10, "mx.xn--bcher-kva.example"),))
        self.assertEqual(self.dns.queries[0].name, "xn--bcher-kva.example")

    @defer.inlineCallbacks
    def test_query_flags(self):
        yield self.resolver().mx("example.org")
        q = self.dns.queries[0]
        # RFC 6891 EDNS0, RFC 3225 DO, RFC 6840 5.7 AD.
        self.assertEqual((q.edns, q.do, q.ad, q.payload), (0, True, True, 1232))

    @defer.inlineCallbacks
    def test_ad_trusted_only_when_configured(self):
        self.dns.ad = True
        a = yield self.resolver(trust_ad=False).mx("example.org")
        self.assertFalse(a.authentic)
        a = yield self.resolver(trust_ad=True).mx("example.org")
        self.assertTrue(a.authentic)
        self.dns.ad = False
        a = yield self.resolver(trust_ad=True).mx("example.org")
        self.assertFalse(a.authentic)

    @defer.inlineCallbacks
    def test_cache_hit(self):
        r = self.resolver()
        before = lookups("MX", "cached")
        a1 = yield r.mx("example.org")
        a2 = yield r.mx("EXAMPLE.org.")
        self.assertEqual(a1, a2)
        self.assertEqual(self.dns.count("example.org", "MX"), 1)
        self.assertEqual(lookups("MX", "cached"), before + 1)
        # Another type is another cache entry.
        yield r.lookup("example.org", "A")
        self.assertEqual(self.dns.count("example.org"), 2)

    @defer.inlineCallbacks
    def test_cache_ttl(self):
        self.dns.ttl = 60
        r = self.resolver()
        a = yield r.mx("example.org")
        self.assertEqual(a.ttl, 60)
        self.clock.advance(50)
        a = yield r.mx("example.org")
        self.assertEqual(a.ttl, 10)  # what is left
        self.assertEqual(self.dns.count(), 1)
        self.clock.advance(11)
        a = yield r.mx("example.org")
        self.assertEqual(a.ttl, 60)
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_cache_ttl_capped(self):
        self.dns.ttl = 7 * 86400
        r = self.resolver()
        a = yield r.mx("example.org")
        self.assertEqual(a.ttl, 86400)
        self.clock.advance(86401)
        yield r.mx("example.org")
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_cache_ttl_zero(self):
        self.dns.ttl = 0
        r = self.resolver()
        yield r.mx("example.org")
        yield r.mx("example.org")
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_negative_cache(self):
        # RFC 2308 5: min(SOA TTL 3600, MINIMUM 60).
        r = self.resolver()
        before = lookups("A", "cached")
        for name, exc in (("absent.example.org", NotFound), ("nodata.example.org", NoRecords)):
            yield self.assertFailure(r.lookup(name, "A"), exc)
            self.clock.advance(59)
            e = yield self.assertFailure(r.lookup(name, "A"), exc)
            self.assertEqual(e.name, name)
            self.assertEqual(self.dns.count(name), 1)
            self.clock.advance(2)
            yield self.assertFailure(r.lookup(name, "A"), exc)
            self.assertEqual(self.dns.count(name), 2)
        self.assertEqual(lookups("A", "cached"), before + 2)

    @defer.inlineCallbacks
    def test_negative_ttl_from_soa_ttl(self):
        self.dns.negative_ttl = 600
        self.dns.soa_ttl = 30
        r = self.resolver()
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.clock.advance(29)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 1)
        self.clock.advance(2)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_negative_ttl_capped(self):
        self.dns.negative_ttl = self.dns.soa_ttl = 86400
        r = self.resolver()
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.clock.advance(3599)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 1)
        self.clock.advance(2)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_negative_ttl_without_soa(self):
        self.dns.soa = False
        r = self.resolver()
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.clock.advance(299)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 1)
        self.clock.advance(2)
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_temporary_failure_not_cached(self):
        r = self.resolver()
        for _ in range(2):
            yield self.assertFailure(r.lookup("servfail.example.org", "A"), TemporaryFailure)
        self.assertEqual(self.dns.count(), 2)
        self.dns.add("servfail.example.org", "A", ["192.0.2.99"])
        a = yield r.lookup("servfail.example.org", "A")
        self.assertEqual(a.records, ("192.0.2.99",))

    @defer.inlineCallbacks
    def test_cache_eviction(self):
        r = self.resolver(cache_size=2)
        for name in ("a.example.org", "b.example.org"):
            self.dns.add(name, "A", ["192.0.2.1"])
            yield r.lookup(name, "A")
        yield r.lookup("a.example.org", "A")  # cached, now most recently used
        self.dns.add("c.example.org", "A", ["192.0.2.3"])
        yield r.lookup("c.example.org", "A")  # evicts b
        self.assertEqual(len(r._cache), 2)
        yield r.lookup("a.example.org", "A")
        yield r.lookup("c.example.org", "A")
        counts = [self.dns.count(f"{n}.example.org") for n in "abc"]
        self.assertEqual(counts, [1, 1, 1])
        yield r.lookup("b.example.org", "A")
        self.assertEqual(self.dns.count("b.example.org"), 2)

    @defer.inlineCallbacks
    def test_cache_disabled(self):
        r = self.resolver(cache_size=0)
        yield r.mx("example.org")
        yield r.mx("example.org")
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_timeout(self):
        silent = SilentUDP()
        silent.start()
        self.addCleanup(silent.stop)
        r = self.resolver([silent.address], timeout=0.3, attempts=2)
        before = lookups("MX", "temperror")
        start = time.monotonic()
        e = yield self.assertFailure(r.mx("example.org"), TemporaryFailure)
        elapsed = time.monotonic() - start
        self.assertIn("timeout", str(e))
        self.assertEqual(len(silent.received), 2)
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertLess(elapsed, 5)
        self.assertEqual(lookups("MX", "temperror"), before + 1)

    @defer.inlineCallbacks
    def test_retry_after_lost_query(self):
        self.dns.drop_next(1)
        r = self.resolver(timeout=0.3, attempts=2)
        a = yield r.mx("example.org")
        self.assertEqual(len(a.records), 2)
        self.assertEqual(self.dns.count(), 2)

    @defer.inlineCallbacks
    def test_next_server_after_timeout(self):
        silent = SilentUDP()
        silent.start()
        self.addCleanup(silent.stop)
        r = self.resolver([silent.address, self.dns.address], timeout=0.3, attempts=1)
        a = yield r.mx("example.org")
        self.assertEqual(len(a.records), 2)
        self.assertEqual(len(silent.received), 1)

    @defer.inlineCallbacks
    def test_next_server_after_servfail(self):
        other = loopback_dns(self, {("servfail.example.org", "A"): ["192.0.2.7"]})
        r = self.resolver([self.dns.address, other.address], attempts=3, cache_size=0)
        a = yield r.lookup("servfail.example.org", "A")
        self.assertEqual(a.records, ("192.0.2.7",))
        # A server that failed is not asked again in later rounds.
        other.add("servfail.example.org", "A", TemporaryFailure)
        e = yield self.assertFailure(r.lookup("servfail.example.org", "A"), TemporaryFailure)
        self.assertEqual(str(e).count("SERVFAIL"), 2)
        self.assertEqual((self.dns.count(), other.count()), (2, 2))

    @defer.inlineCallbacks
    def test_concurrent(self):
        names = [f"host{i}.example.org" for i in range(40)]
        for i, name in enumerate(names):
            self.dns.add(name, "A", [f"192.0.2.{i + 1}"])
        r = self.resolver(threads=4)
        results = yield defer.gatherResults([r.lookup(n, "A") for n in names])
        self.assertEqual([a.records for a in results],
                         [(f"192.0.2.{i + 1}",) for i in range(len(names))])
        self.assertEqual(self.dns.count(), len(names))
        self.assertLessEqual(r._pool.max, 4)

    @defer.inlineCallbacks
    def test_lookup_sync_in_pool(self):
        # How pyspf and dkimpy use it: blocking calls inside the resolver's pool.
        r = self.resolver()
        answers = yield r.run(
            lambda: [r.lookup_sync("example.org", t).records[0] for t in ("MX", "TXT")])
        self.assertEqual(answers, [MX(10, "mx1.example.org"), "v=spf1 ip4:192.0.2.0/24 -all"])

    @defer.inlineCallbacks
    def test_metrics(self):
        r = self.resolver()
        before = {k: lookups("A", k) for k in ("ok", "nxdomain", "nodata", "temperror", "invalid")}
        yield r.lookup("example.org", "A")
        yield self.assertFailure(r.lookup("absent.example.org", "A"), NotFound)
        yield self.assertFailure(r.lookup("nodata.example.org", "A"), NoRecords)
        yield self.assertFailure(r.lookup("servfail.example.org", "A"), TemporaryFailure)
        yield self.assertFailure(r.lookup("a..b", "A"), InvalidName)
        for k, v in before.items():
            self.assertEqual(lookups("A", k), v + 1, k)

    @defer.inlineCallbacks
    def test_stop_and_restart(self):
        r = self.resolver()
        yield r.mx("example.org")
        self.assertIsNotNone(r._shutdown_trigger)
        r.stop()
        self.assertIsNone(r._pool)
        self.assertIsNone(r._shutdown_trigger)
        a = yield r.txt("example.org")
        self.assertEqual(len(a.records), 1)


class FixtureTests(TestCase):
    """The loopback server on its own, through twisted.names' client."""

    @defer.inlineCallbacks
    def test_twisted_client(self):
        fx = loopback_dns(self, {("example.org", "A"): ["192.0.2.1"]})
        c = client.Resolver(servers=[("127.0.0.1", fx.port)])
        answers, authority, _ = yield c.lookupAddress("example.org")
        self.assertEqual(answers[0].payload.dottedQuad(), "192.0.2.1")
        yield self.assertFailure(c.lookupAddress("nx.example.org"), names_error.DNSNameError)
        # Without EDNS: no OPT record, 512-byte UDP limit.
        self.assertEqual((fx.queries[0].edns, fx.queries[0].payload), (None, 512))

    def test_bad_table(self):
        fx = LoopbackDNS()
        self.assertRaises(ValueError, fx.add, "example.org", "A", "192.0.2.1")
        self.assertRaises(ValueError, fx.add, "example.org", "A", InvalidName)
        self.assertRaises(ValueError, fx.add, "example.org", "TXT", [("x" * 256,)])
        self.assertRaises(ValueError, fx.add, "example.org", "BOGUS", [])

    def test_answer(self):
        fx = LoopbackDNS({("www.example.org", "CNAME"): ["example.org"],
                          ("example.org", "TXT"): ["a" * 300]})
        rcode, answers, authority = fx.zone.answer("www.example.org", "TXT")
        self.assertEqual(rcode, tdns.OK)
        self.assertEqual([rr.type for rr in answers], [tdns.CNAME, tdns.TXT])
        self.assertEqual([len(s) for s in answers[1].payload.data], [255, 45])
        rcode, answers, authority = fx.zone.answer("www.example.org", "A")
        self.assertEqual((rcode, len(answers), authority[0].type), (tdns.OK, 1, tdns.SOA))
        rcode, _, authority = fx.zone.answer("nx.example.org", "A")
        self.assertEqual((rcode, authority[0].payload.minimum), (tdns.ENAME, 60))

