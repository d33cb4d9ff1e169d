"""Tests for moxtw.reports.dmarc.evaluations and .outgoing: stored DMARC evaluations and the aggregate reports
composed from them (RFC 7489 7.1, 7.2, appendix C).

Composed XML is validated against the schema of RFC 7489 appendix C
(moxtw/test/data/dmarc-rfc7489.xsd) with lxml (a test dependency).
"""

import email
import gzip
import os
from datetime import datetime, timedelta, timezone
from email import policy

from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw.reports.dmarc import outgoing
from moxtw.reports.dmarc.evaluations import EvaluationStore
from moxtw.reports.dmarc.outgoing import (
    Destination, external_destination_allowed, feedback_xml, interval_hours, parse_rua,
)
from moxtw.reports.dmarc.parse import PolicyPublished, parse_feedback, parse_message
from moxtw.dns import MockResolver, NoRecords, NotFound, TemporaryFailure

try:
    from lxml import etree
except ImportError:
    etree = None

DATA = os.path.join(os.path.dirname(__file__), "data")
UTC = timezone.utc
DAY = datetime(2026, 9, 22, tzinfo=UTC)  # a UTC midnight
T0 = DAY + timedelta(hours=9, minutes=30)

_schema = None


class _Schema:
    """XSD validation with lxml (libxml2): ``validate`` raises on an invalid document,
    ``is_valid`` says whether it is valid."""

    def __init__(self, xsd_text):
        self._schema = etree.XMLSchema(etree.fromstring(xsd_text.encode("utf-8")))

    def _doc(self, text):
        return etree.fromstring(text.encode("utf-8") if isinstance(text, str) else text)

    def validate(self, text):
        self._schema.assertValid(self._doc(text))

    def is_valid(self, text):
        return self._schema.validate(self._doc(text))


def rfc7489_schema():
    """The appendix C schema. As published it declares a targetNamespace without a
    default namespace, so its unprefixed type references cannot resolve; without the
    targetNamespace it describes the namespace-less documents reporters send."""
    global _schema
    if _schema is None:
        with open(os.path.join(DATA, "dmarc-rfc7489.xsd"), encoding="utf-8") as f:
            text = f.read()
        text = text.replace(' targetNamespace="http://dmarc.org/dmarc-xml/0.1"', "")
        _schema = _Schema(text)
    return _schema


def fixture(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


POLICY = PolicyPublished(domain="example.org", adkim="r", aspf="r", p="reject", sp="reject", pct=100)


class HelperTests(unittest.SynchronousTestCase):

    def test_interval_hours(self):
        cases = {86400: 24, 3600: 1, 0: 1, 60: 1, 7200: 2, 5 * 3600: 4, 10 * 3600: 8,
                 12 * 3600: 12, 23 * 3600: 12, 7 * 86400: 24, -5: 1, "bogus": 24, None: 24}
        for ri, hours in cases.items():
            self.assertEqual(interval_hours(ri), hours, ri)

    def test_parse_rua(self):
        self.assertEqual(parse_rua("mailto:dmarc@example.org"),
                         Destination("dmarc@example.org", "example.org", None))
        self.assertEqual(parse_rua(" MAILTO:Dmarc@Example.ORG!10m ").max_size, 10 * 1024 * 1024)
        self.assertEqual(parse_rua("mailto:d@example.org!50k").max_size, 50 * 1024)
        self.assertEqual(parse_rua("mailto:d@example.org!1000").max_size, 1000)
        self.assertEqual(parse_rua("mailto:Dmarc@Example.ORG").address, "Dmarc@example.org")
        self.assertEqual(parse_rua("mailto:dmarc%2Bx@example.org").address, "dmarc+x@example.org")
        self.assertEqual(parse_rua("mailto:d@example.org?subject=x").address, "d@example.org")
        idn = parse_rua("mailto:dmarc@bücher.example")
        self.assertEqual((idn.address, idn.domain),
                         ("dmarc@xn--bcher-kva.example", "xn--bcher-kva.example"))
        for bad in ("https://example.org/dmarc", "dmarc@example.org", "mailto:", "mailto:nobody",
                    "mailto:a@[192.0.2.1]", "mailto:a b@example.org", ""):
            self.assertIsNone(parse_rua(bad), bad)

    def test_organizational_domain(self):
        od = outgoing.organizational_domain
        self.assertEqual(od("mail.example.co.uk"), "example.co.uk")
        self.assertEqual(od("a.b.example.org."), "example.org")
        self.assertEqual(od("Example.ORG"), "example.org")
        self.assertEqual(od("co.uk"), "co.uk")

    def test_report_filename_and_subject(self):
        self.assertEqual(outgoing.report_filename("mx.example.net", "example.org", 1, 2, "abc"),
                         "mx.example.net!example.org!1!2!abc.xml.gz")
        self.assertEqual(outgoing.report_subject("example.org", "mx.example.net", "abc"),
                         "Report Domain: example.org Submitter: mx.example.net Report-ID: <abc>")


class ExternalDestinationTests(unittest.SynchronousTestCase):
    """RFC 7489 7.1: <policy-domain>._report._dmarc.<rua-domain> TXT."""

    NAME = "example.org._report._dmarc.reports.example.net"

    def check(self, records, policy_domain="example.org", rua_domain="reports.example.net"):
        resolver = MockResolver(records)
        return self.successResultOf(external_destination_allowed(resolver, policy_domain, rua_domain))

    def test_allowed(self):
        self.assertTrue(self.check({(self.NAME, "TXT"): ["v=DMARC1"]}))
        self.assertTrue(self.check({(self.NAME, "TXT"): ["v=DMARC1; rua=mailto:x@example.net"]}))
        self.assertTrue(self.check({(self.NAME, "TXT"): ["v=spf1 -all", "v=DMARC1;"]}))
        self.assertTrue(self.check({(self.NAME.upper(), "TXT"): ["v=DMARC1"]},
                                   policy_domain="EXAMPLE.org."))

    def test_lookup_name(self):
        resolver = MockResolver({(self.NAME, "TXT"): ["v=DMARC1"]})
        self.successResultOf(
            external_destination_allowed(resolver, "example.org", "reports.example.net"))
        self.assertEqual(resolver.lookups, [(self.NAME, "TXT")])

    def test_not_allowed(self):
        self.assertFalse(self.check({}))  # NXDOMAIN
        self.assertFalse(self.check({(self.NAME, "A"): ["192.0.2.1"]}))  # NODATA
        self.assertFalse(self.check({(self.NAME, "TXT"): NoRecords}))
        self.assertFalse(self.check({(self.NAME, "TXT"): NotFound}))
        self.assertFalse(self.check({(self.NAME, "TXT"): ["v=spf1 -all"]}))
        self.assertFalse(self.check({(self.NAME, "TXT"): ["v=DMARC2"]}))
        # Together too long for a DNS name.
        self.assertFalse(self.check({}, policy_domain="a" * 60 + ".b" * 70 + ".example",
                                    rua_domain="c" * 60 + ".example"))

    def test_temporary_failure(self):
        resolver = MockResolver({(self.NAME, "TXT"): TemporaryFailure})
        f = self.failureResultOf(
            external_destination_allowed(resolver, "example.org", "reports.example.net"))
        f.trap(TemporaryFailure)


class FeedbackXMLTests(unittest.SynchronousTestCase):

    def setUp(self):
        if etree is None:
            raise unittest.SkipTest("lxml is not installed (pip install -e .[test])")

    def test_fixtures_rewritten_are_schema_valid(self):
        """Reports as reporters send them (missing fo, sp, scope; compressed IPv6;
        DMARCbis namespace) come out of feedback_xml valid per appendix C."""
        for name in ("dmarc-google.xml", "dmarc-microsoft.xml", "dmarc-yahoo.xml",
                     "dmarc-mailru.xml", "dmarc-dmarcbis.xml"):
            fb = parse_feedback(fixture(name))
            xml = feedback_xml(fb)
            rfc7489_schema().validate(xml.decode("utf-8"))
            again = parse_feedback(xml)
            self.assertEqual(again.report_metadata, fb.report_metadata)
            self.assertEqual(len(again.records), len(fb.records))
            self.assertEqual([r.row.count for r in again.records], [r.row.count for r in fb.records])

    def test_defaults_and_mappings(self):
        fb = parse_feedback(fixture("dmarc-google.xml"))
        fb.policy_published.sp = ""
        fb.records[1].auth_results.spf[0].result = "hardfail"
        fb.records[0].auth_results.dkim[0].result = "temporary"
        fb.records[0].row.policy_evaluated.reasons.append(
            outgoing.PolicyOverrideReason("arc", "arc=pass"))
        xml = feedback_xml(fb)
        rfc7489_schema().validate(xml.decode("utf-8"))
        again = parse_feedback(xml)
        self.assertEqual(again.version, "1.0")
        self.assertEqual(again.policy_published.sp, "reject")  # sp defaults to p
        self.assertEqual(again.policy_published.fo, "0")
        self.assertEqual(again.records[1].row.source_ip, "2001:0db8:4860:0000:0000:0000:0000:001b")
        self.assertEqual(again.records[1].auth_results.spf[0].result, "fail")
        self.assertEqual(again.records[1].auth_results.spf[0].scope, "mfrom")
        self.assertEqual(again.records[0].auth_results.dkim[0].result, "temperror")
        self.assertEqual(again.records[0].row.policy_evaluated.reasons[0].type, "other")

    def test_invalid_document_rejected_by_schema(self):
        """The schema check itself has teeth."""
        xml = feedback_xml(parse_feedback(fixture("dmarc-yahoo.xml")))
        broken = xml.replace(b"<disposition>none</disposition>", b"<disposition>drop</disposition>")
        self.assertFalse(rfc7489_schema().is_valid(broken.decode()))
        broken = xml.replace(b"<version>1.0</version>", b"")
        self.assertFalse(rfc7489_schema().is_valid(broken.decode()))


class StoreTestBase(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(T0.timestamp())
        self.store = EvaluationStore(self.data_dir, clock=self.clock)
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.resolver = MockResolver({
            ("example.org._report._dmarc.reports.example.net", "TXT"): ["v=DMARC1"],
            ("example.org._report._dmarc.tempfail.example", "TXT"): TemporaryFailure,
        })

    def evaluate(self, source_ip="192.0.2.25", rua=("mailto:dmarc@example.org",), **kw):
        args = dict(
            policy_domain="example.org", policy_published=POLICY, source_ip=source_ip,
            disposition="none", dkim_aligned="pass", spf_aligned="pass",
            header_from="example.org", envelope_from="example.org", envelope_to="example.net",
            dkim_results=[("example.org", "2026a", "pass")],
            spf_results=[("example.org", "mfrom", "pass")], rua=rua)
        args.update(kw)
        return self.store.add_evaluation(**args)

    def prepare(self, now, **kw):
        kw.setdefault("make_report_id", lambda due: f"r{int(due.begin.timestamp())}")
        return self.store.prepare_reports(now, self.resolver, "mx.example.net",
                                          "postmaster@mx.example.net", **kw)


class EvaluationStoreTests(StoreTestBase):

    @defer.inlineCallbacks
    def test_add_and_list(self):
        id = yield self.evaluate(reasons=[("local_policy", "forwarded")],
                                 dkim_results=[("example.org", "s1", "pass", "good")])
        (e,) = yield self.store.evaluations()
        self.assertEqual(e.id, id)
        self.assertEqual(e.policy_domain, "example.org")
        self.assertEqual(e.evaluated, T0)
        self.assertEqual(e.interval_hours, 24)
        self.assertEqual(e.addresses, ("mailto:dmarc@example.org",))
        self.assertEqual(e.policy_published, POLICY)
        self.assertEqual(e.reasons, (("local_policy", "forwarded"),))
        self.assertEqual(e.dkim_results, (("example.org", "s1", "pass", "good"),))
        self.assertEqual(e.spf_results, (("example.org", "mfrom", "pass"),))
        self.assertEqual((e.dkim_aligned, e.spf_aligned), ("pass", "pass"))

    @defer.inlineCallbacks
    def test_policy_as_dict_and_bools(self):
        yield self.evaluate(policy_domain="Example.ORG.", policy_published={"p": "Quarantine", "x": 1},
                            dkim_aligned=True, spf_aligned=False)
        (e,) = yield self.store.evaluations("example.org")
        self.assertEqual(e.policy_published, PolicyPublished(domain="example.org", p="quarantine"))
        self.assertEqual((e.dkim_aligned, e.spf_aligned), ("pass", "fail"))

    @defer.inlineCallbacks
    def test_without_rua_nothing_stored(self):
        id = yield self.evaluate(rua=())
        self.assertIsNone(id)
        evaluations = yield self.store.evaluations()
        self.assertEqual(evaluations, [])

    @defer.inlineCallbacks
    def test_remove_evaluations(self):
        yield self.evaluate()
        yield self.evaluate(policy_domain="other.example")
        n = yield self.store.remove_evaluations("example.org")
        self.assertEqual(n, 1)
        left = yield self.store.evaluations()
        self.assertEqual([e.policy_domain for e in left], ["other.example"])

    @defer.inlineCallbacks
    def test_due_daily(self):
        yield self.evaluate()
        yield self.evaluate(evaluated=DAY + timedelta(hours=23, minutes=59))
        yield self.evaluate(evaluated=DAY + timedelta(days=1, hours=1))
        due = yield self.store.due_reports(DAY + timedelta(hours=23, minutes=59, seconds=59))
        self.assertEqual(due, [])
        due = yield self.store.due_reports(DAY + timedelta(days=1))
        self.assertEqual(len(due), 1)
        d = due[0]
        self.assertEqual((d.domain, d.begin, d.end, d.interval_hours, d.evaluations),
                         ("example.org", DAY, DAY + timedelta(days=1), 24, 2))
        self.assertEqual(d.addresses, ("mailto:dmarc@example.org",))
        due = yield self.store.due_reports(DAY + timedelta(days=2))
        self.assertEqual([(d.begin, d.evaluations) for d in due],
                         [(DAY, 2), (DAY + timedelta(days=1), 1)])

    @defer.inlineCallbacks
    def test_due_hourly(self):
        for minutes in (0, 10, 70, 200):
            yield self.evaluate(ri=3600, evaluated=DAY + timedelta(minutes=minutes))
        due = yield self.store.due_reports(DAY + timedelta(hours=3, minutes=1))
        self.assertEqual([(d.begin, d.end, d.evaluations) for d in due], [
            (DAY, DAY + timedelta(hours=1), 2),
            (DAY + timedelta(hours=1), DAY + timedelta(hours=2), 1),
        ])

    @defer.inlineCallbacks
    def test_due_uses_latest_interval_and_addresses(self):
        yield self.evaluate(ri=86400, evaluated=DAY + timedelta(hours=1))
        yield self.evaluate(ri=6 * 3600, evaluated=DAY + timedelta(hours=2),
                            rua=("mailto:new@example.org",))
        due = yield self.store.due_reports(DAY + timedelta(hours=6))
        self.assertEqual(len(due), 1)
        self.assertEqual((due[0].interval_hours, due[0].evaluations), (6, 2))
        self.assertEqual(due[0].addresses, ("mailto:new@example.org",))

    @defer.inlineCallbacks
    def test_compose_report_aggregates(self):
        for _ in range(3):
            yield self.evaluate()
        yield self.evaluate(source_ip="2001:db8::7", disposition="reject", dkim_aligned="fail",
                            spf_aligned="fail", dkim_results=[], spf_results=[],
                            envelope_from="", envelope_to="")
        yield self.evaluate(evaluated=DAY + timedelta(days=1, hours=2))  # next period
        xml = yield self.store.compose_report(
            "example.org", DAY, DAY + timedelta(days=1), "mx.example.net",
            "postmaster@mx.example.net", "id-1", extra_contact_info="https://mx.example.net/dmarc")
        if etree is not None:
            rfc7489_schema().validate(xml.decode())
        fb = parse_feedback(xml)
        md = fb.report_metadata
        self.assertEqual((md.org_name, md.email, md.report_id, md.extra_contact_info),
                         ("mx.example.net", "postmaster@mx.example.net", "id-1",
                          "https://mx.example.net/dmarc"))
        self.assertEqual((md.date_range.begin, md.date_range.end),
                         (int(DAY.timestamp()), int(DAY.timestamp()) + 86399))
        self.assertEqual(fb.policy_published.p, "reject")
        self.assertEqual([(r.row.source_ip, r.row.count) for r in fb.records],
                         [("192.0.2.25", 3), ("2001:0db8:0000:0000:0000:0000:0000:0007", 1)])
        r0, r1 = fb.records
        self.assertEqual(r0.identifiers.envelope_to, "example.net")
        self.assertEqual(r0.auth_results.dkim[0].selector, "2026a")
        self.assertEqual(r1.row.policy_evaluated.disposition, "reject")
        # No SPF result given: "none" for the From domain, as the schema needs one.
        self.assertEqual([(s.domain, s.result) for s in r1.auth_results.spf], [("example.org", "none")])

    @defer.inlineCallbacks
    def test_compose_report_empty(self):
        with self.assertRaises(ValueError):
            yield self.store.compose_report("example.org", DAY, DAY + timedelta(days=1),
                                            "mx.example.net", "postmaster@mx.example.net", "x")


class PrepareReportsTests(StoreTestBase):

    @defer.inlineCallbacks
    def test_prepare_and_mark_sent(self):
        yield self.evaluate()
        yield self.evaluate()
        yield self.evaluate(source_ip="198.51.100.9", dkim_aligned="fail")
        later = yield self.evaluate(evaluated=DAY + timedelta(days=1, hours=5))
        now = DAY + timedelta(days=1, hours=0, minutes=5)
        reports = yield self.prepare(now, extra_contact_info="https://mx.example.net/")
        self.assertEqual(len(reports), 1)
        rep = reports[0]
        self.assertEqual(rep.to_addresses, ("dmarc@example.org",))
        self.assertEqual(rep.domain, "example.org")
        self.assertEqual(rep.mail_from, "postmaster@mx.example.net")
        self.assertEqual(rep.report_id, f"r{int(DAY.timestamp())}")
        self.assertEqual((rep.begin, rep.end), (DAY, DAY + timedelta(days=1)))

        msg = email.message_from_bytes(rep.message_bytes, policy=policy.default)
        begin = int(DAY.timestamp())
        self.assertEqual(msg["Subject"], "Report Domain: example.org Submitter: mx.example.net "
                                         f"Report-ID: <r{begin}>")
        self.assertEqual(msg["From"], "postmaster@mx.example.net")
        self.assertEqual(msg["To"], "dmarc@example.org")
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertTrue(msg["Message-ID"].endswith("@mx.example.net>"))
        self.assertEqual(msg["Date"].datetime, now)
        parts = list(msg.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "application/gzip"])
        self.assertIn("example.org", parts[0].get_content())
        self.assertEqual(parts[1].get_filename(),
                         f"mx.example.net!example.org!{begin}!{begin + 86399}!r{begin}.xml.gz")
        xml = gzip.decompress(parts[1].get_content())
        if etree is not None:
            rfc7489_schema().validate(xml.decode())
        self.assertIn(b"\r\n", rep.message_bytes)

        # Our own parser reads what we send.
        fb = parse_message(rep.message_bytes)
        self.assertEqual(fb.report_metadata.extra_contact_info, "https://mx.example.net/")
        self.assertEqual(sorted(r.row.count for r in fb.records), [1, 2])

        n = yield self.store.mark_sent(rep)
        self.assertEqual(n, 3)
        left = yield self.store.evaluations()
        self.assertEqual([e.id for e in left], [later])
        again = yield self.prepare(now)
        self.assertEqual(again, [])

    @defer.inlineCallbacks
    def test_late_evaluation_waits(self):
        """An evaluation stored for a period after due_reports looked at it is neither
        reported nor removed with that report."""
        yield self.evaluate()
        (due,) = yield self.store.due_reports(DAY + timedelta(days=1))
        late = yield self.evaluate(evaluated=DAY + timedelta(hours=12))
        xml = yield self.store.compose_report(
            "example.org", due.begin, due.end, "mx.example.net", "postmaster@mx.example.net",
            "x", last_evaluation_id=due.last_evaluation_id)
        self.assertEqual(parse_feedback(xml).records[0].row.count, 1)
        n = yield self.store.mark_sent(due)
        self.assertEqual(n, 1)
        left = yield self.store.evaluations()
        self.assertEqual([e.id for e in left], [late])

    @defer.inlineCallbacks
    def test_not_marked_is_prepared_again(self):
        yield self.evaluate()
        now = DAY + timedelta(days=1)
        first = yield self.prepare(now)
        second = yield self.prepare(now)
        self.assertEqual(len(first), 1)
        self.assertEqual(len(second), 1)
        self.assertEqual(first[0].last_evaluation_id, second[0].last_evaluation_id)

    @defer.inlineCallbacks
    def test_default_report_id_and_receiver(self):
        yield self.evaluate()
        (rep,) = yield self.store.prepare_reports(
            DAY + timedelta(days=1), self.resolver, "mx.example.net", "dmarc-reporter@Example.NET")
        self.assertRegex(rep.report_id, r"^\d+\.[0-9a-f]{12}$")
        msg = email.message_from_bytes(rep.message_bytes, policy=policy.default)
        filename = list(msg.iter_attachments())[0].get_filename()
        self.assertTrue(filename.startswith("example.net!example.org!"), filename)

    @defer.inlineCallbacks
    def test_external_destinations(self):
        """RFC 7489 7.1: other organizational domains must confirm in DNS."""
        yield self.evaluate(rua=("mailto:dmarc@example.org", "mailto:agg@reports.example.net",
                                 "mailto:agg@unverified.example", "mailto:x@sub.example.org",
                                 "https://ignored.example/", "mailto:dmarc@example.org"))
        (rep,) = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(rep.to_addresses,
                         ("dmarc@example.org", "agg@reports.example.net", "x@sub.example.org"))
        msg = email.message_from_bytes(rep.message_bytes, policy=policy.default)
        self.assertEqual(msg["To"], "dmarc@example.org, agg@reports.example.net, x@sub.example.org")
        self.assertIn(("example.org._report._dmarc.unverified.example", "TXT"), self.resolver.lookups)
        self.assertNotIn(("example.org._report._dmarc.sub.example.org", "TXT"), self.resolver.lookups)

    @defer.inlineCallbacks
    def test_no_allowed_destination_drops_evaluations(self):
        yield self.evaluate(rua=("mailto:agg@unverified.example",))
        reports = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(reports, [])
        left = yield self.store.evaluations()
        self.assertEqual(left, [])

    @defer.inlineCallbacks
    def test_temporary_failure_retried_later(self):
        yield self.evaluate(rua=("mailto:dmarc@example.org", "mailto:agg@tempfail.example"))
        reports = yield self.prepare(DAY + timedelta(days=1, hours=1))
        self.assertEqual(reports, [])
        left = yield self.store.evaluations()
        self.assertEqual(len(left), 1)
        # Past the retry window, the failing destination is skipped.
        (rep,) = yield self.prepare(DAY + timedelta(days=2, hours=1))
        self.assertEqual(rep.to_addresses, ("dmarc@example.org",))

    @defer.inlineCallbacks
    def test_max_destinations(self):
        rua = tuple(f"mailto:d{i}@example.org" for i in range(10))
        yield self.evaluate(rua=rua)
        (rep,) = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(len(rep.to_addresses), outgoing.MAX_DESTINATIONS)

    @defer.inlineCallbacks
    def test_size_limit(self):
        yield self.evaluate(rua=("mailto:small@example.org!1k", "mailto:big@example.org!10m"))
        (rep,) = yield self.prepare(DAY + timedelta(days=1))
        self.assertGreater(len(rep.message_bytes), 1024)
        self.assertEqual(rep.to_addresses, ("big@example.org",))
        self.assertNotIn(b"small@example.org", rep.message_bytes)

    @defer.inlineCallbacks
    def test_too_large_for_all(self):
        yield self.evaluate(rua=("mailto:small@example.org!1k",))
        reports = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(reports, [])
        left = yield self.store.evaluations()
        self.assertEqual(left, [])

    @defer.inlineCallbacks
    def test_several_domains(self):
        yield self.evaluate()
        yield self.evaluate(policy_domain="other.example",
                            policy_published=PolicyPublished(domain="other.example", p="none"),
                            header_from="other.example", rua=("mailto:r@other.example",), ri=3600)
        reports = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(sorted(r.domain for r in reports), ["example.org", "other.example"])
        other = [r for r in reports if r.domain == "other.example"][0]
        self.assertEqual(other.end - other.begin, timedelta(hours=1))
        fb = parse_message(other.message_bytes)
        self.assertEqual(fb.policy_published.domain, "other.example")


class SuppressionTests(StoreTestBase):

    @defer.inlineCallbacks
    def test_add_list_remove(self):
        key = yield self.store.add_suppression("mailto:DMARC@Example.ORG", comment="bounces")
        self.assertEqual(key, "dmarc@example.org")
        yield self.store.add_suppression("Reports.Example.NET",
                                         until=T0 + timedelta(days=7))
        entries = yield self.store.suppressions()
        self.assertEqual([(s.entry, s.comment) for s in entries],
                         [("dmarc@example.org", "bounces"), ("reports.example.net", "")])
        self.assertEqual(entries[0].created, T0)
        self.assertIsNone(entries[0].until)
        self.assertEqual(entries[1].until, T0 + timedelta(days=7))
        active = yield self.store.suppressions(T0 + timedelta(days=8))
        self.assertEqual([s.entry for s in active], ["dmarc@example.org"])
        removed = yield self.store.remove_suppression("dmarc@example.org")
        self.assertTrue(removed)
        removed = yield self.store.remove_suppression("dmarc@example.org")
        self.assertFalse(removed)

    @defer.inlineCallbacks
    def test_invalid_entries(self):
        for bad in ("", "@example.org", "user@", "a..b"):
            with self.assertRaises(Exception):
                yield self.store.add_suppression(bad)

    @defer.inlineCallbacks
    def test_suppressed_destinations(self):
        yield self.evaluate(rua=("mailto:dmarc@example.org", "mailto:agg@reports.example.net",
                                 "mailto:other@example.org", "mailto:x@deep.reports.example.net"))
        self.resolver.add("example.org._report._dmarc.deep.reports.example.net", "TXT", ["v=DMARC1"])
        yield self.store.add_suppression("other@example.org")
        # A domain entry covers its subdomains.
        yield self.store.add_suppression("reports.example.net", until=DAY + timedelta(days=1, hours=1))
        (rep,) = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(rep.to_addresses, ("dmarc@example.org",))
        # After the domain entry expires, its addresses get reports again.
        (rep,) = yield self.prepare(DAY + timedelta(days=1, hours=2))
        self.assertEqual(rep.to_addresses, ("dmarc@example.org", "agg@reports.example.net",
                                            "x@deep.reports.example.net"))

    @defer.inlineCallbacks
    def test_all_suppressed(self):
        yield self.evaluate()
        yield self.store.add_suppression("example.org")
        reports = yield self.prepare(DAY + timedelta(days=1))
        self.assertEqual(reports, [])
        left = yield self.store.evaluations()
        self.assertEqual(left, [])
