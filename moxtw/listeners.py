"""Turn the Listeners of moxtw.toml into endpoint services.

Each enabled protocol of a listener becomes a ``ListenerService`` per IP, a
``StreamServerEndpointService`` that binds in ``privilegedStartService`` (so twistd can
bind port 25 as root, then drop to ``--uid/--gid``) and fails start-up loudly when a port
cannot be bound (``BindError``, one line naming the address). HTTP-based interfaces
sharing an IP and port share one site.
"""

import errno
import ipaddress
from dataclasses import dataclass, field

from twisted.application import internet
from twisted.internet import endpoints, error
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server

from moxtw import unavailable
from moxtw.mtasts.serve import request_host
from moxtw.web.base import LimitedRequest

# Listener protocol kinds: (config attribute, implicit TLS).
MAIL_KINDS = (
    ("SMTP", False),
    ("Submission", False),
    ("Submissions", True),
    ("IMAP", False),
    ("IMAPS", True),
)
_MAIL_KIND_NAMES = {k for k, _ in MAIL_KINDS}
WEB_KINDS = (
    ("AccountHTTP", False),
    ("AccountHTTPS", True),
    ("AdminHTTP", False),
    ("AdminHTTPS", True),
    ("WebmailHTTP", False),
    ("WebmailHTTPS", True),
    ("WebAPIHTTP", False),
    ("WebAPIHTTPS", True),
    ("MetricsHTTP", False),
    ("AutoconfigHTTPS", True),
    ("MTASTSHTTPS", True),
    ("WebserverHTTP", False),
    ("WebserverHTTPS", True),
)


class ListenerError(Exception):
    """The listener configuration cannot be served."""


class BindError(ListenerError):
    """A listener's socket cannot be bound: the port is in use, needs root, or the IP is
    not on this machine. ``str()`` is one line naming the address and port."""

    def __init__(self, spec, socket_error):
        self.spec = spec
        self.errno = getattr(socket_error, "errno", None)
        why = getattr(socket_error, "strerror", None) or str(socket_error)
        if self.errno == errno.EADDRINUSE:
            why = "address already in use (by another program, or another moxtw)"
        elif self.errno == errno.EACCES and spec.port < 1024:
            why = "permission denied (ports below 1024 need root)"
        elif self.errno == errno.EADDRNOTAVAIL:
            why = "the IP address is not on this machine"
        host = f"[{spec.ip}]" if ":" in spec.ip else spec.ip
        super().__init__(
            f"cannot listen on {host}:{spec.port} for {'+'.join(spec.kinds)}"
            f" (listener {spec.listener}): {why}"
        )


@dataclass
class ListenerSpec:
    listener: str
    ip: str
    port: int
    tls: bool
    kinds: list = field(default_factory=list)

    @property
    def name(self):
        return f"{self.listener}/{'+'.join(self.kinds)}/{self.ip}:{self.port}"


def plan(static):
    """The sockets the Listeners ask for: [ListenerSpec], web kinds grouped per port."""
    specs = []
    for lname, lst in static.Listeners.items():
        for ip in lst.IPs:
            web = {}
            for kind, tls in MAIL_KINDS:
                conf = getattr(lst, kind)
                if conf.Enabled:
                    specs.append(ListenerSpec(lname, str(ip), conf.Port, tls, [kind]))
            for kind, tls in WEB_KINDS:
                conf = getattr(lst, kind)
                if not conf.Enabled:
                    continue
                if getattr(conf, "NonTLS", False):
                    tls = False
                spec = web.get(conf.Port)
                if spec is None:
                    spec = web[conf.Port] = ListenerSpec(lname, str(ip), conf.Port, tls, [])
                elif spec.tls != tls:
                    raise ListenerError(
                        f"listener {lname}: {kind} and {spec.kinds[0]} share port {conf.Port}"
                        " but not whether it uses TLS"
                    )
                spec.kinds.append(kind)
            specs.extend(web.values())
    seen = {}
    for spec in specs:
        key = (spec.ip, spec.port)
        if key in seen:
            raise ListenerError(f"{spec.name} and {seen[key].name} use the same IP and port")
        seen[key] = spec
    return specs


class ListenerService(internet.StreamServerEndpointService):
    """An endpoint service that remembers its spec and, once bound, its port."""

    _raiseSynchronously = True

    def __init__(self, spec, endpoint, factory):
        super().__init__(endpoint, factory)
        self.spec = spec
        self.port = None
        self.setName(spec.name)

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except error.CannotListenError as e:
            raise BindError(self.spec, e.socketError) from None

        def bound(port):
            self.port = port
            return port

        self._waitingForPort.addCallback(bound)


ACME_CHALLENGE_PATH = b"/.well-known/acme-challenge/"  # RFC 8555 8.3


class _Redirect(resource.Resource):
    isLeaf = True

    def __init__(self, to):
        super().__init__()
        self.to = to

    def render(self, request):
        request.setResponseCode(301)
        request.setHeader(b"location", self.to)
        return b""


class _WebRoot(resource.Resource):
    """One HTTP port: /metrics when MetricsHTTP is served here, the MTA-STS policy host
    when MTASTSHTTPS is, ACME http-01 tokens on plain HTTP, 503 for what is not built."""

    def __init__(self, kinds, metrics_resource, mtasts_resource=None, acme_resource=None, account_resource=None,
                 admin_resource=None):
        super().__init__()
        self._unavailable = unavailable.WebUnavailable()
        self._acme = acme_resource
        self._metrics = metrics_resource if "MetricsHTTP" in kinds else None
        self._mtasts = mtasts_resource if "MTASTSHTTPS" in kinds else None
        self._account = account_resource if {"AccountHTTP", "AccountHTTPS"} & set(kinds) else None
        self._admin = admin_resource if {"AdminHTTP", "AdminHTTPS"} & set(kinds) else None
        self._only_metrics = kinds == ["MetricsHTTP"]

    def body_limit(self, path, headers):
        """A larger request body limit the account app allows on ``path`` (an upload to
        import), for moxtw.web.base.LimitedRequest; None for the default."""
        hook = getattr(self._account, "body_limit", None)
        if hook is None or path == b"/admin" or path.startswith(b"/admin/"):
            return None
        return hook(path, headers)

    def getChildWithDefault(self, name, request):
        # ACME http-01 answers for any host name (the CA asks for the name validated).
        if self._acme is not None and request.path.startswith(ACME_CHALLENGE_PATH):
            return self._acme
        # Requests for mta-sts.<domain> get the policy host, whatever their path.
        if self._mtasts is not None and self._mtasts.domain_for(request_host(request)) is not None:
            return self._mtasts
        if self._metrics is not None and name == b"metrics":
            return self._metrics
        # The admin pages at /admin/ (mox's default), the account pages at /.
        if self._admin is not None and name == b"admin":
            if not request.postpath:
                return _Redirect(b"/admin/")
            return self._admin
        if name in (b"webmail", b"webapi"):
            return self._unavailable  # not built: 503, not the account pages' 404
        if self._account is not None and name != b"admin":
            # Mounted at the root: the account app sees the whole path.
            request.postpath.insert(0, request.prepath.pop())
            return self._account
        return super().getChildWithDefault(name, request)

    def getChild(self, name, request):
        return self._unavailable

    def render_GET(self, request):
        if self._only_metrics:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"moxtw metrics: see /metrics\n"
        return self._unavailable.render(request)


def build(static, reactor, *, smtp_factory, imap_factory, tls_context=None,
          metrics_resource=None, mtasts_resource=None, acme_resource=None, account_resource=None,
          admin_resource=None):
    """Create the ListenerServices for ``static``.

    ``tls_context(listener_name, listener) -> IOpenSSLServerConnectionCreator`` supplies
    the TLS configuration of a listener for implicit-TLS kinds. ``smtp_factory(kind,
    listener_name, listener)`` and ``imap_factory(...)`` build the protocol factories for
    the SMTP and IMAP kinds; web kinds get a site (metrics, or 503 for what is not built).
    ``acme_resource`` answers ACME http-01 challenges on the plain HTTP ports.
    """
    services = []
    for spec in plan(static):
        lst = static.Listeners[spec.listener]
        kind = spec.kinds[0]
        if kind in ("SMTP", "Submission", "Submissions"):
            factory = smtp_factory(kind, spec.listener, lst)
        elif kind in ("IMAP", "IMAPS"):
            factory = imap_factory(kind, spec.listener, lst)
        else:
            factory = server.Site(_WebRoot(spec.kinds, metrics_resource, mtasts_resource,
                                           None if spec.tls else acme_resource, account_resource, admin_resource))
            # Bodies bounded before they are read; security headers on every answer.
            factory.requestFactory = LimitedRequest
            factory.noisy = False
        if spec.tls:
            if tls_context is None:
                raise ListenerError(f"{spec.name}: needs TLS but no TLS is configured")
            # HTTPS refuses server names it has no certificate for; mail ports do not.
            strict = kind not in _MAIL_KIND_NAMES
            factory = TLSMemoryBIOFactory(tls_context(spec.listener, lst, strict=strict), False, factory)
            factory.noisy = False
        services.append(ListenerService(spec, _endpoint(reactor, spec), factory))
    return services


def _endpoint(reactor, spec):
    addr = ipaddress.ip_address(spec.ip)
    if addr.version == 6:
        return endpoints.TCP6ServerEndpoint(reactor, spec.port, interface=spec.ip)
    return endpoints.TCP4ServerEndpoint(reactor, spec.port, interface=spec.ip)
