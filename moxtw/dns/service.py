"""The resolver's part of the service tree: built from the static config's ``DNS``
section, its thread pool stopped with the server."""

from twisted.application import service

from moxtw.dns.resolver import Resolver


def configured_resolver(static, reactor):
    """A Resolver for ``DNS.Servers`` (default: the system's) and ``DNS.TrustAD``."""
    dns_conf = static.DNS
    servers = list(dns_conf.Servers) if dns_conf is not None and dns_conf.Servers else None
    trust_ad = dns_conf.TrustAD if dns_conf is not None else False
    return Resolver(servers=servers, trust_ad=trust_ad, reactor=reactor)


class ResolverService(service.Service):
    """Stops the resolver's thread pool (if it has one) with the server."""

    name = "resolver"

    def __init__(self, resolver):
        self.resolver = resolver

    def stopService(self):
        super().stopService()
        stop = getattr(self.resolver, "stop", None)
        if stop is not None:
            stop()
