"""Tests for moxtw.dmarc: record parsing, policy discovery, alignment and policy
evaluation (RFC 7489), with a mock resolver."""

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from moxtw import dmarc, spf
from moxtw.dns import InvalidName, MockResolver, TemporaryFailure
from moxtw.dmarc import URI, ParseError, Record, parse_record


@dataclass
class DKIM:
    domain: str
    result: str = "pass"


class FixedRNG:
    """randrange(100) returns ``value``; ``calls`` counts uses."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def randrange(self, n):
        assert n == 100
        self.calls += 1
        return self.value


class NoRNG:
    def randrange(self, n):
        raise AssertionError("randomness used")


class ParseTests(unittest.SynchronousTestCase):
    """RFC 7489 6.3 tags, 6.4 syntax."""

    def test_minimal_with_defaults(self):
        self.assertEqual(parse_record("v=DMARC1; p=none"), Record())
        r = parse_record("v=DMARC1;p=reject")
        self.assertEqual((r.p, r.sp, r.pct, r.adkim, r.aspf, r.ri, r.fo, r.rf, r.rua, r.ruf),
                         ("reject", "", 100, "r", "r", 86400, ("0",), ("afrf",), (), ()))
        self.assertEqual(r.subdomain_policy(), "reject")

    def test_all_tags(self):
        r = parse_record("v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; pct=25; ri=3600; "
                         "fo=1:d:s; rf=afrf:iodef; rua=mailto:agg@example.com!10m, "
                         "mailto:agg@example.org; ruf=mailto:fail@example.com!1G")
        self.assertEqual((r.p, r.sp, r.adkim, r.aspf, r.pct, r.ri, r.fo, r.rf),
                         ("quarantine", "reject", "s", "s", 25, 3600, ("1", "d", "s"),
                          ("afrf", "iodef")))
        self.assertEqual(r.rua, (URI("mailto:agg@example.com", 10, "m"),
                                 URI("mailto:agg@example.org")))
        self.assertEqual(r.ruf, (URI("mailto:fail@example.com", 1, "g"),))
        self.assertEqual(r.rua[0].max_bytes, 10 * 1024 * 1024)
        self.assertEqual(r.rua[1].max_bytes, 0)
        self.assertEqual(r.subdomain_policy(), "reject")

    def test_size_units(self):
        for suffix, size in (("!500", 500), ("!2k", 2048), ("!3M", 3 << 20), ("!1t", 1 << 40)):
            r = parse_record(f"v=DMARC1; p=none; rua=mailto:a@example.com{suffix}")
            self.assertEqual(r.rua[0].max_bytes, size, suffix)

    def test_case_and_whitespace(self):
        r = parse_record("V = DMARC1 ;\tP = Reject ; SP=None; ADKIM=S; Pct=0 ;")
        self.assertEqual((r.p, r.sp, r.adkim, r.pct), ("reject", "none", "s", 0))
        self.assertEqual(parse_record("v=DMARC1; p=none;;  ;").p, "none")

    def test_unknown_tags_ignored(self):
        # RFC 7489 6.3: unknown tags MUST be ignored.
        r = parse_record("v=DMARC1; p=reject; np=none; psd=y; t=y; x=%%!@#")
        self.assertEqual(r, Record(p="reject"))

    def test_roundtrip(self):
        text = ("v=DMARC1; p=reject; sp=none; rua=mailto:a%2Cb@example.com!10m; "
                "adkim=s; pct=50; fo=d:s")
        r = parse_record(text)
        self.assertEqual(str(r), text)
        self.assertEqual(parse_record(str(r)), r)
        self.assertEqual(str(URI("mailto:a,b!@example.com", 5, "k")),
                         "mailto:a%2Cb%21@example.com!5k")

    def test_not_dmarc(self):
        # RFC 7489 6.6.3 step 2: records not starting with v=DMARC1 are not DMARC records.
        for text in ("v=DMARC2; p=none", "v=spf1 -all", "p=none; v=DMARC1", "v=dmarc1; p=none",
                     "", "v=DMARC1x; p=none", "vv=DMARC1; p=none", "DMARC1; p=none"):
            self.assertFalse(dmarc.is_dmarc_record(text), text)
            self.assertRaises(ParseError, parse_record, text)
        self.assertTrue(dmarc.is_dmarc_record("v=DMARC1"))
        self.assertTrue(dmarc.is_dmarc_record(" v =\tDMARC1 ; p=none"))

    def test_bad_policy_without_rua(self):
        for text in ("v=DMARC1", "v=DMARC1; p=block", "v=DMARC1; sp=none; p=none",
                     "v=DMARC1; p=none; sp=drop", "v=DMARC1; p="):
            self.assertRaises(ParseError, parse_record, text)

    def test_bad_policy_with_rua_is_p_none(self):
        # RFC 7489 6.6.3 step 6.
        for text in ("v=DMARC1; rua=mailto:a@example.com",
                     "v=DMARC1; p=block; rua=mailto:a@example.com",
                     "v=DMARC1; p=reject; sp=drop; rua=mailto:a@example.com"):
            r = parse_record(text)
            self.assertEqual((r.p, r.sp, r.assumed_none), ("none", "", True), text)
            self.assertEqual(r.rua, (URI("mailto:a@example.com"),))

    def test_malformed(self):
        for text in ("v=DMARC1; p=none; pct=101", "v=DMARC1; p=none; pct=-1",
                     "v=DMARC1; p=none; pct=5O", "v=DMARC1; p=none; pct=",
                     "v=DMARC1; p=none; pct=١٠",
                     "v=DMARC1; p=none; ri=99999999999", "v=DMARC1; p=none; adkim=x",
                     "v=DMARC1; p=none; aspf=relaxed", "v=DMARC1; p=none; fo=2",
                     "v=DMARC1; p=none; fo=0::1", "v=DMARC1; p=none; rf=a_b",
                     "v=DMARC1; p=none; rua=not a uri", "v=DMARC1; p=none; rua=mailto:a@x!10q",
                     "v=DMARC1; p=none; rua=mailto:a@x,", "v=DMARC1; p=none; rua=",
                     "v=DMARC1; p=none; ruf=example.com", "v=DMARC1; p=none; p=reject",
                     "v=DMARC1; p=none; P=reject", "v=DMARC1; v=DMARC1; p=none",
                     "v=DMARC1; p=none; garbage", "v=DMARC1; p=none; =x",
                     "v=DMARC1; p=none; a b=c", "v=DMARC1; p=none; x" + "y" * 5000 + "=1"):
            self.assertRaises(ParseError, parse_record, text)

    def test_hostile_input_never_raises_anything_else(self):
        for text in ("v=DMARC1;" + ";" * 10000, "v=DMARC1; p=none; rua=" + "!" * 100,
                     "v=DMARC1; p=none; rua=mailto:a@x!99999999999999999999",
                     "v=DMARC1; p=none\x00; rua=mailto:\r\n", "v=DMARC1; p=\u00e9"):
            try:
                parse_record(text)
            except ParseError:
                pass
        self.assertRaises(ParseError, parse_record, None)


class OrganizationalDomainTests(unittest.SynchronousTestCase):
    """RFC 7489 3.2, with the ICANN section of the Public Suffix List."""

    def test_domains(self):
        for domain, org in (("example.com", "example.com"), ("a.b.example.com", "example.com"),
                            ("mail.example.co.uk", "example.co.uk"),
                            ("EXAMPLE.COM.", "example.com"),
                            ("a.b.ck", "a.b.ck"), ("www.ck", "www.ck"),
                            ("city.kawasaki.jp", "city.kawasaki.jp"),
                            ("x.example.中国", "example.xn--fiqs8s"),
                            ("mail.bücher.example", "xn--bcher-kva.example"),
                            ("host.unlisted-tld-xyz", "host.unlisted-tld-xyz")):
            self.assertEqual(dmarc.organizational_domain(domain), org, domain)

    def test_public_suffix_is_its_own(self):
        for domain in ("co.uk", "com", "b.ck", "xn--fiqs8s"):
            self.assertEqual(dmarc.organizational_domain(domain), domain)

    def test_private_suffixes_not_used(self):
        # Only ICANN domains: github.io is one organization's (RFC 7489 erratum 6729).
        self.assertEqual(dmarc.organizational_domain("user.github.io"), "github.io")
        self.assertEqual(dmarc.organizational_domain("a.blogspot.com"), "blogspot.com")

    def test_invalid(self):
        self.assertRaises(InvalidName, dmarc.organizational_domain, "a..example.com")


class AlignmentTests(unittest.SynchronousTestCase):
    """RFC 7489 3.1."""

    def test_strict(self):
        self.assertTrue(dmarc.aligned("example.com", "EXAMPLE.com.", "s"))
        self.assertFalse(dmarc.aligned("mail.example.com", "example.com", "s"))

    def test_relaxed(self):
        self.assertTrue(dmarc.aligned("mail.example.com", "example.com", "r"))
        self.assertTrue(dmarc.aligned("a.example.com", "b.example.com", "r"))
        self.assertTrue(dmarc.aligned("mail.example.co.uk", "example.co.uk", "r"))
        self.assertFalse(dmarc.aligned("example.net", "example.com", "r"))
        # Different registrations under one public suffix never align.
        self.assertFalse(dmarc.aligned("a.co.uk", "b.co.uk", "r"))
        self.assertFalse(dmarc.aligned("co.uk", "example.co.uk", "r"))
        self.assertFalse(dmarc.aligned("x.b.ck", "y.b.ck", "r"))

    def test_idn(self):
        self.assertTrue(dmarc.aligned("bücher.example", "xn--bcher-kva.example", "s"))
        self.assertTrue(dmarc.aligned("mail.xn--bcher-kva.example", "bücher.example", "r"))

    def test_invalid_never_aligns(self):
        self.assertFalse(dmarc.aligned("", "example.com", "r"))
        self.assertFalse(dmarc.aligned("a..example.com", "example.com", "r"))


class LookupTests(unittest.SynchronousTestCase):
    """RFC 7489 6.6.3 policy discovery."""

    def lookup(self, records, domain):
        resolver = MockResolver(records)
        return dmarc.lookup_sync(resolver, domain), resolver

    def test_record_at_from_domain(self):
        found, resolver = self.lookup({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]},
                                      "example.com")
        self.assertEqual((found.status, found.domain, found.record.p),
                         ("found", "example.com", "reject"))
        self.assertEqual(found.text, "v=DMARC1; p=reject")
        self.assertEqual(resolver.lookups, [("_dmarc.example.com", "TXT")])

    def test_fallback_to_organizational_domain(self):
        records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
        found, resolver = self.lookup(records, "a.b.example.com")
        self.assertEqual((found.status, found.domain), ("found", "example.com"))
        # Not the names in between (RFC 7489 6.6.3 step 3).
        self.assertEqual(resolver.lookups, [("_dmarc.a.b.example.com", "TXT"),
                                            ("_dmarc.example.com", "TXT")])

    def test_fallback_when_only_other_txt(self):
        records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"],
                   ("_dmarc.sub.example.com", "TXT"): ["v=spf1 -all", "hello"]}
        self.assertEqual(self.lookup(records, "sub.example.com")[0].domain, "example.com")

    def test_non_dmarc_records_ignored(self):
        records = {("_dmarc.example.com", "TXT"): ["verification=1", "v=DMARC1; p=quarantine"]}
        self.assertEqual(self.lookup(records, "example.com")[0].record.p, "quarantine")

    def test_none(self):
        found, resolver = self.lookup({}, "sub.example.com")
        self.assertEqual((found.status, found.domain, found.record),
                         ("none", "sub.example.com", None))
        found, resolver = self.lookup({}, "example.com")
        self.assertEqual(resolver.lookups, [("_dmarc.example.com", "TXT")])

    def test_multiple_records_is_none_without_fallback(self):
        # RFC 7489 6.6.3 step 5.
        records = {("_dmarc.sub.example.com", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
                   ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
        found, resolver = self.lookup(records, "sub.example.com")
        self.assertEqual((found.status, found.reason), ("none", "multiple DMARC records"))
        self.assertEqual(len(resolver.lookups), 1)
        records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=none"]}
        self.assertEqual(self.lookup(records, "sub.example.com")[0].status, "none")

    def test_temperror(self):
        records = {("_dmarc.sub.example.com", "TXT"): TemporaryFailure,
                   ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
        found, resolver = self.lookup(records, "sub.example.com")
        self.assertEqual(found.status, "temperror")
        self.assertEqual(len(resolver.lookups), 1)
        records = {("_dmarc.example.com", "TXT"): TemporaryFailure}
        self.assertEqual(self.lookup(records, "sub.example.com")[0].status, "temperror")

    def test_malformed_is_permerror(self):
        records = {("_dmarc.sub.example.com", "TXT"): ["v=DMARC1; p=bogus"],
                   ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
        found, _ = self.lookup(records, "sub.example.com")
        self.assertEqual((found.status, found.domain), ("permerror", "sub.example.com"))
        self.assertIn("invalid p", found.reason)

    def test_authentic(self):
        records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]}
        found = dmarc.lookup_sync(MockResolver(records, authentic=True), "example.com")
        self.assertTrue(found.authentic)
        self.assertFalse(self.lookup(records, "example.com")[0].authentic)


class EvaluateTests(unittest.SynchronousTestCase):
    """RFC 7489 4.2 and 6.6: results, alignment and the policy applied."""

    def evaluate(self, record, from_domain="example.com", spf_result="none", spf_domain="",
                 dkim=(), record_domain=None, rng=None):
        records = {}
        if record is not None:
            records[("_dmarc." + (record_domain or from_domain), "TXT")] = (
                record if isinstance(record, (list, type)) else [record])
        resolver = MockResolver(records)
        return dmarc.evaluate_sync(resolver, from_domain, spf_result, spf_domain, list(dkim),
                                   rng=rng or NoRNG())

    def test_policy_alignment_matrix(self):
        for p in ("none", "quarantine", "reject"):
            for adkim, aspf in (("r", "r"), ("s", "s"), ("r", "s"), ("s", "r")):
                record = f"v=DMARC1; p={p}; adkim={adkim}; aspf={aspf}"
                for spf_domain, spf_result in (
                        ("example.com", "pass"), ("mail.example.com", "pass"),
                        ("example.net", "pass"), ("example.com", "fail"),
                        ("example.com", "softfail"), ("", "none")):
                    for dkim in ((), (DKIM("example.com"),), (DKIM("sig.example.com"),),
                                 (DKIM("example.net"),), (DKIM("example.com", "fail"),),
                                 (DKIM("example.com", "neutral"),)):
                        r = self.evaluate(record, spf_result=spf_result, spf_domain=spf_domain,
                                          dkim=dkim)
                        want_spf = spf_result == "pass" and (
                            spf_domain == "example.com"
                            or spf_domain == "mail.example.com" and aspf == "r")
                        want_dkim = bool(dkim) and dkim[0].result == "pass" and (
                            dkim[0].domain == "example.com"
                            or dkim[0].domain == "sig.example.com" and adkim == "r")
                        ctx = (record, spf_domain, spf_result, dkim)
                        self.assertEqual((r.aligned_spf, r.aligned_dkim),
                                         (want_spf, want_dkim), ctx)
                        passed = want_spf or want_dkim
                        self.assertEqual(r.result, "pass" if passed else "fail", ctx)
                        self.assertEqual(r.policy, "none" if passed else p, ctx)
                        self.assertEqual(r.reject, not passed and p != "none", ctx)
                        self.assertEqual(r.published_policy, p)
                        self.assertFalse(r.is_subdomain_policy)

    def test_pass_needs_only_one(self):
        r = self.evaluate("v=DMARC1; p=reject", spf_result="fail", spf_domain="example.com",
                          dkim=[DKIM("example.net"), DKIM("example.com", "fail"),
                                DKIM("example.com")])
        self.assertEqual((r.result, r.aligned_spf, r.aligned_dkim, r.reject),
                         ("pass", False, True, False))

    def test_fields(self):
        r = self.evaluate("v=DMARC1; p=reject", from_domain="mail.example.co.uk",
                          record_domain="example.co.uk")
        self.assertEqual((r.domain, r.org_domain, r.record_domain, r.is_subdomain_policy),
                         ("mail.example.co.uk", "example.co.uk", "example.co.uk", True))
        self.assertEqual(r.record, parse_record("v=DMARC1; p=reject"))

    def test_subdomain_policy(self):
        # RFC 7489 6.3: sp for subdomains; p when sp is absent.
        record = "v=DMARC1; p=reject; sp=none"
        r = self.evaluate(record, from_domain="sub.example.com", record_domain="example.com")
        self.assertEqual((r.result, r.policy, r.reject, r.is_subdomain_policy, r.published_policy),
                         ("fail", "none", False, True, "none"))
        r = self.evaluate(record, from_domain="example.com")
        self.assertEqual((r.policy, r.reject, r.is_subdomain_policy), ("reject", True, False))
        r = self.evaluate("v=DMARC1; p=quarantine", from_domain="sub.example.com",
                          record_domain="example.com")
        self.assertEqual((r.policy, r.reject, r.is_subdomain_policy), ("quarantine", True, True))
        r = self.evaluate("v=DMARC1; p=none; sp=reject", from_domain="a.b.example.com",
                          record_domain="example.com")
        self.assertEqual((r.policy, r.reject), ("reject", True))

    def test_sp_ignored_in_subdomain_record(self):
        r = self.evaluate("v=DMARC1; p=none; sp=reject", from_domain="sub.example.com")
        self.assertEqual((r.policy, r.reject, r.is_subdomain_policy), ("none", False, False))

    def test_pct_100_and_0_use_no_randomness(self):
        r = self.evaluate("v=DMARC1; p=reject; pct=100", rng=NoRNG())
        self.assertEqual((r.policy, r.reject, r.sampled), ("reject", True, True))
        # RFC 7489 6.6.4: not sampled: the next milder policy.
        r = self.evaluate("v=DMARC1; p=reject; pct=0", rng=NoRNG())
        self.assertEqual((r.result, r.policy, r.reject, r.sampled),
                         ("fail", "quarantine", False, False))
        r = self.evaluate("v=DMARC1; p=quarantine; pct=0", rng=NoRNG())
        self.assertEqual((r.policy, r.reject), ("none", False))

    def test_pct_50(self):
        rng = FixedRNG(49)
        r = self.evaluate("v=DMARC1; p=reject; pct=50", rng=rng)
        self.assertEqual((r.policy, r.reject, r.sampled, rng.calls), ("reject", True, True, 1))
        r = self.evaluate("v=DMARC1; p=reject; pct=50", rng=FixedRNG(50))
        self.assertEqual((r.policy, r.reject, r.sampled), ("quarantine", False, False))
        r = self.evaluate("v=DMARC1; p=quarantine; pct=50", rng=FixedRNG(99))
        self.assertEqual((r.policy, r.reject), ("none", False))
        r = self.evaluate("v=DMARC1; p=quarantine; pct=50", rng=FixedRNG(0))
        self.assertEqual((r.policy, r.reject), ("quarantine", True))
        r = self.evaluate("v=DMARC1; p=none; pct=50", rng=FixedRNG(0))
        self.assertEqual((r.policy, r.reject), ("none", False))

    def test_pct_only_sampled_on_fail(self):
        rng = FixedRNG(0)
        r = self.evaluate("v=DMARC1; p=reject; pct=50", spf_result="pass",
                          spf_domain="example.com", rng=rng)
        self.assertEqual((r.result, r.policy, rng.calls), ("pass", "none", 0))

    def test_pct_default_random(self):
        records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; pct=50"]}
        seen = {dmarc.evaluate_sync(MockResolver(records), "example.com", "fail", "", []).reject
                for _ in range(200)}
        self.assertEqual(seen, {True, False})

    def test_no_policy(self):
        r = self.evaluate(None)
        self.assertEqual((r.result, r.policy, r.reject, r.record), ("none", "none", False, None))
        r = self.evaluate(["v=DMARC1; p=reject", "v=DMARC1; p=reject"])
        self.assertEqual((r.result, r.reject, r.reason), ("none", False, "multiple DMARC records"))

    def test_lookup_errors(self):
        r = self.evaluate(TemporaryFailure)
        self.assertEqual((r.result, r.reject), ("temperror", False))
        r = self.evaluate("v=DMARC1; p=quarantine; pct=x")
        self.assertEqual((r.result, r.reject, r.record_domain), ("permerror", False, "example.com"))
        self.assertIn("pct", r.reason)

    def test_temperror_of_aligned_identifiers(self):
        record = "v=DMARC1; p=reject"
        r = self.evaluate(record, spf_result="temperror", spf_domain="example.com")
        self.assertEqual((r.result, r.policy, r.reject), ("temperror", "none", False))
        r = self.evaluate(record, dkim=[DKIM("example.com", "temperror")])
        self.assertEqual((r.result, r.reject), ("temperror", False))
        r = self.evaluate(record, spf_result="temperror", spf_domain="example.com",
                          dkim=[DKIM("example.com")])
        self.assertEqual(r.result, "pass")
        # An unaligned identifier could never pass DMARC: its temperror does not matter.
        r = self.evaluate(record, spf_result="temperror", spf_domain="example.net",
                          dkim=[DKIM("example.org", "temperror")])
        self.assertEqual((r.result, r.reject), ("fail", True))

    def test_idna_from_domain(self):
        records = {("_dmarc.xn--bcher-kva.example", "TXT"): ["v=DMARC1; p=reject; adkim=s"]}
        resolver = MockResolver(records)
        r = dmarc.evaluate_sync(resolver, "Bücher.example", "fail", "", [DKIM("bücher.example")])
        self.assertEqual((r.result, r.domain, r.aligned_dkim),
                         ("pass", "xn--bcher-kva.example", True))
        r = dmarc.evaluate_sync(resolver, "bücher.example", "pass", "xn--bcher-kva.example", [])
        self.assertEqual((r.result, r.aligned_spf), ("pass", True))
        r = dmarc.evaluate_sync(resolver, "bücher.example", "none", "", [])
        self.assertEqual((r.result, r.reject), ("fail", True))

    def test_public_suffix_edges(self):
        # A sibling under co.uk is another organization.
        r = self.evaluate("v=DMARC1; p=reject", from_domain="a.co.uk", spf_result="pass",
                          spf_domain="b.co.uk", dkim=[DKIM("co.uk")])
        self.assertEqual((r.result, r.reject, r.org_domain), ("fail", True, "a.co.uk"))
        r = self.evaluate("v=DMARC1; p=reject", from_domain="example.co.uk", spf_result="pass",
                          spf_domain="bounce.example.co.uk")
        self.assertEqual(r.result, "pass")
        # The From domain is a public suffix: its own organizational domain, no fallback.
        resolver = MockResolver({("_dmarc.co.uk", "TXT"): ["v=DMARC1; p=reject"]})
        r = dmarc.evaluate_sync(resolver, "co.uk", "none", "", [])
        self.assertEqual((r.result, r.org_domain, r.is_subdomain_policy), ("fail", "co.uk", False))
        resolver = MockResolver({("_dmarc.co.uk", "TXT"): ["v=DMARC1; p=reject"]})
        r = dmarc.evaluate_sync(resolver, "example.co.uk", "none", "", [])
        self.assertEqual(r.result, "none")
        self.assertNotIn(("_dmarc.co.uk", "TXT"), resolver.lookups)

    def test_invalid_from_domain(self):
        r = dmarc.evaluate_sync(MockResolver({}), "a..example.com", "pass", "example.com", [])
        self.assertEqual((r.result, r.reject), ("permerror", False))

    def test_spf_result_object_and_deferred(self):
        resolver = MockResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]})
        spf_result = spf.SPFResult("pass", domain="example.com")
        r = self.successResultOf(dmarc.evaluate(resolver, "example.com", spf_result,
                                                "example.com", []))
        self.assertEqual((r.result, r.aligned_spf), ("pass", True))


class HostileRecordTests(unittest.SynchronousTestCase):
    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from([
        "v=DMARC1", ";", "p=", "sp=", "none", "reject", "rua=", "mailto:a@b", "!", "10m", ",",
        "pct=", "50", "=", " ", "é", "adkim=", "s", "fo=", ":", "1", "ri=", "x", "\x00"]),
        max_size=16))
    def test_parse_only_raises_parse_error(self, pieces):
        text = "".join(pieces)
        try:
            record = parse_record(text)
        except ParseError:
            return
        self.assertIn(record.p, dmarc.POLICIES)
        self.assertEqual(parse_record(str(record)).p, record.p)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=200))
    def test_evaluate_never_raises(self, text):
        resolver = MockResolver({("_dmarc.example.com", "TXT"): [text]})
        r = dmarc.evaluate_sync(resolver, "example.com", "fail", "example.com", [])
        self.assertIn(r.result, ("none", "fail", "permerror"))
