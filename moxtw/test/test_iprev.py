"""Tests for moxtw.iprev: forward-confirmed reverse DNS (RFC 8601 3), mock resolver."""

from twisted.trial import unittest

from moxtw import iprev
from moxtw.dns import InvalidName, MockResolver, NoRecords, TemporaryFailure

IP4 = "192.0.2.1"
REV4 = "1.2.0.192.in-addr.arpa"
IP6 = "2001:db8::25"
REV6 = "5.2.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa"


def check(records, ip=IP4, **kw):
    resolver = MockResolver(records, **kw)
    return iprev.check_sync(resolver, ip), resolver


class IprevTests(unittest.SynchronousTestCase):
    def test_pass(self):
        result, _ = check({(REV4, "PTR"): ["mail.example.com."], ("mail.example.com", "A"): [IP4]})
        self.assertEqual((result.result, result.name, result.names, result.ip),
                         ("pass", "mail.example.com", ("mail.example.com",), IP4))
        self.assertEqual(result.reason, "")

    def test_pass_ipv6(self):
        records = {(REV6, "PTR"): ["mail.example.com"], ("mail.example.com", "AAAA"): [IP6],
                   ("mail.example.com", "A"): [IP4]}
        result, resolver = check(records, ip=IP6)
        self.assertEqual(result.result, "pass")
        # RFC 8601 3: only the client's address family is compared.
        self.assertNotIn(("mail.example.com", "A"), resolver.lookups)

    def test_ipv6_compared_as_addresses(self):
        records = {(REV6, "PTR"): ["mail.example.com"],
                   ("mail.example.com", "AAAA"): ["2001:0DB8:0000::0025"]}
        self.assertEqual(check(records, ip="2001:db8:0::25")[0].result, "pass")

    def test_ipv4_mapped(self):
        result, _ = check({(REV4, "PTR"): ["mail.example.com"], ("mail.example.com", "A"): [IP4]},
                          ip="::ffff:192.0.2.1")
        self.assertEqual((result.result, result.ip), ("pass", IP4))

    def test_second_name_confirms(self):
        records = {(REV4, "PTR"): ["a.example.com", "b.example.com", "c.example.com"],
                   ("a.example.com", "A"): ["192.0.2.99"], ("b.example.com", "A"): [IP4],
                   ("c.example.com", "A"): [IP4]}
        result, resolver = check(records)
        self.assertEqual((result.result, result.name), ("pass", "b.example.com"))
        self.assertEqual(result.names, ("a.example.com", "b.example.com", "c.example.com"))
        self.assertNotIn(("c.example.com", "A"), resolver.lookups)

    def test_fail_mismatch(self):
        # RFC 8601 2.7.3: reverse and forward results not in agreement.
        result, _ = check({(REV4, "PTR"): ["mail.example.com"],
                           ("mail.example.com", "A"): ["192.0.2.2"]})
        self.assertEqual((result.result, result.name, result.names),
                         ("fail", "", ("mail.example.com",)))
        self.assertTrue(result.reason)

    def test_fail_forward_without_records(self):
        # RFC 8601 2.7.3: a forward query with NXDOMAIN or NODATA is "fail".
        self.assertEqual(check({(REV4, "PTR"): ["nx.example.com"]})[0].result, "fail")
        records = {(REV4, "PTR"): ["mail.example.com"], ("mail.example.com", "AAAA"): [IP6]}
        self.assertEqual(check(records)[0].result, "fail")

    def test_no_ptr_is_permerror(self):
        # RFC 8601 2.7.3: no PTR data published for the address: "permerror".
        result, _ = check({})
        self.assertEqual((result.result, result.reason), ("permerror", "no PTR record"))
        result, _ = check({(REV4, "PTR"): NoRecords})
        self.assertEqual(result.result, "permerror")

    def test_ptr_temperror(self):
        result, _ = check({(REV4, "PTR"): TemporaryFailure})
        self.assertEqual(result.result, "temperror")

    def test_forward_temperror(self):
        records = {(REV4, "PTR"): ["a.example.com", "b.example.com"],
                   ("a.example.com", "A"): TemporaryFailure, ("b.example.com", "A"): ["192.0.2.9"]}
        result, _ = check(records)
        self.assertEqual((result.result, result.names),
                         ("temperror", ("a.example.com", "b.example.com")))
        self.assertIn("a.example.com", result.reason)
        # A later name that confirms still passes.
        records[("b.example.com", "A")] = [IP4]
        self.assertEqual(check(records)[0].result, "pass")

    def test_names_limit(self):
        names = [f"h{i}.example.com" for i in range(12)]
        records = {(REV4, "PTR"): names, **{(n, "A"): ["192.0.2.9"] for n in names[:-1]},
                   (names[-1], "A"): [IP4]}
        result, resolver = check(records)
        self.assertEqual(result.result, "fail")
        self.assertEqual(len(result.names), 12)
        self.assertEqual(sum(1 for _, t in resolver.lookups if t == "A"), iprev.MAX_NAMES)
        self.assertIn("first 10", result.reason)

    def test_hostile_names(self):
        records = {(REV4, "PTR"): ["a..example.com", "", "x" * 300, "MAIL.Example.COM.",
                                   "mail.example.com"],
                   ("mail.example.com", "A"): ["not an ip", IP4]}
        result, _ = check(records)
        self.assertEqual((result.result, result.name), ("pass", "mail.example.com"))
        self.assertNotIn("", result.names)
        self.assertEqual(result.names.count("mail.example.com"), 1)

    def test_invalid_name_lookup_is_not_a_match(self):
        class Refusing(MockResolver):
            def lookup_sync(self, name, rdtype):
                if rdtype == "A":
                    raise InvalidName(name, rdtype)
                return super().lookup_sync(name, rdtype)

        resolver = Refusing({(REV4, "PTR"): ["mail.example.com"]})
        self.assertEqual(iprev.check_sync(resolver, IP4).result, "fail")

    def test_authentic(self):
        records = {(REV4, "PTR"): ["mail.example.com"], ("mail.example.com", "A"): [IP4]}
        self.assertTrue(check(records, authentic=True)[0].authentic)
        self.assertFalse(check(records, authentic={REV4})[0].authentic)
        self.assertFalse(check(records)[0].authentic)

    def test_deferred(self):
        resolver = MockResolver({(REV4, "PTR"): ["mail.example.com"],
                                 ("mail.example.com", "A"): [IP4]})
        self.assertEqual(self.successResultOf(iprev.check(resolver, IP4)).result, "pass")
        self.failureResultOf(iprev.check(resolver, "not-an-ip"), ValueError)
