"""TLS for outgoing connections that verify the server: smarthost transports, later
MTA-STS and DANE. Trust comes from the system's CAs, Static.TLS.CA's files, or both."""

from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from zope.interface import implementer


@implementer(IOpenSSLTrustRoot)
class _FilesTrustRoot:
    """CA certificates from PEM files, optionally added to the system's."""

    def __init__(self, files, with_system):
        self.files = list(files)
        self.with_system = with_system

    def _addCACertsToContext(self, context):
        if self.with_system:
            context.set_default_verify_paths()
        for path in self.files:
            context.load_verify_locations(path)


def trust_root(static, config_path):
    """The trust root from Static.TLS.CA (files resolved with ``config_path``), or None
    for the system's CAs."""
    tls = getattr(static, "TLS", None)
    ca = tls.CA if tls is not None else None
    if ca is None or not ca.CertFiles:
        return None
    return _FilesTrustRoot([config_path(f) for f in ca.CertFiles], ca.AdditionalToSystem)


def verifying_client(hostname, trust=None):
    """A client connection creator that verifies the certificate against ``hostname``
    (RFC 6125) with ``trust`` (None: the system's CAs), TLS 1.2 or newer."""
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trust if trust is not None else ssl.platformTrust(),
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


__all__ = ["trust_root", "verifying_client"]
