"""Certificates of a listener, chosen by SNI and reloaded when their files change.

A listener's ``TLS.KeyCerts`` may hold several key/certificate pairs (one per host name,
or a wildcard). :class:`CertStore` loads them all, each into its own OpenSSL context with
the one policy of every listener (:func:`moxtw.tls.server_context_factory`), and picks
one per connection from the server name the client sends (RFC 6066 3): an exact
subjectAltName, else a wildcard one label deep (RFC 6125 6.4.3). A client without SNI
(or sending an IP address, which RFC 6066 3 does not allow) gets the first pair. On HTTPS (``strict``) a name no certificate has is refused with a
fatal ``unrecognized_name`` alert (RFC 6066 3): we do not hand out a certificate for
another name. On the mail ports the first pair is served instead: SMTP senders send the
MX name they looked up (an alias, a CNAME) and would otherwise fail STARTTLS and lose or
delay the mail; they check the certificate against the MX name or DANE, not our SNI. The store is passed wherever TLS server options go (startTLS, TLSMemoryBIOFactory):
it has ``getContext()``.

:meth:`CertStore.check` compares the files' (mtime, size, inode) with those loaded and
reloads changed pairs; :class:`CertReloadService` calls it every minute, in a thread. A
pair that fails to load (a half-written file, a key not matching) keeps the old one in
service and logs the error. ``tls_cert_expiry_seconds`` (per listener and name) is the
Unix time at which the certificate in service expires.
"""

import ipaddress
import os
import sys
import threading

from cryptography import x509
from zope.interface import implementer
from twisted.application import internet
from twisted.internet import threads
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger

from moxtw import metrics
from moxtw.tls import server_context_factory

log = Logger(namespace="moxtw.tls")


class UnknownServerName(Exception):
    """Raised in the SNI callback: pyOpenSSL then fails the handshake with
    SSL_TLSEXT_ERR_ALERT_FATAL, and OpenSSL's alert for that is unrecognized_name."""


def _quiet_unknown_names():
    # pyOpenSSL reports an exception of the SNI callback through sys.excepthook before it
    # fails the handshake; an unknown name is expected (scanners), not an error to print.
    previous = sys.excepthook
    if getattr(previous, "_moxtw_sni", False):
        return

    def hook(exc_type, exc, tb):
        if isinstance(exc_type, type) and issubclass(exc_type, UnknownServerName):
            return
        previous(exc_type, exc, tb)

    hook._moxtw_sni = True
    sys.excepthook = hook


def _is_ip(text):
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def cert_names(cert):
    """The DNS names of a certificate's subjectAltName, lower case."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]


class _Pair:
    def __init__(self, cert_path, key_path):
        self.cert_path = cert_path
        self.key_path = key_path
        self.stamps = None
        self.context = None
        self.names = []
        self.not_after = None

    def load(self):
        """Read the files; the new context replaces the old only when all went well."""
        stamps = (_stamp(self.cert_path), _stamp(self.key_path))
        options = server_context_factory(self.cert_path, self.key_path)
        context = options.getContext()
        context.check_privatekey()  # the key must belong to the certificate
        with open(self.cert_path, "rb") as f:
            leaf = x509.load_pem_x509_certificates(f.read())[0]
        self.names = cert_names(leaf)
        self.not_after = leaf.not_valid_after_utc
        self.context = context
        self.stamps = stamps

    def changed(self):
        return (_stamp(self.cert_path), _stamp(self.key_path)) != self.stamps


@implementer(IOpenSSLContextFactory)
class CertStore:
    """The pairs of one listener; ``getContext()`` for TLS server options."""

    def __init__(self, listener, pairs, strict=True):
        """``pairs``: [(cert path, key path)], the first is the default. Loads them now
        (blocking, at start); a pair that cannot be loaded raises. ``strict``: refuse
        unknown server names (HTTPS) rather than serve the first pair (mail)."""
        self.strict = strict
        if not pairs:
            raise ValueError("no key/certificate pairs")
        _quiet_unknown_names()
        self.listener = listener
        self._lock = threading.Lock()
        self._pairs = [_Pair(c, k) for c, k in pairs]
        for p in self._pairs:
            p.load()
            self._observe(p)
        self._default_ctx = None

    def _observe(self, pair):
        for name in pair.names:
            metrics.TLS_CERT_EXPIRY.labels(listener=self.listener, name=name).set(pair.not_after.timestamp())

    def names(self):
        return [n for p in self._pairs for n in p.names]

    def pair_for(self, server_name):
        """The pair serving ``server_name`` (str, or None without SNI), or None."""
        pairs = self._pairs
        if server_name is None or _is_ip(server_name):
            # RFC 6066 3 does not allow IP addresses as server names; some clients send
            # one anyway when dialing an address: treated as no name.
            return pairs[0]
        name = server_name.lower().rstrip(".")
        for p in pairs:
            if name in p.names:
                return p
        if "." in name:
            parent = "*." + name.split(".", 1)[1]
            for p in pairs:
                if parent in p.names:
                    return p
        return None

    def _servername(self, connection):
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        pair = self.pair_for(name)
        if pair is None and not self.strict:
            pair = self._pairs[0]
        if pair is None:
            log.debug("TLS: no certificate for server name {name!r} on {listener}", name=name,
                      listener=self.listener)
            raise UnknownServerName(name)
        if connection.get_context() is not pair.context:
            connection.set_context(pair.context)

    def getContext(self):
        """The default pair's context, with the SNI callback that switches to the pair
        for the name asked. Every pair's context gets the callback too (after a reload
        the default may be a new context)."""
        with self._lock:
            ctx = self._pairs[0].context
            for p in self._pairs:
                if not getattr(p.context, "_moxtw_sni", False):
                    p.context.set_tlsext_servername_callback(self._servername)
                    p.context._moxtw_sni = True
            return ctx

    def check(self):
        """Reload pairs whose files changed; returns the number reloaded. Blocking (small
        file reads): run in a thread."""
        n = 0
        for p in self._pairs:
            if not p.changed():
                continue
            try:
                with self._lock:
                    p.load()
            except Exception as e:
                log.error("TLS: reloading {cert} failed, the certificate in service stays: {error}",
                          cert=p.cert_path, error=str(e) or type(e).__name__)
                # Tried again at the next check only when the files change again.
                p.stamps = (_stamp(p.cert_path), _stamp(p.key_path))
                continue
            n += 1
            self._observe(p)
            log.info("TLS: reloaded {cert} for {names}", cert=p.cert_path, names=", ".join(p.names))
        return n


class CertReloadService(internet.TimerService):
    """Checks the stores' files every ``interval`` seconds, in a thread."""

    def __init__(self, stores, interval=60.0, clock=None):
        self.stores = list(stores)
        super().__init__(interval, self._check)
        if clock is not None:
            self.clock = clock

    def _check(self):
        def run():
            return sum(s.check() for s in self.stores)

        d = threads.deferToThread(run)
        d.addErrback(lambda f: log.failure("TLS certificate reload check failed", f))
        return d
