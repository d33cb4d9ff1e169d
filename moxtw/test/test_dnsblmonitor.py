"""Monitoring our own IPs in DNS block lists."""

from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw.dns import MockResolver, TemporaryFailure
from moxtw.dnsblmonitor import DNSBLMonitor, monitored_ips


def config(ips, zones, monitor, nat=()):
    lst = SimpleNamespace(IPs=ips, NATIPs=list(nat), SMTP=SimpleNamespace(Enabled=True, DNSBLs=zones))
    off = SimpleNamespace(IPs=["198.51.100.9"], SMTP=SimpleNamespace(Enabled=False, DNSBLs=[]))
    return SimpleNamespace(Listeners={"public": lst, "internal": off}), SimpleNamespace(MonitorDNSBLs=monitor)


class MonitorTests(unittest.TestCase):
    def test_ips(self):
        static, _ = config(["0.0.0.0", "127.0.0.1", "10.0.0.1", "8.8.8.8", "2001:4860::1"], [], [])
        self.assertEqual(monitored_ips(static), ["8.8.8.8", "2001:4860::1"])
        self.assertEqual(monitored_ips(static, include_private=True), ["127.0.0.1", "10.0.0.1", "8.8.8.8",
                                                                      "2001:4860::1"])
        static, _ = config(["0.0.0.0"], [], [], nat=["9.9.9.9"])
        self.assertEqual(monitored_ips(static), ["9.9.9.9"])

    @defer.inlineCallbacks
    def test_listed_and_cleared(self):
        r = MockResolver({
            ("8.8.8.8.bl.example", "A"): ["127.0.0.2"],
            ("8.8.8.8.bl.example", "TXT"): ["listed for spam"],
            ("8.8.8.8.other.example", "A"): TemporaryFailure,
        })
        clock = task.Clock()
        registry = CollectorRegistry()  # not the process-wide one: other tests cannot interfere
        m = DNSBLMonitor(r, lambda: config(["8.8.8.8"], ["other.example"], ["bl.example"]), clock=clock,
                        registry=registry)
        m.startService()
        self.addCleanup(m.stopService)
        yield m.check()
        self.assertEqual(m.listed, {("bl.example", "8.8.8.8"): True})
        self.assertEqual(registry.get_sample_value("dnsbl_ip_listed", {"zone": "bl.example", "ip": "8.8.8.8"}), 1)
        r.records.pop(("8.8.8.8.bl.example", "A"))
        r.records.pop(("8.8.8.8.bl.example", "TXT"))
        clock.advance(3600)  # the hourly check
        self.assertEqual(m.listed[("bl.example", "8.8.8.8")], False)
        self.assertEqual(registry.get_sample_value("dnsbl_ip_listed", {"zone": "bl.example", "ip": "8.8.8.8"}), 0)

    @defer.inlineCallbacks
    def test_removed_zone_gauge_dropped(self):
        r = MockResolver({("8.8.8.8.gone.example", "A"): ["127.0.0.2"]})
        cfg = [config(["8.8.8.8"], [], ["gone.example"])]
        registry = CollectorRegistry()
        m = DNSBLMonitor(r, lambda: cfg[0], clock=task.Clock(), registry=registry)
        yield m.check()
        self.assertEqual(registry.get_sample_value("dnsbl_ip_listed", {"zone": "gone.example", "ip": "8.8.8.8"}), 1)
        cfg[0] = config(["8.8.8.8"], [], [])
        yield m.check()
        self.assertIsNone(registry.get_sample_value("dnsbl_ip_listed", {"zone": "gone.example", "ip": "8.8.8.8"}))
        self.assertEqual(m.listed, {})
