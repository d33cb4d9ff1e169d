"""Tests for moxtw.spf: SPF (RFC 7208) evaluated by pyspf with DNS from a mock resolver.

Macro examples are those of RFC 7208 7.4: sender strong-bad@email.example.com, client
192.0.2.3 or 2001:db8::cb01.
"""

import dataclasses
import threading

import spf as pyspf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from moxtw import spf
from moxtw.dns import MockResolver, NotFound, TemporaryFailure

IP4 = "192.0.2.3"
IP6 = "2001:db8::cb01"
SENDER = "strong-bad@email.example.com"
DOMAIN = "email.example.com"
HELO = "mx.example.org"


def run(records, ip=IP4, sender=SENDER, helo=HELO, domain=None, **kw):
    """check_host() for ``domain`` (default: ``sender``'s); the result and the resolver."""
    resolver = MockResolver(records)
    if domain is None:
        domain = sender.rpartition("@")[2]
    result = spf.check_host_sync(resolver, ip, domain, sender, helo, **kw)
    return result, resolver


def rec(text, domain=DOMAIN):
    return {(domain, "TXT"): [text]}


class AllTests(unittest.SynchronousTestCase):
    """RFC 7208 5.1 "all" and the qualifiers of 4.6.2."""

    def test_qualifiers(self):
        for text, want in (("+all", "pass"), ("all", "pass"), ("-all", "fail"),
                           ("~all", "softfail"), ("?all", "neutral")):
            result, _ = run(rec("v=spf1 " + text))
            self.assertEqual((result.result, result.mechanism), (want, text), text)
            self.assertEqual(result.domain, DOMAIN)

    def test_no_match_is_neutral(self):
        # RFC 7208 4.7: no mechanism matched and no redirect: neutral.
        result, _ = run(rec("v=spf1 ip4:198.51.100.1"))
        self.assertEqual((result.result, result.mechanism), ("neutral", ""))
        result, _ = run(rec("v=spf1"))
        self.assertEqual(result.result, "neutral")

    def test_mechanisms_after_all_are_ignored(self):
        result, _ = run(rec("v=spf1 -all ip4:192.0.2.3"))
        self.assertEqual(result.result, "fail")

    def test_case_insensitive(self):
        result, _ = run(rec("V=SPF1 IP4:192.0.2.0/24 -ALL"))
        self.assertEqual(result.result, "pass")


class IPTests(unittest.SynchronousTestCase):
    """RFC 7208 5.6 ip4 and ip6."""

    def test_ip4(self):
        self.assertEqual(run(rec("v=spf1 ip4:192.0.2.3 -all"))[0].result, "pass")
        self.assertEqual(run(rec("v=spf1 ip4:192.0.2.0/24 -all"))[0].result, "pass")
        self.assertEqual(run(rec("v=spf1 ip4:192.0.2.4 -all"))[0].result, "fail")
        self.assertEqual(run(rec("v=spf1 ip4:192.0.2.0/31 -all"))[0].result, "fail")
        self.assertEqual(run(rec("v=spf1 ip4:0.0.0.0/0 -all"))[0].result, "pass")

    def test_ip6(self):
        self.assertEqual(run(rec("v=spf1 ip6:2001:db8::/32 -all"), ip=IP6)[0].result, "pass")
        self.assertEqual(run(rec("v=spf1 ip6:2001:db8::cb01 -all"), ip=IP6)[0].result, "pass")
        self.assertEqual(run(rec("v=spf1 ip6:2001:db9::/32 -all"), ip=IP6)[0].result, "fail")

    def test_family_mismatch_never_matches(self):
        # RFC 7208 5.6: ip4 only matches IPv4 clients, ip6 only IPv6 clients.
        self.assertEqual(run(rec("v=spf1 ip4:0.0.0.0/0 -all"), ip=IP6)[0].result, "fail")
        self.assertEqual(run(rec("v=spf1 ip6:::/0 -all"))[0].result, "fail")

    def test_ipv4_mapped_client_is_ipv4(self):
        result, _ = run(rec("v=spf1 ip4:192.0.2.3 -all"), ip="::ffff:192.0.2.3")
        self.assertEqual((result.result, result.ip), ("pass", IP4))

    def test_invalid_client_ip(self):
        self.assertRaises(ValueError, run, rec("v=spf1 -all"), ip="192.0.2.300")


class ATests(unittest.SynchronousTestCase):
    """RFC 7208 5.3 "a", with CIDR and dual CIDR lengths."""

    def test_a_default_domain(self):
        records = {**rec("v=spf1 a -all"), (DOMAIN, "A"): ["192.0.2.3"]}
        result, resolver = run(records)
        self.assertEqual((result.result, result.mechanism), ("pass", "a"))
        self.assertIn((DOMAIN, "A"), resolver.lookups)

    def test_a_other_domain_and_cidr(self):
        records = {**rec("v=spf1 a:mail.example.net/24 -all"),
                   ("mail.example.net", "A"): ["192.0.2.200"]}
        self.assertEqual(run(records)[0].result, "pass")
        records = {**rec("v=spf1 a:mail.example.net -all"),
                   ("mail.example.net", "A"): ["192.0.2.200"]}
        self.assertEqual(run(records)[0].result, "fail")

    def test_a_ipv6_dual_cidr(self):
        records = {**rec("v=spf1 a/24//64 -all"), (DOMAIN, "AAAA"): ["2001:db8::1"],
                   (DOMAIN, "A"): ["198.51.100.1"]}
        result, resolver = run(records, ip=IP6)
        self.assertEqual(result.result, "pass")
        # RFC 7208 5.3: only the client's address family is looked up.
        self.assertNotIn((DOMAIN, "A"), resolver.lookups)
        records[(DOMAIN, "TXT")] = ["v=spf1 a/24 -all"]
        self.assertEqual(run(records, ip=IP6)[0].result, "fail")

    def test_a_follows_cname(self):
        records = {**rec("v=spf1 a:alias.example.net -all"),
                   ("alias.example.net", "CNAME"): ["real.example.net"],
                   ("real.example.net", "A"): ["192.0.2.3"]}
        self.assertEqual(run(records)[0].result, "pass")

    def test_a_ip_literal_is_permerror(self):
        # RFC 7208 5.3 takes a domain-spec; pyspf (strict) refuses an address there.
        self.assertEqual(run(rec("v=spf1 a:192.0.2.3 -all"))[0].result, "permerror")


class MXTests(unittest.SynchronousTestCase):
    """RFC 7208 5.4 "mx"."""

    def test_mx(self):
        records = {**rec("v=spf1 mx -all"),
                   (DOMAIN, "MX"): [(10, "mx1.example.com"), (20, "mx2.example.com")],
                   ("mx1.example.com", "A"): ["198.51.100.1"],
                   ("mx2.example.com", "A"): ["192.0.2.3"]}
        result, _ = run(records)
        self.assertEqual((result.result, result.mechanism), ("pass", "mx"))

    def test_mx_other_domain_cidr(self):
        records = {**rec("v=spf1 mx:example.net/30 -all"),
                   ("example.net", "MX"): [(10, "mx.example.net")],
                   ("mx.example.net", "A"): ["192.0.2.1"]}
        self.assertEqual(run(records)[0].result, "pass")

    def test_mx_ipv6(self):
        records = {**rec("v=spf1 mx -all"), (DOMAIN, "MX"): [(10, "mx.example.com")],
                   ("mx.example.com", "AAAA"): [IP6], ("mx.example.com", "A"): [IP4]}
        self.assertEqual(run(records, ip=IP6)[0].result, "pass")

    def test_null_mx_never_matches(self):
        # RFC 7505: "0 ." means no mail; its empty host has no addresses.
        records = {**rec("v=spf1 mx -all"), (DOMAIN, "MX"): [(0, ".")]}
        self.assertEqual(run(records)[0].result, "fail")

    def test_more_than_10_mx_names_is_permerror(self):
        # RFC 7208 4.6.4: more than 10 MX names for one "mx": permerror.
        mxs = [(i, f"mx{i}.example.com") for i in range(11)]
        result, _ = run({**rec("v=spf1 mx -all"), (DOMAIN, "MX"): mxs})
        self.assertEqual(result.result, "permerror")
        self.assertIn("MX", result.reason)
        result, _ = run({**rec("v=spf1 mx ip4:192.0.2.3 -all"), (DOMAIN, "MX"): mxs[:10],
                         **{(h, "A"): ["198.51.100.1"] for _, h in mxs}})
        self.assertEqual(result.result, "pass")


class PTRTests(unittest.SynchronousTestCase):
    """RFC 7208 5.5 "ptr": validated reverse names under the target domain."""

    REV = "3.2.0.192.in-addr.arpa"

    def test_ptr_validated(self):
        records = {**rec("v=spf1 ptr -all"), (self.REV, "PTR"): ["mail.email.example.com"],
                   ("mail.email.example.com", "A"): [IP4]}
        result, _ = run(records)
        self.assertEqual((result.result, result.mechanism), ("pass", "ptr"))

    def test_ptr_not_forward_confirmed(self):
        records = {**rec("v=spf1 ptr -all"), (self.REV, "PTR"): ["mail.email.example.com"],
                   ("mail.email.example.com", "A"): ["198.51.100.1"]}
        self.assertEqual(run(records)[0].result, "fail")

    def test_ptr_other_domain(self):
        records = {**rec("v=spf1 ptr:example.net -all"), (self.REV, "PTR"): ["a.example.net"],
                   ("a.example.net", "A"): [IP4]}
        self.assertEqual(run(records)[0].result, "pass")
        records[(DOMAIN, "TXT")] = ["v=spf1 ptr:other.example -all"]
        self.assertEqual(run(records)[0].result, "fail")

    def test_ptr_ipv6(self):
        rev = "1.0.b.c." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa"
        records = {**rec("v=spf1 ptr -all"), (rev, "PTR"): ["v6.email.example.com"],
                   ("v6.email.example.com", "AAAA"): [IP6]}
        self.assertEqual(run(records, ip=IP6)[0].result, "pass")

    def test_only_10_ptr_names_are_checked(self):
        # RFC 7208 5.5: no more than 10 PTR names are looked up.
        names = [f"h{i}.email.example.com" for i in range(11)]
        records = {**rec("v=spf1 ptr -all"), (self.REV, "PTR"): names,
                   **{(n, "A"): ["198.51.100.1"] for n in names[:10]}, (names[10], "A"): [IP4]}
        result, resolver = run(records)
        self.assertEqual(result.result, "fail")
        self.assertNotIn((names[10], "A"), resolver.lookups)


class ExistsTests(unittest.SynchronousTestCase):
    """RFC 7208 5.7 "exists"."""

    def test_exists(self):
        records = {**rec("v=spf1 exists:allowed.example.net -all"),
                   ("allowed.example.net", "A"): ["127.0.0.2"]}
        self.assertEqual(run(records)[0].result, "pass")
        self.assertEqual(run(rec("v=spf1 exists:allowed.example.net -all"))[0].result, "fail")

    def test_exists_looks_up_a_also_for_ipv6(self):
        records = {**rec("v=spf1 exists:allowed.example.net -all"),
                   ("allowed.example.net", "A"): ["127.0.0.2"]}
        result, resolver = run(records, ip=IP6)
        self.assertEqual(result.result, "pass")
        self.assertEqual(resolver.lookups[-1], ("allowed.example.net", "A"))

    def test_exists_needs_a_domain(self):
        self.assertEqual(run(rec("v=spf1 exists -all"))[0].result, "permerror")


class IncludeTests(unittest.SynchronousTestCase):
    """RFC 7208 5.2 "include": its result table."""

    def records(self, included):
        return {**rec("v=spf1 include:_spf.example.net -all"),
                ("_spf.example.net", "TXT"): included}

    def test_include_pass_matches(self):
        result, _ = run(self.records(["v=spf1 ip4:192.0.2.0/24 -all"]))
        self.assertEqual((result.result, result.mechanism), ("pass", "include:_spf.example.net"))

    def test_include_fail_softfail_neutral_do_not_match(self):
        for inner in ("-all", "~all", "?all"):
            result, _ = run(self.records([f"v=spf1 {inner}"]))
            self.assertEqual(result.result, "fail", inner)

    def test_include_qualifier(self):
        records = {**rec("v=spf1 ~include:_spf.example.net -all"),
                   ("_spf.example.net", "TXT"): ["v=spf1 +all"]}
        self.assertEqual(run(records)[0].result, "softfail")

    def test_include_without_record_is_permerror(self):
        result, _ = run(self.records(["not spf"]))
        self.assertEqual(result.result, "permerror")
        result, _ = run(rec("v=spf1 include:_spf.example.net -all"))
        self.assertEqual(result.result, "permerror")

    def test_include_errors_propagate(self):
        self.assertEqual(run(self.records(["v=spf1 moo -all"]))[0].result, "permerror")
        self.assertEqual(run(self.records(TemporaryFailure))[0].result, "temperror")

    def test_nested_include(self):
        records = {**self.records(["v=spf1 include:deeper.example.net -all"]),
                   ("deeper.example.net", "TXT"): ["v=spf1 ip4:192.0.2.3 -all"]}
        self.assertEqual(run(records)[0].result, "pass")

    def test_include_loop_is_permerror(self):
        records = {**rec("v=spf1 include:a.example.net -all"),
                   ("a.example.net", "TXT"): ["v=spf1 include:b.example.net -all"],
                   ("b.example.net", "TXT"): ["v=spf1 include:a.example.net -all"]}
        self.assertEqual(run(records)[0].result, "permerror")


class RedirectTests(unittest.SynchronousTestCase):
    """RFC 7208 6.1 redirect=."""

    def test_redirect(self):
        records = {**rec("v=spf1 redirect=_spf.example.net"),
                   ("_spf.example.net", "TXT"): ["v=spf1 ip4:192.0.2.3 -all"]}
        result, _ = run(records)
        self.assertEqual((result.result, result.mechanism), ("pass", "ip4:192.0.2.3"))
        records[("_spf.example.net", "TXT")] = ["v=spf1 -all"]
        self.assertEqual(run(records)[0].result, "fail")

    def test_redirect_ignored_with_all(self):
        records = {**rec("v=spf1 ?all redirect=_spf.example.net"),
                   ("_spf.example.net", "TXT"): ["v=spf1 +all"]}
        self.assertEqual(run(records)[0].result, "neutral")

    def test_redirect_only_after_no_match(self):
        records = {**rec("v=spf1 ip4:192.0.2.3 redirect=_spf.example.net"),
                   ("_spf.example.net", "TXT"): ["v=spf1 -all"]}
        result, resolver = run(records)
        self.assertEqual(result.result, "pass")
        self.assertNotIn(("_spf.example.net", "TXT"), resolver.lookups)

    def test_redirect_without_record_is_permerror(self):
        # RFC 7208 6.1: the redirect target having no SPF record is permerror.
        self.assertEqual(run(rec("v=spf1 redirect=_spf.example.net"))[0].result, "permerror")

    def test_redirect_twice_is_permerror(self):
        text = "v=spf1 redirect=a.example.net redirect=b.example.net"
        self.assertEqual(run(rec(text))[0].result, "permerror")

    def test_redirect_uses_target_domain_for_d(self):
        records = {**rec("v=spf1 redirect=_spf.example.net"),
                   ("_spf.example.net", "TXT"): ["v=spf1 a -all"],
                   ("_spf.example.net", "A"): [IP4]}
        self.assertEqual(run(records)[0].result, "pass")


class ExplanationTests(unittest.SynchronousTestCase):
    """RFC 7208 6.2 exp=."""

    def test_exp_on_fail(self):
        records = {**rec("v=spf1 -all exp=explain._spf.%{d}"),
                   (f"explain._spf.{DOMAIN}", "TXT"):
                       ["%{i} is not one of %{d}'s servers (%{c} %{r})"]}
        result, _ = run(records, receiver="mx.receiver.example")
        self.assertEqual(result.result, "fail")
        self.assertEqual(result.explanation,
                         "192.0.2.3 is not one of email.example.com's servers "
                         "(192.0.2.3 mx.receiver.example)")

    def test_no_explanation_unless_fail(self):
        records = {**rec("v=spf1 ~all exp=explain.example.net"),
                   ("explain.example.net", "TXT"): ["go away"]}
        self.assertEqual(run(records)[0].explanation, "")

    def test_default_explanation(self):
        # RFC 7208 6.2: no exp, or an exp that cannot be used: a default explanation.
        self.assertTrue(run(rec("v=spf1 -all"))[0].explanation)
        for value in (NotFound, TemporaryFailure, ["one", "two"]):
            records = {**rec("v=spf1 -all exp=explain.example.net"),
                       ("explain.example.net", "TXT"): value}
            result, _ = run(records)
            self.assertEqual(result.result, "fail", value)
            self.assertNotIn("one", result.explanation)

    def test_hostile_explanation_is_printable(self):
        records = {**rec("v=spf1 -all exp=explain.example.net"),
                   ("explain.example.net", "TXT"): ["bad\r\n250 ok" + "x" * 2000]}
        result, _ = run(records)
        self.assertNotIn("\r", result.explanation)
        self.assertNotIn("\n", result.explanation)
        self.assertLessEqual(len(result.explanation), spf.MAX_TEXT)

    def test_unknown_modifier_ignored(self):
        # RFC 7208 6: unrecognized modifiers MUST be ignored.
        self.assertEqual(run(rec("v=spf1 foo=bar.example ip4:192.0.2.3 -all"))[0].result, "pass")


class MacroTests(unittest.SynchronousTestCase):
    """RFC 7208 7: macros, checked through the name an "exists" looks up."""

    def expands(self, macro, want, ip=IP4, sender=SENDER, helo=HELO):
        records = {**rec(f"v=spf1 exists:{macro} -all"), (want, "A"): ["127.0.0.2"]}
        result, resolver = run(records, ip=ip, sender=sender, helo=helo)
        self.assertEqual(result.result, "pass", (macro, resolver.lookups))

    def test_rfc7208_examples(self):
        # RFC 7208 7.4.
        self.expands("%{s}.x.example", "strong-bad@email.example.com.x.example")
        self.expands("%{o}.x.example", "email.example.com.x.example")
        self.expands("%{d}.x.example", "email.example.com.x.example")
        self.expands("%{d4}.x.example", "email.example.com.x.example")
        self.expands("%{d3}.x.example", "email.example.com.x.example")
        self.expands("%{d2}.x.example", "example.com.x.example")
        self.expands("%{d1}.x.example", "com.x.example")
        self.expands("%{dr}.x.example", "com.example.email.x.example")
        self.expands("%{d2r}.x.example", "example.email.x.example")
        self.expands("%{l}.x.example", "strong-bad.x.example")
        self.expands("%{l-}.x.example", "strong.bad.x.example")
        self.expands("%{lr}.x.example", "strong-bad.x.example")
        self.expands("%{lr-}.x.example", "bad.strong.x.example")
        self.expands("%{l1r-}.x.example", "strong.x.example")
        self.expands("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com")
        self.expands("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com")
        self.expands("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
                     "bad.strong.lp.3.2.0.192.in-addr._spf.example.com")
        self.expands("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
                     "3.2.0.192.in-addr.strong.lp._spf.example.com")
        self.expands("%{d2}.trusted-domains.example.net",
                     "example.com.trusted-domains.example.net")

    def test_ipv6_i_and_v(self):
        self.expands("%{ir}.%{v}._spf.%{d2}",
                     "1.0.b.c." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6._spf.example.com", ip=IP6)

    def test_h(self):
        self.expands("%{h}.x.example", "mx.example.org.x.example")
        self.expands("%{h2}.x.example", "example.org.x.example")

    def test_p(self):
        records = {("3.2.0.192.in-addr.arpa", "PTR"): ["mx.email.example.com"],
                   ("mx.email.example.com", "A"): [IP4],
                   **rec("v=spf1 exists:%{p}.x.example -all"),
                   ("mx.email.example.com.x.example", "A"): ["127.0.0.2"]}
        self.assertEqual(run(records)[0].result, "pass")
        # RFC 7208 7.3: no validated name: "unknown".
        records = {**rec("v=spf1 exists:%{p}.x.example -all"),
                   ("unknown.x.example", "A"): ["127.0.0.2"]}
        self.assertEqual(run(records)[0].result, "pass")

    def test_escapes_and_url_encoding(self):
        # RFC 7208 7.1: %% %_ %- ; 7.3: upper-case macros are URL-escaped.
        records = {**rec("v=spf1 -all exp=explain.example.net"),
                   ("explain.example.net", "TXT"): ["100%% %{S}%_%-"]}
        self.assertEqual(run(records)[0].explanation, "100% strong-bad%40email.example.com %20")

    def test_delimiters(self):
        sender = "first+last_x@email.example.com"
        self.expands("%{l+}.x.example", "first.last_x.x.example", sender=sender)
        self.expands("%{l1+_}.x.example", "x.x.example", sender=sender)
        self.expands("%{lr+_}.x.example", "x.last.first.x.example", sender=sender)

    def test_invalid_macros_are_permerror(self):
        for text in ("v=spf1 exists:%{z}.x.example -all", "v=spf1 exists:%{d -all",
                     "v=spf1 a:%x.example -all", "v=spf1 exists:%{c}.x.example -all"):
            self.assertEqual(run(rec(text))[0].result, "permerror", text)

    def test_local_part_with_at_sign(self):
        sender = '"a@b"@email.example.com'
        records = {**rec("v=spf1 exists:%{d}.x.example -all"),
                   ("email.example.com.x.example", "A"): ["127.0.0.2"]}
        self.assertEqual(run(records, sender=sender)[0].result, "pass")


class LimitTests(unittest.SynchronousTestCase):
    """RFC 7208 4.6.4: at most 10 DNS-querying terms and 2 void lookups."""

    def a_records(self, n):
        return {(f"h{i}.example.net", "A"): ["198.51.100.1"] for i in range(n)}

    def test_ten_lookups_allowed(self):
        text = "v=spf1 " + " ".join(f"a:h{i}.example.net" for i in range(10)) + " -all"
        self.assertEqual(run({**rec(text), **self.a_records(10)})[0].result, "fail")

    def test_eleven_lookups_permerror(self):
        text = "v=spf1 " + " ".join(f"a:h{i}.example.net" for i in range(11)) + " -all"
        result, _ = run({**rec(text), **self.a_records(11)})
        self.assertEqual(result.result, "permerror")
        self.assertIn("DNS lookups", result.reason)

    def test_lookups_count_across_includes_and_redirect(self):
        inner = "v=spf1 " + " ".join(f"a:h{i}.example.net" for i in range(5)) + " ?all"
        records = {**rec("v=spf1 include:i.example.net mx ptr exists:nx.example.net "
                         "a:h1.example.net redirect=r.example.net"),
                   ("i.example.net", "TXT"): [inner], ("r.example.net", "TXT"): ["v=spf1 -all"],
                   (DOMAIN, "MX"): [(10, "h0.example.net")],
                   ("3.2.0.192.in-addr.arpa", "PTR"): ["h0.example.net"], **self.a_records(5)}
        # include 1 + 5 inside, mx, ptr, exists, a, redirect: 11 lookups.
        result, _ = run(records)
        self.assertEqual(result.result, "permerror")
        self.assertIn("DNS lookups", result.reason)
        records[(DOMAIN, "TXT")] = ["v=spf1 include:i.example.net mx ptr exists:nx.example.net "
                                    "redirect=r.example.net"]
        self.assertEqual(run(records)[0].result, "fail")

    def test_ip_and_all_do_not_count(self):
        text = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(30)) + " -all"
        self.assertEqual(run(rec(text))[0].result, "fail")

    def test_two_void_lookups_allowed(self):
        text = "v=spf1 a:nx1.example.net a:nx2.example.net ip4:192.0.2.3 -all"
        self.assertEqual(run(rec(text))[0].result, "pass")

    def test_third_void_lookup_permerror(self):
        text = "v=spf1 a:nx1.example.net a:nx2.example.net exists:nx3.example.net ip4:192.0.2.3"
        result, _ = run(rec(text))
        self.assertEqual(result.result, "permerror")
        self.assertIn("Void lookup", result.reason)

    def test_other_family_lookups_count_as_void(self):
        # RFC 7208 4.6.4 to the letter, as pyspf does: an "a" lookup of the client's family
        # that finds nothing is void even when the other family has records (mox does not
        # count those).
        text = "v=spf1 a:h1.example.net a:h2.example.net a:h3.example.net ip4:192.0.2.3"
        records = {**rec(text), **{(f"h{i}.example.net", "AAAA"): [IP6] for i in range(1, 4)}}
        self.assertEqual(run(records)[0].result, "permerror")

    def test_nodata_counts_as_void(self):
        # RFC 7208 4.6.4: NOERROR without answers is void too.
        records = {**rec("v=spf1 a:h1.example.net a:h2.example.net a:h3.example.net -all"),
                   **{(f"h{i}.example.net", "MX"): [(10, "x.example.net")] for i in range(1, 4)}}
        self.assertEqual(run(records)[0].result, "permerror")


class ErrorTests(unittest.SynchronousTestCase):
    """Record selection (RFC 7208 4.4, 4.5) and syntax errors."""

    def test_no_record_is_none(self):
        self.assertEqual(run({})[0].result, "none")  # NXDOMAIN
        self.assertEqual(run({(DOMAIN, "TXT"): ["google-site-verification=x"],
                              (DOMAIN, "A"): [IP4]})[0].result, "none")
        self.assertEqual(run(rec("v=spf10 -all"))[0].result, "none")
        self.assertEqual(run(rec("spf2.0/pra -all"))[0].result, "none")

    def test_spf_rr_type_never_queried(self):
        _, resolver = run(rec("v=spf1 -all"))
        self.assertNotIn("SPF", {t for _, t in resolver.lookups})

    def test_multiple_records_permerror(self):
        records = {(DOMAIN, "TXT"): ["v=spf1 -all", "v=spf1 +all", "other"]}
        self.assertEqual(run(records)[0].result, "permerror")

    def test_syntax_errors_permerror(self):
        for text in ("v=spf1 moo -all", "v=spf1 ip4:192.0.2.256 -all", "v=spf1 ip4:192.0.2.0/33",
                     "v=spf1 ip6:2001:db8::/129", "v=spf1 ip6:2001:zz8:: -all",
                     "v=spf1 a/33 -all", "v=spf1 -all:foo", "v=spf1 include -all",
                     "v=spf1 =a -all", "v=spf1 a:example -all", "v=spf1 ip4:192.0.2.3, -all",
                     "v=spf1 exp= -all", "v=spf1 redirect= ", "v=spf1 ip4:192.0.2.0/24//64",
                     "v=spf1 ptr/24 -all"):
            result, _ = run(rec(text))
            self.assertEqual(result.result, "permerror", text)
            self.assertTrue(result.reason, text)
            self.assertEqual(result.mechanism, "")

    def test_non_ascii_record_permerror(self):
        self.assertEqual(run(rec("v=spf1 a:bücher.example -all"))[0].result, "permerror")

    def test_temperror(self):
        self.assertEqual(run({(DOMAIN, "TXT"): TemporaryFailure})[0].result, "temperror")
        records = {**rec("v=spf1 a:h.example.net -all"), ("h.example.net", "A"): TemporaryFailure}
        result, _ = run(records)
        self.assertEqual(result.result, "temperror")
        self.assertIn("h.example.net", result.reason)

    def test_temperror_after_match_is_irrelevant(self):
        records = {**rec("v=spf1 ip4:192.0.2.3 a:h.example.net -all"),
                   ("h.example.net", "A"): TemporaryFailure}
        self.assertEqual(run(records)[0].result, "pass")

    def test_resolver_bug_is_temperror(self):
        class Broken(MockResolver):
            def lookup_sync(self, name, rdtype):
                raise RuntimeError("bug")

        result = spf.check_host_sync(Broken(), IP4, DOMAIN, SENDER, HELO)
        self.assertEqual(result.result, "temperror")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unusable_domains_are_none(self):
        # RFC 7208 4.3: malformed or single-label domains: none, without DNS.
        for domain in ("", "localhost", "a..example", "x" * 64 + ".example", "[192.0.2.1]"):
            result, resolver = run(rec("v=spf1 -all", "example"), domain=domain)
            self.assertEqual(result.result, "none", domain)
            self.assertEqual(resolver.lookups, [])

    def test_idn_domain_is_checked_as_a_label(self):
        records = rec("v=spf1 ip4:192.0.2.3 -all", "xn--bcher-kva.example")
        result, _ = run(records, sender="info@bücher.example")
        self.assertEqual((result.result, result.domain), ("pass", "xn--bcher-kva.example"))

    def test_long_record(self):
        ips = " ".join(f"ip4:198.51.{i // 250}.{i % 250}" for i in range(500))
        text = f"v=spf1 {ips} -all"
        self.assertEqual(run(rec(text))[0].result, "fail")


class IdentityTests(unittest.SynchronousTestCase):
    """check(): MAIL FROM (RFC 7208 2.4) and HELO (2.3) identities."""

    RECORDS = {(DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
               (HELO, "TXT"): ["v=spf1 a -all"], (HELO, "A"): ["198.51.100.7"]}

    def check(self, ip, mailfrom, helo=HELO, records=None):
        resolver = MockResolver(records or self.RECORDS)
        return self.successResultOf(spf.check(resolver, ip, mailfrom, helo))

    def test_both_identities(self):
        results = self.check(IP4, SENDER)
        self.assertEqual((results.mailfrom.result, results.mailfrom.identity,
                          results.mailfrom.domain), ("pass", "mailfrom", DOMAIN))
        self.assertEqual((results.helo.result, results.helo.identity, results.helo.domain),
                         ("fail", "helo", HELO))
        self.assertEqual(results.helo.sender, "postmaster@" + HELO)

    def test_helo_pass(self):
        results = self.check("198.51.100.7", SENDER)
        self.assertEqual((results.mailfrom.result, results.helo.result), ("fail", "pass"))

    def test_null_sender_uses_helo(self):
        # RFC 7208 2.4: null reverse-path: MAIL FROM is postmaster@<HELO>.
        results = self.check("198.51.100.7", "")
        self.assertEqual((results.mailfrom.result, results.mailfrom.identity,
                          results.mailfrom.domain, results.mailfrom.sender),
                         ("pass", "mailfrom", HELO, "postmaster@" + HELO))
        self.assertEqual(results.helo.result, "pass")

    def test_helo_address_literal_is_none(self):
        results = self.check(IP4, SENDER, helo="[192.0.2.3]")
        self.assertEqual((results.mailfrom.result, results.helo.result), ("pass", "none"))
        results = self.check(IP4, "", helo="[192.0.2.3]")
        self.assertEqual((results.mailfrom.result, results.helo.result), ("none", "none"))

    def test_sender_without_local_part(self):
        # RFC 7208 4.3: "postmaster" stands in for a missing local-part.
        records = {**rec("v=spf1 exists:%{l}.x.example -all"),
                   ("postmaster.x.example", "A"): ["127.0.0.2"]}
        self.assertEqual(self.check(IP4, "@" + DOMAIN, records=records).mailfrom.result, "pass")
        self.assertEqual(self.check(IP4, DOMAIN, records=records).mailfrom.result, "pass")

    def test_deferred_errback_for_bad_ip(self):
        self.failureResultOf(spf.check(MockResolver({}), "nonsense", SENDER, HELO), ValueError)


class ReceivedSPFTests(unittest.SynchronousTestCase):
    """RFC 7208 9.1 Received-SPF."""

    def test_header(self):
        result, _ = run(rec("v=spf1 ip4:192.0.2.0/24 -all"))
        self.assertEqual(
            result.received_spf_header("mx.receiver.example"),
            "Received-SPF: pass (mx.receiver.example: domain email.example.com designates "
            "192.0.2.3 as permitted sender) client-ip=192.0.2.3; "
            'envelope-from="strong-bad@email.example.com"; helo=mx.example.org; '
            "identity=mailfrom; receiver=mx.receiver.example; mechanism=\"ip4:192.0.2.0/24\";\r\n")

    def test_problem_and_quoting(self):
        result, _ = run(rec("v=spf1 moo"), helo='evil"\r\nX-Injected: (yes)\\')
        header = result.received_spf()
        self.assertTrue(header.startswith("permerror ("), header)
        self.assertIn("problem=", header)
        self.assertNotIn("\r", header)
        self.assertNotIn("\n", header)
        self.assertIn(r'helo="evil\" X-Injected: (yes)\\";', header)


class DispatchTests(unittest.SynchronousTestCase):
    """pyspf's module-level DNSLookup is ours and per thread."""

    def test_installed(self):
        self.assertIs(pyspf.DNSLookup, spf._dns_lookup)

    def test_outside_a_check_is_temperror(self):
        # Never the system resolver.
        self.assertRaises(pyspf.TempError, pyspf.DNSLookup, "example.com", "TXT")
        q = pyspf.query(i=IP4, s=SENDER, h=HELO)
        self.assertEqual(q.check()[0], "temperror")

    def test_answers_in_pyspf_shape(self):
        resolver = MockResolver({("example.com", "TXT"): ["v=spf1 -all"],
                                 ("example.com", "MX"): [(10, "mx.example.com")],
                                 ("example.com", "A"): ["192.0.2.1"]})
        with spf._using(resolver):
            self.assertEqual(pyspf.DNSLookup("example.com", "TXT"),
                             [(("example.com", "TXT"), [b"v=spf1 -all"])])
            self.assertEqual(pyspf.DNSLookup("example.com", "MX"),
                             [(("example.com", "MX"), (10, "mx.example.com"))])
            self.assertEqual(pyspf.DNSLookup("example.com", "A"),
                             [(("example.com", "A"), "192.0.2.1")])
            self.assertEqual(pyspf.DNSLookup("example.com", "AAAA"), [])
            self.assertEqual(pyspf.DNSLookup("nx.example.com", "A"), [])
            self.assertEqual(pyspf.DNSLookup("example.com", "SPF"), [])
        self.assertNotIn(("example.com", "SPF"), resolver.lookups)

    def test_txt_raw_bytes_preferred(self):
        # Character-strings kept by the resolver are joined; the decoded text is the fallback.
        class Raw(MockResolver):
            def lookup_sync(self, name, rdtype):
                answer = super().lookup_sync(name, rdtype)
                if rdtype == "TXT":
                    return dataclasses.replace(answer, raw=((b"v=spf1 ip4:192.0.2.3", b" -all"),))
                return answer

        resolver = Raw(rec("v=spf1 -all"))
        self.assertEqual(spf.check_host_sync(resolver, IP4, DOMAIN, SENDER, HELO).result, "pass")
        with spf._using(resolver):
            self.assertEqual(pyspf.DNSLookup(DOMAIN, "TXT"),
                             [((DOMAIN, "TXT"), [b"v=spf1 ip4:192.0.2.3 -all"])])

    def test_txt_invalid_utf8_is_permerror(self):
        class Raw(MockResolver):
            def lookup_sync(self, name, rdtype):
                answer = super().lookup_sync(name, rdtype)
                return dataclasses.replace(answer, raw=(b"v=spf1 \xff -all",))

        resolver = Raw(rec("v=spf1 \ufffd -all"))
        self.assertEqual(spf.check_host_sync(resolver, IP4, DOMAIN, SENDER, HELO).result,
                         "permerror")

    def test_concurrent_checks_use_their_own_resolver(self):
        # Thread A's lookup blocks until thread B has finished its whole check; each must
        # see only its own resolver's records.
        b_done = threading.Event()

        class Waiting(MockResolver):
            def lookup_sync(self, name, rdtype):
                b_done.wait(10)
                return super().lookup_sync(name, rdtype)

        resolver_a = Waiting(rec("v=spf1 ip4:192.0.2.3 -all"))
        resolver_b = MockResolver(rec("v=spf1 -all"))
        results = {}

        def a():
            results["a"] = spf.check_host_sync(resolver_a, IP4, DOMAIN, SENDER, HELO)

        def b():
            try:
                results["b"] = spf.check_host_sync(resolver_b, IP4, DOMAIN, SENDER, HELO)
            finally:
                b_done.set()

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual((results["a"].result, results["b"].result), ("pass", "fail"))
        self.assertIsNone(getattr(spf._current, "resolver", None))


_TOKENS = st.sampled_from([
    "a", "mx", "ptr", "all", "-all", "~all", "?", "+", "include:", "exists:", "ip4:", "ip6:",
    "redirect=", "exp=", "%{", "}", "%{d}", "%{ir}", "%{p}", "%{l-}", "%{h}", "/", "//", "24",
    "64", ":", "=", ".", "x.example", "192.0.2.3", "::", "2001:db8::", "%%", "%_", "%-", " ",
    "é", "\x00", "\t", "v=spf1", "foo", "999"])


class HostileRecordTests(unittest.SynchronousTestCase):
    """Whatever a record holds, the result is an RFC 7208 result, never an exception."""

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_TOKENS, max_size=14), st.lists(_TOKENS, max_size=8),
           st.sampled_from([IP4, IP6]))
    def test_random_records(self, outer, inner, ip):
        records = {**rec("v=spf1 " + "".join(outer)),
                   ("x.example", "TXT"): ["v=spf1 " + "".join(inner)],
                   ("x.example", "A"): [IP4], ("x.example", "MX"): [(1, "x.example")],
                   ("3.2.0.192.in-addr.arpa", "PTR"): ["x.example"]}
        result, _ = run(records, ip=ip)
        self.assertIn(result.result, spf.RESULTS)
        self.assertNotIn("\n", result.received_spf())
        self.assertEqual(self.flushLoggedErrors(), [])
