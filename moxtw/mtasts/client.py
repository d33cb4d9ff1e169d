"""MTA-STS for outgoing delivery (RFC 8461): the ``_mta-sts`` TXT record, the policy
fetched over HTTPS with PKIX verification, and which MX hosts a policy allows.

:func:`lookup_record` and :func:`fetch_policy` are the network steps; the cache that
decides when to use them is :class:`moxtw.mtasts.cache.PolicyCache`.
"""

import ipaddress
from dataclasses import dataclass

import treq
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from twisted.logger import Logger

from moxtw import dns
from moxtw.mtasts.policy import MAX_AGE_LIMIT, POLICY_PATH

log = Logger(namespace="moxtw.mtasts")

FETCH_TIMEOUT = 10.0  # seconds for the whole fetch (RFC 8461 3.3 suggests 60 at most)
MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 3.3: 64 KB at most
MODES = ("enforce", "testing", "none")


class RecordError(Exception):
    """No usable ``_mta-sts`` record; ``temporary`` for a DNS failure."""

    def __init__(self, text, temporary=False):
        super().__init__(text)
        self.temporary = temporary


class PolicyError(Exception):
    """The policy could not be fetched or parsed. ``result`` is the RFC 8460 4.3.2.2 result
    type: "sts-policy-fetch-error", "sts-policy-invalid" or "sts-webpki-invalid"."""

    def __init__(self, text, result="sts-policy-fetch-error"):
        super().__init__(text)
        self.result = result


@dataclass(frozen=True)
class FetchedPolicy:
    """A policy as received: mode, MX patterns, max_age in seconds, and its text."""

    mode: str
    mx: tuple
    max_age: int
    text: str

    def allows(self, host):
        """Whether MX host ``host`` matches one of the policy's patterns (RFC 8461 4.1: a
        literal name, or "*." and a domain matching exactly one more label)."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            p = pattern.lower().rstrip(".")
            if p.startswith("*."):
                if "." in host and host.split(".", 1)[1] == p[2:]:
                    return True
            elif p == host:
                return True
        return False


def parse_record(text):
    """The id of an ``_mta-sts`` TXT record (RFC 8461 3.1), or raise RecordError."""
    fields = [f.strip() for f in text.split(";")]
    if not fields or fields[0].replace(" ", "") != "v=STSv1":
        raise RecordError("not an MTA-STS record")
    record_id = None
    for f in fields[1:]:
        if not f:
            continue
        key, eq, value = f.partition("=")
        if not eq:
            raise RecordError(f"malformed field {f!r}")
        key, value = key.strip(), value.strip()
        if key == "id":
            # RFC 8461 3.1: 1 to 32 alphanumeric characters.
            if not (1 <= len(value) <= 32 and value.isascii() and value.isalnum()):
                raise RecordError(f"invalid id {value!r}")
            record_id = value
    if record_id is None:
        raise RecordError("record without id")
    return record_id


async def lookup_record(resolver, domain):
    """The policy id from ``_mta-sts.<domain>`` TXT. Raises RecordError: permanent when
    there is no (single valid) record, temporary on DNS failure."""
    name = f"_mta-sts.{dns.normalize(domain)}"
    try:
        answer = await resolver.txt(name)
    except (dns.NotFound, dns.NoRecords):
        raise RecordError(f"no TXT record at {name}") from None
    except dns.DNSError as e:
        raise RecordError(f"looking up {name}: {e}", temporary=True) from None
    # RFC 8461 3.1: records not starting with v=STSv1 are ignored; more than one
    # STSv1 record means no policy.
    candidates = [t for t in answer.records if t.replace(" ", "").startswith("v=STSv1")]
    if len(candidates) != 1:
        raise RecordError(f"{len(candidates)} MTA-STS records at {name}, need exactly one")
    return parse_record(candidates[0])


def parse_policy(text):
    """A :class:`FetchedPolicy` from the policy file text (RFC 8461 3.2), or raise
    PolicyError with "sts-policy-invalid"."""
    values = {}
    mx = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"malformed policy line {line[:80]!r}", "sts-policy-invalid")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value)
        elif key in ("version", "mode", "max_age") and key not in values:
            # RFC 8461 3.2: the first of duplicated keys is used; unknown keys ignored.
            values[key] = value
    if values.get("version") != "STSv1":
        raise PolicyError("policy version is not STSv1", "sts-policy-invalid")
    mode = values.get("mode")
    if mode not in MODES:
        raise PolicyError(f"invalid policy mode {mode!r}", "sts-policy-invalid")
    age = values.get("max_age", "")
    if not (age.isascii() and age.isdigit()) or len(age) > 10:
        raise PolicyError(f"invalid max_age {age[:20]!r}", "sts-policy-invalid")
    if mode != "none" and not mx:
        raise PolicyError("policy without mx lines", "sts-policy-invalid")
    patterns = []
    for pattern in mx:
        wild = pattern.startswith("*.")
        name = pattern[2:] if wild else pattern
        try:
            # Compared with MX host names as A-labels (RFC 8461 4.1 with RFC 5890).
            name = dns.normalize(name)
        except dns.DNSError:
            raise PolicyError(f"invalid mx pattern {pattern[:80]!r}", "sts-policy-invalid") from None
        patterns.append("*." + name if wild else name)
    return FetchedPolicy(mode, tuple(patterns), min(int(age), MAX_AGE_LIMIT), text)


@implementer(IStreamClientEndpoint)
class _ResolvingEndpoint:
    """Connects to a host name through our resolver (as mail delivery does), then TLS."""

    def __init__(self, reactor, resolver, host, port, creator, timeout):
        self.reactor, self.resolver, self.host, self.port = reactor, resolver, host, port
        self.creator, self.timeout = creator, timeout

    @defer.inlineCallbacks
    def connect(self, factory):
        try:
            ips = [str(ipaddress.ip_address(self.host.strip("[]")))]
        except ValueError:
            answer = yield self.resolver.ip(self.host)
            ips = list(answer.records[:4])
        last = None
        for ip in ips:
            cls = endpoints.TCP6ClientEndpoint if ":" in ip else endpoints.TCP4ClientEndpoint
            tcp = cls(self.reactor, ip, self.port, timeout=self.timeout)
            try:
                proto = yield endpoints.wrapClientTLS(self.creator, tcp).connect(factory)
                return proto
            except Exception as e:
                last = e
        raise last or ConnectionError(f"no addresses for {self.host}")


@implementer(IAgentEndpointFactory)
class EndpointFactory:
    def __init__(self, reactor, resolver, policy, port, timeout):
        self.reactor, self.resolver, self.policy, self.port, self.timeout = reactor, resolver, policy, port, timeout

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        creator = self.policy.creatorForNetloc(uri.host, uri.port)
        return _ResolvingEndpoint(self.reactor, self.resolver, host, self.port or uri.port, creator, self.timeout)


async def fetch_policy(reactor, resolver, domain, trust=None, port=None, timeout=FETCH_TIMEOUT):
    """Fetch and parse ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 3.3):
    PKIX-verified (``trust``: an IOpenSSLTrustRoot, None for the system's CAs), no
    redirects, at most 64 KB, status 200 and text/plain. ``port``: test-only override of
    443. Raises PolicyError."""
    host = "mta-sts." + dns.normalize(domain)
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
    agent = Agent.usingEndpointFactory(reactor, EndpointFactory(reactor, resolver, policy, port, timeout))
    client = treq.client.HTTPClient(agent)
    url = f"https://{host}{POLICY_PATH.decode()}"
    deadline = reactor.seconds() + timeout
    try:
        # unbuffered: treq would otherwise read the whole body into memory itself.
        response = await client.get(url, allow_redirects=False, timeout=timeout, unbuffered=True)
    except dns.DNSError as e:
        raise PolicyError(f"looking up {host}: {e}") from None
    except Exception as e:
        text = _describe(e)
        if "certificate" in text.lower() or "VerificationError" in text:
            raise PolicyError(f"fetching {url}: {text}", "sts-webpki-invalid") from None
        raise PolicyError(f"fetching {url}: {text}") from None
    if response.code != 200:
        # RFC 8461 3.3: 3xx redirects are not followed; any other status is a failure.
        await _discard(response)
        raise PolicyError(f"fetching {url}: HTTP status {response.code}")
    ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "text/plain":
        # RFC 8461 3.2: the policy has media type text/plain.
        await _discard(response)
        raise PolicyError(f"fetching {url}: content type {ctype[:60]!r}, not text/plain", "sts-policy-invalid")
    body = []
    size = [0]

    def collect(data):
        size[0] += len(data)
        if size[0] > MAX_POLICY_SIZE:
            raise PolicyError(f"policy at {url} larger than {MAX_POLICY_SIZE} bytes", "sts-policy-invalid")
        body.append(data)

    try:
        await collect_within(reactor, response, collect, deadline)
    except PolicyError:
        raise
    except Exception as e:
        raise PolicyError(f"reading {url}: {_describe(e)}") from None
    try:
        text = b"".join(body).decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"policy at {url} is not UTF-8", "sts-policy-invalid") from None
    return parse_policy(text)


class BodyTimeout(Exception):
    pass


async def collect_within(reactor, response, collector, deadline):
    """treq.collect with a deadline (Unix time on ``reactor``): treq's own timeout ends
    with the response headers, so a server sending the body slowly would hold us
    forever. At the deadline the connection is aborted."""
    expired = []

    def abort():
        expired.append(True)
        # The connection under the response (treq -> twisted.web's Response ->
        # TransportProxyProducer -> transport): aborted, not closed politely.
        proxy = getattr(getattr(response, "original", response), "_transport", None)
        transport = getattr(proxy, "_producer", None)
        try:
            if transport is not None and hasattr(transport, "abortConnection"):
                transport.abortConnection()
            elif proxy is not None:
                proxy.stopProducing()
        except Exception:
            log.failure("aborting a slow HTTP response")

    timer = reactor.callLater(max(0.0, deadline - reactor.seconds()), abort)
    try:
        await treq.collect(response, collector)
    except Exception:
        if expired:
            raise BodyTimeout("timeout reading the response body") from None
        raise
    finally:
        if timer.active():
            timer.cancel()
    if expired:
        raise BodyTimeout("timeout reading the response body")


async def _discard(response, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    try:
        await collect_within(reactor, response, lambda data: None, reactor.seconds() + 5)
    except Exception:
        pass


def _describe(e):
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(f"{type(getattr(r, 'value', r)).__name__}: {getattr(r, 'value', r)}" for r in reasons)[:300]
    return (str(e) or type(e).__name__)[:300]


__all__ = ["FetchedPolicy", "PolicyError", "RecordError", "fetch_policy", "lookup_record",
           "parse_policy", "parse_record"]
