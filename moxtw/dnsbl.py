"""DNS blocklists: is an IP address listed in a DNSBL zone (RFC 5782).

An address is looked up as an A record of its reversed octets (IPv4, RFC 5782 2.1) or
reversed nibbles (IPv6, RFC 5782 2.4) under the zone; an answer in 127.0.0.0/8 means
listed, and the TXT record at the same name gives the reason. :func:`check_health` tests
a zone with the entries every DNSBL must have (RFC 5782 5).
"""

import ipaddress
import re
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dns.base import client_ip, normalize
from moxtw.dns.types import DNSError, NoRecords, NotFound, TemporaryFailure

log = Logger(namespace="moxtw.dnsbl")

PASS = "pass"  # not listed
FAIL = "fail"  # listed
TEMPERROR = "temperror"  # no answer we can use; try later

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Return codes that are not listings: 127.0.0.0 and 127.0.0.1 (RFC 5782 5: 127.0.0.1 must
# never be listed) and 127.255.255.0/24, where large DNSBLs (Spamhaus) report query errors
# such as "queried through a public resolver".
_NOT_LISTINGS = (ipaddress.ip_network("127.0.0.0/31"), ipaddress.ip_network("127.255.255.0/24"))

MAX_REASON = 300
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class DNSBLResult:
    """``status``: "pass" (not listed), "fail" (listed) or "temperror". ``zone``: the
    DNSBL; ``name``: the name looked up; ``codes``: the A records returned; ``reason``:
    the TXT text when listed (printable, shortened), else why not usable."""

    status: str
    zone: str
    ip: str
    name: str = ""
    codes: tuple = ()
    reason: str = ""


def query_name(zone, ip):
    """The name to look up for ``ip`` in ``zone``: "2.0.0.127.zone" for 127.0.0.2 (RFC 5782
    2.1), 32 reversed nibbles for IPv6 (RFC 5782 2.4). ValueError for a bad IP,
    InvalidName for a bad zone."""
    zone = normalize(zone)
    addr = client_ip(ip)
    if addr.version == 4:
        labels = reversed(str(addr).split("."))
    else:
        labels = reversed(addr.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone


def _listed(code):
    try:
        addr = ipaddress.ip_address(code)
    except ValueError:
        return False
    return addr in _LOOPBACK and not any(addr in n for n in _NOT_LISTINGS)


def lookup_sync(resolver, zone, ip):
    """Blocking :func:`lookup`, for the resolver's thread pool."""
    name = query_name(zone, ip)
    zone = normalize(zone)
    ipstr = str(client_ip(ip))
    try:
        answer = resolver.lookup_sync(name, "A")
    except (NotFound, NoRecords):
        return DNSBLResult(PASS, zone, ipstr, name)  # RFC 5782 2.1: no A record, not listed
    except TemporaryFailure as e:
        return DNSBLResult(TEMPERROR, zone, ipstr, name, reason=f"A lookup: {e.describe}")
    except DNSError as e:
        return DNSBLResult(TEMPERROR, zone, ipstr, name, reason=f"A lookup: {e.describe}")
    codes = tuple(str(c) for c in answer.records)
    if not any(_listed(c) for c in codes):
        # Not a listing (RFC 5782 2.1 values are in 127.0.0.0/8, 5: never 127.0.0.1):
        # an error code or a broken zone; neither lists nor clears the address.
        return DNSBLResult(TEMPERROR, zone, ipstr, name, codes,
                           reason="unexpected answer " + ", ".join(codes[:4]))
    try:
        txt = resolver.lookup_sync(name, "TXT")
        reason = "; ".join(txt.records)
    except DNSError:
        reason = ""  # RFC 5782 2.1: the TXT record is optional
    reason = _UNPRINTABLE.sub(" ", reason).strip()
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 3] + "..."
    return DNSBLResult(FAIL, zone, ipstr, name, codes, reason)


def lookup(resolver, zone, ip) -> defer.Deferred:
    """Whether ``ip`` is listed in the DNSBL ``zone``, in the resolver's thread pool.
    Deferred[:class:`DNSBLResult`]; fails with ValueError/InvalidName for a bad IP or zone."""
    d = resolver.run(lookup_sync, resolver, zone, ip)

    def logged(result):
        log.debug("dnsbl {zone} {ip}: {status} {reason}", zone=result.zone, ip=result.ip,
                  status=result.status, reason=result.reason)
        return result

    return d.addCallback(logged)


def check_health_sync(resolver, zone):
    """Blocking :func:`check_health`."""
    listed = lookup_sync(resolver, zone, "127.0.0.2")
    unlisted = lookup_sync(resolver, zone, "127.0.0.1")
    healthy = listed.status == FAIL and unlisted.status == PASS
    if not healthy:
        log.warn("dnsbl {zone} unhealthy: 127.0.0.2 {listed} (must be listed), 127.0.0.1 "
                 "{unlisted} (must not be) {reason}", zone=listed.zone, listed=listed.status,
                 unlisted=unlisted.status, reason=listed.reason or unlisted.reason)
    return healthy


def check_health(resolver, zone) -> defer.Deferred:
    """Whether ``zone`` works as RFC 5782 5 requires: 127.0.0.2 listed, 127.0.0.1 not.
    Deferred[bool]; False also when either lookup failed temporarily."""
    return resolver.run(check_health_sync, resolver, zone)


async def listed(resolver, zones, ip):
    """The first of ``zones`` listing ``ip`` as (zone, reason), or None (RFC 5782).
    A zone whose lookup fails is skipped (logged)."""
    for zone in zones:
        try:
            r = await lookup(resolver, zone, ip)
        except Exception as e:
            log.info("dnsbl {zone} lookup failed: {error}", zone=zone, error=str(e))
            continue
        if r.status == "fail":
            return zone, r.reason
    return None
