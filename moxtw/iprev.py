"""iprev: does the connecting IP have a reverse DNS name that resolves back to it
(forward-confirmed reverse DNS, RFC 8601 3; results per RFC 8601 2.7.3).

:func:`check` looks up the PTR names of the IP, then the A (IPv4) or AAAA (IPv6) records
of each name until one contains the IP.
"""

import ipaddress
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dns.base import client_ip, normalize, reverse_name
from moxtw.dns.types import DNSError, NoRecords, NotFound, TemporaryFailure

log = Logger(namespace="moxtw.iprev")

PASS = "pass"
FAIL = "fail"
TEMPERROR = "temperror"
PERMERROR = "permerror"

# At most this many PTR names are forward-confirmed, as RFC 7208 5.5 limits the SPF "ptr"
# mechanism; a reverse zone is under the control of whoever holds the address.
MAX_NAMES = 10


@dataclass(frozen=True)
class IprevResult:
    """``result``: "pass", "fail", "temperror" or "permerror". ``names``: the PTR names
    (lower case, no trailing dot); ``name``: the first one that resolves back to the IP
    ("" unless pass). ``authentic``: the PTR and forward answers were DNSSEC-validated.
    ``reason``: why it did not pass."""

    result: str
    ip: str
    names: tuple = ()
    name: str = ""
    authentic: bool = False
    reason: str = ""


def check_sync(resolver, ip):
    """Blocking :func:`check`, for the resolver's thread pool."""
    addr = client_ip(ip)
    ipstr = str(addr)
    try:
        ptr = resolver.lookup_sync(reverse_name(addr), "PTR")
    except (NotFound, NoRecords):
        # RFC 8601 2.7.3: no PTR data published for the address is "permerror".
        return IprevResult(PERMERROR, ipstr, reason="no PTR record")
    except TemporaryFailure as e:
        return IprevResult(TEMPERROR, ipstr, reason=f"PTR lookup: {e.describe}")
    except DNSError as e:
        return IprevResult(PERMERROR, ipstr, reason=f"PTR lookup: {e.describe}")

    names = []
    for value in ptr.records:
        name = str(value).strip().rstrip(".").lower()
        if name and name not in names:
            names.append(name)
    names = tuple(names)
    if not names:
        return IprevResult(PERMERROR, ipstr, reason="no PTR record")

    rdtype = "A" if addr.version == 4 else "AAAA"
    temporary = None
    for name in names[:MAX_NAMES]:
        try:
            answer = resolver.lookup_sync(normalize(name), rdtype)
        except TemporaryFailure as e:
            temporary = f"{rdtype} lookup of {name}: {e.describe}"
            continue
        except DNSError:
            # RFC 8601 2.7.3: a forward query without result (NXDOMAIN, NODATA) is
            # a mismatch; so is a name that cannot be looked up.
            continue
        for value in answer.records:
            try:
                if ipaddress.ip_address(value) == addr:
                    return IprevResult(PASS, ipstr, names, name,
                                       ptr.authentic and answer.authentic)
            except ValueError:
                continue
    if temporary:
        # RFC 8601 2.7.3: a transient DNS error; a retry may produce a final result.
        return IprevResult(TEMPERROR, ipstr, names, reason=temporary)
    # RFC 8601 2.7.3: reverse and forward lookups produced results not in agreement.
    reason = "no PTR name resolves back to the IP"
    if len(names) > MAX_NAMES:
        reason += f" (only the first {MAX_NAMES} of {len(names)} names checked)"
    return IprevResult(FAIL, ipstr, names, reason=reason)


def check(resolver, ip) -> defer.Deferred:
    """iprev for ``ip`` (str or ipaddress), in the resolver's thread pool.
    Deferred[:class:`IprevResult`]; fails with ValueError for an invalid IP."""
    d = resolver.run(check_sync, resolver, ip)

    def logged(result):
        log.debug("iprev {ip}: {result} {name} {reason}", ip=result.ip, result=result.result,
                  name=result.name, reason=result.reason)
        return result

    return d.addCallback(logged)
