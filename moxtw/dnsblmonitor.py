"""Monitoring of our own sending IPs in DNS block lists (RFC 5782), as metrics.

Every hour the IPs of listeners with SMTP enabled are looked up in the zones of
domains.toml MonitorDNSBLs and of the listeners' DNSBLs; ``dnsbl_ip_listed{zone,ip}`` is 1
for a listed IP (a warning is logged once per change), 0 otherwise. Unspecified,
loopback and private addresses are skipped: block lists only list public addresses.
"""

import ipaddress

from prometheus_client import Gauge
from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from moxtw import dnsbl
from moxtw.clock import default_reactor
from moxtw.metrics import REGISTRY

log = Logger(namespace="moxtw.dnsbl")



def listed_gauge(registry):
    """The ``dnsbl_ip_listed`` gauge, registered in ``registry``."""
    return Gauge(
        "dnsbl_ip_listed",
        "Whether one of our IPs is listed in a monitored DNS block list (1) or not (0).",
        ["zone", "ip"],
        registry=registry,
    )


DNSBL_IP_LISTED = listed_gauge(REGISTRY)

INTERVAL = 3600.0


def monitored_ips(static, include_private=False):
    """Public IPs of SMTP listeners: ``NATIPs`` where set (the listener is behind NAT),
    else ``IPs``."""
    ips = []
    for lst in static.Listeners.values():
        if not lst.SMTP.Enabled:
            continue
        for text in (getattr(lst, "NATIPs", None) or lst.IPs):
            ip = ipaddress.ip_address(str(text))
            if ip.is_unspecified or (not include_private and not ip.is_global):
                continue
            if str(ip) not in ips:
                ips.append(str(ip))
    return ips


def monitored_zones(static, dynamic):
    zones = [str(z) for z in dynamic.MonitorDNSBLs]
    for lst in static.Listeners.values():
        for z in lst.SMTP.DNSBLs:
            if str(z) not in zones:
                zones.append(str(z))
    return zones


class DNSBLMonitor(service.Service):
    name = "dnsbl-monitor"

    def __init__(self, resolver, current, clock=None, interval=INTERVAL, include_private=False,
                 registry=None):
        """``registry``: a prometheus CollectorRegistry for the gauge (tests); the
        process-wide one by default."""
        clock = default_reactor(clock)
        self.gauge = DNSBL_IP_LISTED if registry is None else listed_gauge(registry)
        self.resolver = resolver
        self.current = current
        self.clock = clock
        self.interval = interval
        self.include_private = include_private
        self.listed = {}  # (zone, ip) -> bool
        self._loop = None
        self._warned_no_ips = False

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(lambda f: log.failure("dnsbl monitor", f))

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def _check(self):
        try:
            await self.check()
        except Exception:
            log.failure("checking our IPs in DNS block lists")

    async def check(self):
        static, dynamic = self.current()
        ips = monitored_ips(static, self.include_private)
        zones = monitored_zones(static, dynamic)
        if zones and not ips and not self._warned_no_ips:
            self._warned_no_ips = True
            log.info("no public SMTP listener IPs to check in DNS block lists "
                     "(set NATIPs on listeners behind NAT, or listen on the public IPs)")
        # Gauges of zones or IPs no longer configured go away.
        for zone, ip in list(self.listed):
            if zone not in zones or ip not in ips:
                del self.listed[(zone, ip)]
                try:
                    self.gauge.remove(zone, ip)
                except KeyError:
                    pass
        for zone in zones:
            for ip in ips:
                r = await dnsbl.lookup(self.resolver, zone, ip)
                if r.status == "temperror":
                    continue  # keep the last known state
                listed = r.status == "fail"
                self.gauge.labels(zone=zone, ip=ip).set(1 if listed else 0)
                if self.listed.get((zone, ip)) != listed:
                    if listed:
                        log.warn("our IP {ip} is listed in DNS block list {zone}: {reason}", ip=ip, zone=zone,
                                 reason=r.reason)
                    elif (zone, ip) in self.listed:
                        log.info("our IP {ip} is no longer listed in {zone}", ip=ip, zone=zone)
                self.listed[(zone, ip)] = listed
        return dict(self.listed)
