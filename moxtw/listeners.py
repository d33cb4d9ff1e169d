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


# The web interfaces a port can mount at their configured Path: the config's kind names
# by interface. Webmail and webapi are not built: their paths answer 503.
WEB_APPS = {"account": ("AccountHTTP", "AccountHTTPS"), "admin": ("AdminHTTP", "AdminHTTPS"),
            "webmail": ("WebmailHTTP", "WebmailHTTPS"), "webapi": ("WebAPIHTTP", "WebAPIHTTPS")}


def mount_path(path):
    """A configured Path as the prefix it is mounted at: "/x/y/" (a missing slash is
    added; mox's rule is that Paths end with one, for the cookie paths)."""
    segments = [s for s in str(path).split("/") if s]
    return "/" + "".join(s + "/" for s in segments)


class _Mount:
    """A web interface at a path prefix of a port."""

    def __init__(self, prefix, resource_, forwarded):
        self.prefix = prefix
        self.segments = [s.encode() for s in prefix.strip("/").split("/") if s]
        self.resource = resource_
        self.forwarded = forwarded

    def matches(self, segments):
        return segments[:len(self.segments)] == self.segments


class _WebRoot(resource.Resource):
    """One HTTP port: /metrics when MetricsHTTP is served here, the MTA-STS policy host
    when MTASTSHTTPS is, ACME http-01 tokens on plain HTTP, and the web interfaces each at
    its configured Path (the longest matching prefix wins; 503 for what is not built)."""

    def __init__(self, kinds, metrics_resource, mtasts_resource=None, acme_resource=None, mounts=()):
        super().__init__()
        self._unavailable = unavailable.WebUnavailable()
        self._acme = acme_resource
        self._metrics = metrics_resource if "MetricsHTTP" in kinds else None
        self._mtasts = mtasts_resource if "MTASTSHTTPS" in kinds else None
        self._mounts = sorted(mounts, key=lambda m: -len(m.segments))
        self._only_metrics = kinds == ["MetricsHTTP"]

    def body_limit(self, path, headers):
        """A larger request body limit the web interface mounted at ``path`` allows (the
        account pages' upload to import), for moxtw.web.base.LimitedRequest; None for
        the default. The interface is the one routing would pick: the longest prefix."""
        segments = [s for s in path.split(b"?", 1)[0].split(b"/") if s]
        for mount in self._mounts:
            if mount.matches(segments) and len(segments) > len(mount.segments):
                hook = getattr(mount.resource, "body_limit", None)
                return hook(path, headers) if hook is not None else None
        return None

    def getChildWithDefault(self, name, request):
        # ACME http-01 answers for any host name (the CA asks for the name validated).
        if self._acme is not None and request.path.startswith(ACME_CHALLENGE_PATH):
            return self._acme
        # Requests for mta-sts.<domain> get the policy host, whatever their path.
        if self._mtasts is not None and self._mtasts.domain_for(request_host(request)) is not None:
            return self._mtasts
        if self._metrics is not None and name == b"metrics":
            return self._metrics
        segments = [name] + list(request.postpath)
        for mount in self._mounts:
            if not mount.matches(segments):
                continue
            if len(segments) == len(mount.segments):
                # "/admin" -> "/admin/": the app's pages are under its prefix.
                return _Redirect(mount.prefix.encode())
            # The app sees the path below its prefix (Klein routes on request.postpath).
            request.postpath.insert(0, request.prepath.pop())
            for _ in mount.segments:
                request.prepath.append(request.postpath.pop(0))
            request.moxtw_forwarded = mount.forwarded
            return mount.resource
        return super().getChildWithDefault(name, request)

    def getChild(self, name, request):
        return self._unavailable

    def render_GET(self, request):
        if self._only_metrics:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"moxtw metrics: see /metrics\n"
        return self._unavailable.render(request)


def _mounts(lst, kinds, web_apps):
    """The web interfaces of ``kinds`` (one port of listener ``lst``) at their Paths.
    ``web_apps``: interface name -> (prefix -> resource); interfaces without one are
    not built and answer 503 at their path."""
    mounts, seen = [], {}
    for app, app_kinds in WEB_APPS.items():
        for kind in app_kinds:
            if kind not in kinds:
                continue
            conf = getattr(lst, kind)
            prefix = mount_path(conf.Path)
            if prefix in seen:
                raise ListenerError(f"{kind} and {seen[prefix]} are both at path {prefix} of one port")
            seen[prefix] = kind
            make = (web_apps or {}).get(app)
            res = make(prefix) if make is not None else unavailable.WebUnavailable()
            mounts.append(_Mount(prefix, res, bool(getattr(conf, "Forwarded", False))))
    return mounts


def build(static, reactor, *, smtp_factory, imap_factory, tls_context=None,
          metrics_resource=None, mtasts_resource=None, acme_resource=None, web_apps=None):
    """Create the ListenerServices for ``static``.

    ``tls_context(listener_name, listener) -> IOpenSSLServerConnectionCreator`` supplies
    the TLS configuration of a listener for implicit-TLS kinds. ``smtp_factory(kind,
    listener_name, listener)`` and ``imap_factory(...)`` build the protocol factories for
    the SMTP and IMAP kinds; web kinds get a site (metrics, or 503 for what is not built).
    ``acme_resource`` answers ACME http-01 challenges on the plain HTTP ports.
    ``web_apps``: {"account" | "admin" | ...: prefix -> resource}, the web interfaces
    mounted at the Path each listener configures (one resource per prefix).
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
                                           None if spec.tls else acme_resource,
                                           _mounts(lst, spec.kinds, web_apps)))
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
