"""The TLS client of outgoing delivery under a policy: MTA-STS (PKIX against the MX host
name), DANE (TLSA records, RFC 7672), or opportunistic with the verification only
recorded (MTA-STS "testing", TLS reports).

:class:`PolicyClientTLS` is a connection creator (``IOpenSSLClientConnectionCreator``).
Verification runs when the handshake is done: OpenSSL's own chain checks are collected
(never fatal on their own), then the policy decides. ``outcome`` afterwards holds
``(ok, result_type, detail)`` with an RFC 8460 4.3 result type ("certificate-expired",
"certificate-host-mismatch", "validation-failure", ...) for TLS reports. With
``enforce`` a failed check aborts the connection before anything is sent.
"""

from dataclasses import dataclass

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from moxtw import dane

log = Logger(namespace="moxtw.tls")

# OpenSSL X509_V_ERR_* codes and the RFC 8460 4.3.2.2 result types they map to.
_EXPIRED = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # unable to get issuer, self-signed, untrusted


@dataclass(frozen=True)
class TLSAttempt:
    """What one outgoing connection attempt found out about TLS, for TLS reports
    (``moxtw.reports.tls.results``): recipient ``domain``, its MTA-STS ``policy`` (a
    FetchedPolicy or None), the MX host and IP, ``ok`` or an RFC 8460 4.3 ``result_type``
    with ``detail``, and the DANE state of the host (``dane_host``; ``dane_base`` alone
    when its TLSA lookup failed)."""

    domain: str
    policy: object
    mx_host: str
    ip: str
    ok: bool
    result_type: str = ""
    detail: str = ""
    dane_host: object = None
    dane_base: str = ""


class PolicyVerificationError(Exception):
    """The certificate did not satisfy the policy (the reason in ``outcome``)."""


def pkix_result(errors):
    """The RFC 8460 result type for OpenSSL verification errors ``[(depth, errno)]``."""
    codes = {errno for _, errno in errors}
    if codes & _EXPIRED:
        return "certificate-expired"
    if codes & _UNTRUSTED:
        return "certificate-not-trusted"
    return "validation-failure"


@implementer(IOpenSSLClientConnectionCreator)
class PolicyClientTLS:
    """``sni``: the server name to send. ``pkix_name``: check the chain against the
    trust root (``trust``: an IOpenSSLTrustRoot, None for the system's CAs) and this
    host name. ``dane_host``: a :class:`moxtw.dane.DANEHost` to verify against instead
    (``dane_host.records`` empty: TLS without authentication, RFC 7672 3.1). Neither:
    opportunistic, nothing checked. ``enforce``: fail the handshake when the check
    fails; otherwise only record it."""

    def __init__(self, sni, pkix_name=None, trust=None, dane_host=None, enforce=True):
        self.sni = sni
        self.pkix_name = pkix_name
        self.trust = trust
        self.dane_host = dane_host
        self.enforce = enforce
        self.outcome = None  # (ok, result_type, detail) once the handshake is done
        self._errors = []

    def clientConnectionForTLS(self, tlsProtocol):
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION)
        if self.pkix_name is not None:
            trust = self.trust if self.trust is not None else ssl.platformTrust()
            trust._addCACertsToContext(ctx)
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        ctx.set_info_callback(self._info)
        conn = SSL.Connection(ctx, None)
        conn.set_app_data(tlsProtocol)
        if self.sni:
            try:
                conn.set_tlsext_host_name(self.sni.encode("idna"))
            except (UnicodeError, ValueError):
                pass
        conn.set_connect_state()
        return conn

    def _verify(self, conn, cert, errno, depth, ok):
        if not ok:
            self._errors.append((depth, errno))
        return True  # decided when the handshake is done

    def _info(self, conn, where, ret):
        if not where & SSL.SSL_CB_HANDSHAKE_DONE or self.outcome is not None:
            return
        try:
            self.outcome = self._decide(conn)
        except Exception as e:
            log.failure("verifying server certificate")
            self.outcome = (False, "validation-failure", f"internal error: {e}")
        if not self.outcome[0] and self.enforce:
            conn.get_app_data().failVerification(Failure(PolicyVerificationError(self.outcome[2])))

    def _decide(self, conn):
        if self.dane_host is not None:
            if not self.dane_host.records:
                return True, "", "TLS without authentication (no usable TLSA records)"
            chain = [c.to_cryptography() for c in conn.get_peer_cert_chain() or []]
            ok, detail = dane.verify_chain(chain, self.dane_host)
            return ok, "" if ok else "validation-failure", detail
        if self.pkix_name is None:
            return True, "", "not verified"
        if self._errors:
            depth, errno = self._errors[0]
            text = SSL._ffi.string(SSL._lib.X509_verify_cert_error_string(errno)).decode()
            return False, pkix_result(self._errors), f"certificate verify failed: {text} (depth {depth})"
        try:
            verify_hostname(conn, self.pkix_name)
        except VerificationError:
            return False, "certificate-host-mismatch", f"certificate is not for {self.pkix_name}"
        return True, "", "certificate verified"


__all__ = ["PolicyClientTLS", "PolicyVerificationError", "TLSAttempt", "pkix_result"]
