"""Tests for moxtw.dnsbl: DNS blocklist lookups and health checks (RFC 5782), mock
resolver."""

from twisted.trial import unittest

from moxtw import dnsbl
from moxtw.dns import InvalidName, MockResolver, NoRecords, TemporaryFailure

ZONE = "bl.example"
HEALTHY = {("2.0.0.127.bl.example", "A"): ["127.0.0.2"],
           ("2.0.0.127.bl.example", "TXT"): ["test entry"]}


def lookup(records, ip, zone=ZONE):
    resolver = MockResolver(records)
    return dnsbl.lookup_sync(resolver, zone, ip), resolver


class QueryNameTests(unittest.SynchronousTestCase):
    def test_ipv4(self):
        # RFC 5782 2.1: octets reversed.
        self.assertEqual(dnsbl.query_name(ZONE, "192.168.1.234"), "234.1.168.192.bl.example")
        self.assertEqual(dnsbl.query_name("BL.Example.", "127.0.0.2"), "2.0.0.127.bl.example")

    def test_ipv6(self):
        # RFC 5782 2.4 example.
        self.assertEqual(
            dnsbl.query_name("ugly.example.com", "2001:db8:1:2:3:4:567:89ab"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com")
        self.assertEqual(len(dnsbl.query_name(ZONE, "::1").split(".")), 32 + 2)

    def test_ipv4_mapped(self):
        self.assertEqual(dnsbl.query_name(ZONE, "::ffff:192.0.2.1"), "1.2.0.192.bl.example")

    def test_invalid(self):
        self.assertRaises(ValueError, dnsbl.query_name, ZONE, "192.0.2")
        self.assertRaises(InvalidName, dnsbl.query_name, "bad..zone", "192.0.2.1")


class LookupTests(unittest.SynchronousTestCase):
    def test_not_listed(self):
        result, _ = lookup(HEALTHY, "192.0.2.1")
        self.assertEqual((result.status, result.name, result.codes, result.reason),
                         ("pass", "1.2.0.192.bl.example", (), ""))
        result, _ = lookup({("1.2.0.192.bl.example", "A"): NoRecords}, "192.0.2.1")
        self.assertEqual(result.status, "pass")

    def test_listed_with_reason(self):
        why = "spam source, see https://bl.example/q?192.0.2.1"
        records = {("1.2.0.192.bl.example", "A"): ["127.0.0.2"],
                   ("1.2.0.192.bl.example", "TXT"): [why]}
        result, _ = lookup(records, "192.0.2.1")
        self.assertEqual((result.status, result.codes, result.reason),
                         ("fail", ("127.0.0.2",), why))
        self.assertEqual(result.zone, ZONE)

    def test_listed_without_txt(self):
        # RFC 5782 2.1: the TXT record is optional; a failing TXT lookup still lists.
        for txt in ({}, {("1.2.0.192.bl.example", "TXT"): TemporaryFailure}):
            records = {("1.2.0.192.bl.example", "A"): ["127.0.0.4"], **txt}
            result, _ = lookup(records, "192.0.2.1")
            self.assertEqual((result.status, result.reason), ("fail", ""))

    def test_return_codes(self):
        for codes, status in ((["127.0.0.2"], "fail"), (["127.0.0.10"], "fail"),
                              (["127.0.1.2"], "fail"), (["127.1.0.1"], "fail"),
                              (["127.0.0.1"], "temperror"), (["127.0.0.0"], "temperror"),
                              (["192.0.2.1"], "temperror"), (["10.0.0.2"], "temperror"),
                              (["127.255.255.254"], "temperror"),
                              (["127.0.0.1", "127.0.0.3"], "fail")):
            result, _ = lookup({("1.2.0.192.bl.example", "A"): codes}, "192.0.2.1")
            self.assertEqual(result.status, status, codes)
            self.assertEqual(result.codes, tuple(codes))

    def test_error_code_has_reason_and_no_txt_lookup(self):
        result, resolver = lookup({("1.2.0.192.bl.example", "A"): ["127.255.255.254"]}, "192.0.2.1")
        self.assertIn("127.255.255.254", result.reason)
        self.assertNotIn(("1.2.0.192.bl.example", "TXT"), resolver.lookups)

    def test_temperror(self):
        result, _ = lookup({("1.2.0.192.bl.example", "A"): TemporaryFailure}, "192.0.2.1")
        self.assertEqual(result.status, "temperror")

    def test_ipv6(self):
        name = dnsbl.query_name(ZONE, "2001:db8::1")
        result, resolver = lookup({(name, "A"): ["127.0.0.2"]}, "2001:db8::1")
        self.assertEqual(result.status, "fail")
        self.assertIn((name, "A"), resolver.lookups)

    def test_hostile_reason(self):
        records = {("1.2.0.192.bl.example", "A"): ["127.0.0.2"],
                   ("1.2.0.192.bl.example", "TXT"): ["a\r\n550 b", "x" * 1000]}
        result, _ = lookup(records, "192.0.2.1")
        self.assertNotIn("\r", result.reason)
        self.assertNotIn("\n", result.reason)
        self.assertLessEqual(len(result.reason), dnsbl.MAX_REASON)
        self.assertTrue(result.reason.startswith("a 550 b; x"))

    def test_deferred(self):
        resolver = MockResolver(HEALTHY)
        result = self.successResultOf(dnsbl.lookup(resolver, ZONE, "127.0.0.2"))
        self.assertEqual(result.status, "fail")
        self.failureResultOf(dnsbl.lookup(resolver, ZONE, "nonsense"), ValueError)
        self.failureResultOf(dnsbl.lookup(resolver, "bad..zone", "192.0.2.1"), InvalidName)


class HealthTests(unittest.SynchronousTestCase):
    """RFC 5782 5: 127.0.0.2 must be listed, 127.0.0.1 must not."""

    def health(self, records):
        return self.successResultOf(dnsbl.check_health(MockResolver(records), ZONE))

    def test_healthy(self):
        self.assertTrue(self.health(HEALTHY))

    def test_missing_test_entry(self):
        self.assertFalse(self.health({}))

    def test_lists_everything(self):
        self.assertFalse(self.health({**HEALTHY, ("1.0.0.127.bl.example", "A"): ["127.0.0.2"]}))

    def test_127_0_0_1_answer(self):
        self.assertFalse(self.health({**HEALTHY, ("1.0.0.127.bl.example", "A"): ["127.0.0.1"]}))

    def test_temporary_failure(self):
        self.assertFalse(self.health({("2.0.0.127.bl.example", "A"): TemporaryFailure}))
        self.assertFalse(self.health({**HEALTHY, ("1.0.0.127.bl.example", "A"): TemporaryFailure}))
