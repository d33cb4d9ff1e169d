"""ACME (RFC 8555): automatic certificates for listeners with ``TLS.ACME``.

One :class:`Manager` per provider of the ``ACME`` table keeps the account (key and
registration in ``data/acme/<provider>/``), the certificates (one per host name, key and
chain in ``certs/<name>.pem``, written atomically) and the challenges being answered. The
ACME protocol is certbot's ``acme`` package, which blocks: every call runs in a thread
(``run``, default ``deferToThread``), one order at a time per provider; the public API
returns Deferreds.

Which names get certificates (:func:`listener_names`): the listener's host name, and for
every enabled domain its ``ClientSettingsDomain``, ``mta-sts.<domain>`` when the domain
has MTASTS and the listener serves MTASTSHTTPS over TLS, and ``autoconfig.<domain>``
when it serves AutoconfigHTTPS over TLS. A name not in that list is never ordered, whatever
a client sends as SNI. The host name's certificate uses the listener's host key
(``HostPrivateKeyFiles``, else a key generated in ``data/acme/keys/<host>/``, with the
next one generated beside it) so DANE TLSA records stay valid across renewals.

Challenges (:func:`challenge_types`): tls-alpn-01 (RFC 8737) when the listener has an
implicit TLS port on ``ACME.<provider>.Port``; the ``acme`` package has no class for it
(:class:`TLSALPN01`), the certificate is made here (:func:`alpn_challenge_cert`) and given
by :class:`ACMECertStore` only to a client that offers ALPN ``acme-tls/1``. http-01
(RFC 8555 8.3) when the listener has WebserverHTTP (port 80 for real CAs): the token is
answered on every plain HTTP port (:class:`ChallengeResource`).

:class:`RenewService` checks every ``interval`` seconds (and at start): missing
certificates are ordered, those within ``RenewBefore`` of expiry renewed. Failures (rate
limits, the CA down, a failed validation) are logged, counted in
``acme_certificate_orders_total`` and retried with exponential backoff; a certificate in
service stays in service until a new one is stored. ``tls_cert_expiry_seconds`` shows the
expiry of what is served. badNonce errors are retried (RFC 8555 6.5).
"""

import collections
import datetime
import hashlib
import json
import os
import threading
import time

import certifi
import josepy as jose
from acme import challenges, client as acme_client, crypto_util, errors as acme_errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.application import internet
from twisted.internet import defer, threads
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.python import failure
from twisted.logger import Logger
from twisted.web import resource
from zope.interface import implementer

from moxtw import durable, metrics
from moxtw.dns import normalize
from moxtw.tls import server_options
from moxtw.tls.certstore import UnknownServerName, _is_ip, _quiet_unknown_names, cert_names

log = Logger(namespace="moxtw.tls.acme")

# RFC 8737 6.1: id-pe-acmeIdentifier, holding the SHA-256 of the key authorization.
OID_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
ALPN_ACME = b"acme-tls/1"  # RFC 8737 6.2
HTTP01_PREFIX = b"/.well-known/acme-challenge/"  # RFC 8555 8.3
TLS_ALPN_01 = "tls-alpn-01"
HTTP_01 = "http-01"
LETSENCRYPT = "letsencrypt.org"

BACKOFF_FIRST = 60.0  # seconds until the first retry of a failed order
BACKOFF_MAX = 6 * 3600.0
BAD_NONCE_RETRIES = 8
ORDER_TIMEOUT = 120  # seconds for validation and issuance of one order


class ACMEError(Exception):
    """An order could not be completed (the message says why)."""


class NotAllowed(ACMEError):
    """A certificate was asked for a name that is not configured."""


# --- tls-alpn-01 for acme's challenge registry ------------------------------------------


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 3: the response is an empty object, like http-01's."""

    typ = TLS_ALPN_01


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 3: tls-alpn-01, with a token like http-01."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key, **unused_kwargs):
        return self.key_authorization(account_key)


def alpn_challenge_cert(name, key_authorization):
    """RFC 8737 3: a self-signed certificate for ``name`` alone with the critical
    acmeIdentifier extension, a DER OCTET STRING of SHA-256(key authorization).
    Returns (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moxtw acme-tls/1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(OID_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class Challenges:
    """Challenges being answered, of every provider. Written by the order threads, read
    on the reactor thread (handshakes, HTTP requests)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._http = {}
        self._alpn = {}
        self.served = collections.Counter()  # answers given, by challenge type

    def http01(self, token):
        with self._lock:
            value = self._http.get(token)
        if value is not None:
            self.served[HTTP_01] += 1
        return value

    def tls_alpn01(self, name):
        with self._lock:
            value = self._alpn.get(name)
        if value is not None:
            self.served[TLS_ALPN_01] += 1
        return value

    def add(self, kind, name, token, key_authorization):
        with self._lock:
            if kind == HTTP_01:
                self._http[token] = key_authorization
            else:
                self._alpn[name] = alpn_challenge_cert(name, key_authorization)

    def remove(self, kind, name, token):
        with self._lock:
            if kind == HTTP_01:
                self._http.pop(token, None)
            else:
                self._alpn.pop(name, None)


class ChallengeResource(resource.Resource):
    """``/.well-known/acme-challenge/<token>`` (RFC 8555 8.3) on the plain HTTP ports:
    the key authorization for a token being validated, 404 for anything else."""

    isLeaf = True

    def __init__(self, challenges):
        super().__init__()
        self._challenges = challenges

    def render_GET(self, request):
        token = request.path[len(HTTP01_PREFIX):].decode("ascii", "replace")
        value = self._challenges.http01(token) if request.path.startswith(HTTP01_PREFIX) else None
        if value is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", b"application/octet-stream")
        return value.encode("ascii")


# --- Names, challenge types and host keys of a listener ----------------------------------


def listener_hostname(static, lst):
    return normalize(str(lst.Hostname or static.Hostname))


_names_cache = {}  # id(listener config) -> (static, dynamic, names): one entry per listener


def listener_names(static, dynamic, lst):
    """The names a listener with ACME gets certificates for, host name first. Computed
    once per configuration generation (TLS handshakes ask on every connection)."""
    cached = _names_cache.get(id(lst))
    if cached is not None and cached[0] is static and cached[1] is dynamic:
        return cached[2]
    names = _listener_names(static, dynamic, lst)
    _names_cache[id(lst)] = (static, dynamic, names)
    return names


def _listener_names(static, dynamic, lst):
    found = {listener_hostname(static, lst): None}

    def add(name):
        found.setdefault(normalize(name), None)

    mtasts = lst.MTASTSHTTPS.Enabled and not lst.MTASTSHTTPS.NonTLS
    autoconfig = lst.AutoconfigHTTPS.Enabled and not lst.AutoconfigHTTPS.NonTLS
    for key, dom in dynamic.Domains.items():
        if dom.Disabled:
            continue
        d = normalize(str(key))
        if dom.ClientSettingsDomain is not None:
            add(str(dom.ClientSettingsDomain))
        if mtasts and dom.MTASTS is not None:
            add("mta-sts." + d)
        if autoconfig:
            add("autoconfig." + d)
    return tuple(found)


_IMPLICIT_TLS = ("Submissions", "IMAPS", "AccountHTTPS", "AdminHTTPS", "WebmailHTTPS", "WebAPIHTTPS",
                 "AutoconfigHTTPS", "MTASTSHTTPS", "WebserverHTTPS")


def challenge_types(lst, acme_config):
    """The challenge types a listener can answer, in order of preference: tls-alpn-01 on
    an implicit TLS port that is ACME's Port, http-01 with WebserverHTTP."""
    types = []
    for kind in _IMPLICIT_TLS:
        svc = getattr(lst, kind)
        if svc.Enabled and not getattr(svc, "NonTLS", False) and svc.Port == acme_config.Port:
            types.append(TLS_ALPN_01)
            break
    if lst.WebserverHTTP.Enabled:
        types.append(HTTP_01)
    return types


def host_key_paths(data_dir, config_path, lst, hostname):
    """The host key files of a listener, current first then the next: its
    HostPrivateKeyFiles, else ``data/acme/keys/<host>/current.pem`` and ``next.pem``."""
    if lst.TLS is not None and lst.TLS.HostPrivateKeyFiles:
        return [config_path(p) for p in lst.TLS.HostPrivateKeyFiles]
    d = os.path.join(data_dir, "acme", "keys", hostname)
    return [os.path.join(d, "current.pem"), os.path.join(d, "next.pem")]


def ensure_host_keys(paths):
    """Generate the missing generated host keys (ECDSA P-256). Blocking."""
    for path in paths:
        if not os.path.exists(path):
            durable.make_dirs(os.path.dirname(path))
            durable.write_atomic(path, _key_pem(ec.generate_private_key(ec.SECP256R1())))


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def provider_dir(data_dir, provider):
    return os.path.join(data_dir, "acme", provider)


def account_uri(data_dir, provider):
    """The account URL registered with ``provider`` (for CAA accounturi), or None."""
    return _account_file_uri(os.path.join(provider_dir(data_dir, provider), "account.json"))


def _account_file_uri(path):
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    uri = doc.get("uri") if isinstance(doc, dict) else None
    return uri if isinstance(uri, str) else None


def ca_bundle(files, with_system, directory):
    """The ``verify`` of requests (the ACME client's HTTPS) for CA files: the one file,
    or a bundle of them (with requests' CAs when ``with_system``) written to
    ``directory``. Blocking, at start."""
    if len(files) == 1 and not with_system:
        return files[0]
    parts = []
    if with_system:
        files = [certifi.where()] + list(files)  # what requests trusts by default
    for path in files:
        with open(path, "rb") as f:
            parts.append(f.read().rstrip(b"\n") + b"\n")
    bundle = os.path.join(directory, "ca-bundle.pem")
    durable.make_dirs(directory)
    durable.write_atomic(bundle, b"".join(parts), mode=0o644)
    return bundle


def issuer_domain(acme_config):
    """The CA's CAA issuer domain: IssuerDomainName, or letsencrypt.org for Let's
    Encrypt's directory, else None."""
    if acme_config.IssuerDomainName is not None:
        return normalize(str(acme_config.IssuerDomainName))
    url = str(acme_config.DirectoryURL)
    if ".api.letsencrypt.org/" in url:
        return LETSENCRYPT
    return None


# --- The blocking ACME client ------------------------------------------------------------


class _Network(acme_client.ClientNetwork):
    """ClientNetwork retrying badNonce errors more than once (RFC 8555 6.5: the error
    carries a fresh nonce; Pebble rejects some good nonces on purpose)."""

    bad_nonces = 0  # retried, in all clients (for tests)

    def post(self, *args, **kwargs):
        for attempt in range(BAD_NONCE_RETRIES):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as e:
                if e.code != "badNonce" or attempt == BAD_NONCE_RETRIES - 1:
                    raise
                _Network.bad_nonces += 1
                log.debug("ACME: bad nonce, retrying")


class Client:
    """The account at one ACME provider and its orders. Blocking: used in a thread."""

    def __init__(self, directory_url, directory, contact_email, eab=None, verify=True):
        """``directory``: where the account key and account.json are kept. ``eab``:
        (key id, base64url HMAC key) for external account binding (RFC 8555 7.3.4).
        ``verify``: True for the system's CAs or a CA bundle file (tests)."""
        self.directory_url = directory_url
        self.directory = directory
        self.contact_email = contact_email
        self.eab = eab
        self.verify = verify
        self.uri = None
        self._client = None
        self._jwk = None

    def _account_key(self):
        path = os.path.join(self.directory, "account.key")
        if not os.path.exists(path):
            durable.make_dirs(self.directory)
            durable.write_atomic(path, _key_pem(ec.generate_private_key(ec.SECP256R1())))
        return jose.JWKEC(key=load_key(path))

    def account(self):
        """Register the account (or find it: the key is already known), once. Returns
        the account URL."""
        if self._client is not None:
            return self.uri
        jwk = self._account_key()
        net = _Network(jwk, alg=jose.ES256, verify_ssl=self.verify, user_agent="moxtw")
        directory = messages.Directory.from_json(net.get(self.directory_url).json())
        client = acme_client.ClientV2(directory, net)
        eab = None
        if self.eab is not None:
            kid, hmac_key = self.eab
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=jwk.public_key(), kid=kid, hmac_key=hmac_key, directory=directory)
        reg = messages.NewRegistration.from_data(
            email=self.contact_email, terms_of_service_agreed=True, external_account_binding=eab)
        try:
            regr = client.new_account(reg)
        except acme_errors.ConflictError as e:
            # RFC 8555 7.3.1: the key has an account already; its URL is in Location.
            regr = messages.RegistrationResource(uri=e.location, body=messages.Registration())
            net.account = regr
        path = os.path.join(self.directory, "account.json")
        data = json.dumps({"directory": self.directory_url, "uri": regr.uri}).encode() + b"\n"
        if _account_file_uri(path) != regr.uri:
            durable.write_atomic(path, data)
        self._client, self._jwk, self.uri = client, jwk, regr.uri
        log.info("ACME: account {uri} at {directory}", uri=regr.uri, directory=self.directory_url)
        return regr.uri

    def obtain(self, names, key_pem, pending, types):
        """Order a certificate for ``names`` with the key ``key_pem``, answering the
        challenges of ``types`` (preference order) through ``pending``
        (:class:`Challenges`). Returns the PEM chain, leaf first."""
        self.account()
        c = self._client
        order = c.new_order(crypto_util.make_csr(key_pem, names))
        published = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # RFC 8555 7.1.4: an authorization reused by the CA
                name = authz.body.identifier.value
                offered = {ch.chall.typ: ch for ch in authz.body.challenges}
                kind = next((t for t in types if t in offered), None)
                if kind is None:
                    raise ACMEError(f"{name}: the CA offers {', '.join(sorted(offered))}, we answer "
                                    f"{', '.join(types) or 'none (no TLS port on ACME Port, no WebserverHTTP)'}")
                challb = offered[kind]
                response, validation = challb.chall.response_and_validation(self._jwk)
                token = challb.chall.encode("token")
                pending.add(kind, name, token, validation)
                published.append((kind, name, token))
                c.answer_challenge(challb, response)
                log.debug("ACME: answering {kind} for {name}", kind=kind, name=name)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
            try:
                order = c.poll_and_finalize(order, deadline)
            except acme_errors.ValidationError as e:
                why = []
                for authzr in e.failed_authzrs:
                    for ch in authzr.body.challenges:
                        if ch.error is not None:
                            why.append(f"{authzr.body.identifier.value}: {ch.chall.typ}: {ch.error}")
                raise ACMEError("validation failed: " + ("; ".join(why) or str(e))) from None
        finally:
            for kind, name, token in published:
                pending.remove(kind, name, token)
        return order.fullchain_pem.encode("ascii")


# --- Certificates of a provider ----------------------------------------------------------


class Issued:
    """A certificate in service: key, chain (leaf first), names, expiry (Unix time)."""

    def __init__(self, pem, name=None):
        self.pem = pem
        try:
            self.key = serialization.load_pem_private_key(pem, password=None)
        except TypeError as e:  # encrypted, or a key type we cannot use
            raise ValueError(f"unusable key: {e}") from None
        self.chain = x509.load_pem_x509_certificates(pem)
        if not self.chain:
            raise ValueError("no certificate")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if self.key.public_key().public_bytes(*spki) != self.chain[0].public_key().public_bytes(*spki):
            raise ValueError("key does not match the certificate")
        self.names = cert_names(self.chain[0])
        if name is not None and name not in self.names:
            raise ValueError(f"certificate is not for {name}")
        self.not_after = self.chain[0].not_valid_after_utc.timestamp()
        self.not_before = self.chain[0].not_valid_before_utc.timestamp()
        self.serial = self.chain[0].serial_number
        self.spki = self.chain[0].public_key().public_bytes(*spki)


class Site:
    """A listener using a provider: its names (from the current config), challenge types,
    host name and host key files."""

    def __init__(self, listener, names, types, hostname, host_keys):
        self.listener = listener
        self.names = names  # callable: [names], the same object while the config is
        self.types = types
        self.hostname = hostname
        self.host_keys = host_keys
        self._set = (None, frozenset())

    def has(self, name):
        names = self.names()
        if self._set[0] is not names:
            self._set = (names, frozenset(names))
        return name in self._set[1]


class Manager:
    """Account and certificates of one ACME provider, on the reactor thread."""

    def __init__(self, provider, acme_config, data_dir, config_path, challenges, clock,
                 run=threads.deferToThread, verify=True, now=time.time):
        self.provider = provider
        self.config = acme_config
        self.dir = provider_dir(data_dir, provider)
        self.keys_dir = os.path.join(data_dir, "acme", "keys")
        self.challenges = challenges
        self.clock = clock
        self.now = now
        self._run = run
        self.sites = []
        self._certs = {}
        self._pending = {}
        self._failures = {}  # name -> (failures, time of the next try)
        self._retries = {}
        self._host_spki = {}  # host key path -> ((mtime, size), SubjectPublicKeyInfo)
        self._lock = defer.DeferredLock()
        eab = None
        if acme_config.ExternalAccountBinding is not None:
            with open(config_path(acme_config.ExternalAccountBinding.KeyFile), "r") as f:
                eab = (acme_config.ExternalAccountBinding.KeyID, f.read().strip())
        self.client = Client(str(acme_config.DirectoryURL), self.dir, str(acme_config.ContactEmail),
                             eab=eab, verify=verify)
        self._load()

    def _cert_path(self, name):
        return os.path.join(self.dir, "certs", name + ".pem")

    def _load(self):
        """Certificates stored by an earlier run (blocking, at start)."""
        d = os.path.join(self.dir, "certs")
        for fname in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if not fname.endswith(".pem"):
                continue
            name = fname[:-4]
            try:
                with open(os.path.join(d, fname), "rb") as f:
                    self._certs[name] = Issued(f.read(), name)
            except (OSError, ValueError, TypeError) as e:
                log.error("ACME: cannot load {file}, ordering a new certificate: {error}",
                          file=os.path.join(d, fname), error=e)

    def add_site(self, site):
        """Blocking at start: generates missing host keys."""
        ensure_host_keys([p for p in site.host_keys if p.startswith(self.keys_dir + os.sep)])
        self.sites.append(site)
        for name, issued in self._certs.items():
            if site.has(name):
                self._observe(name, issued)
        if not site.types:
            log.error("ACME: listener {listener} can answer no challenge: enable an HTTPS port on "
                      "ACME.{provider}.Port ({port}) or WebserverHTTP", listener=site.listener,
                      provider=self.provider, port=self.config.Port)

    def _sites_for(self, name):
        return [s for s in self.sites if s.has(name)]

    def allowed(self, name):
        """Whether ``name`` is one of the configured names: only those are ordered."""
        return bool(self._sites_for(name))

    def cert(self, name):
        """The :class:`Issued` certificate for ``name``, or None."""
        return self._certs.get(name)

    def names(self):
        seen = {}
        for s in self.sites:
            for n in s.names():
                seen.setdefault(n, None)
        return list(seen)

    def _observe(self, name, issued):
        for s in self._sites_for(name):
            metrics.TLS_CERT_EXPIRY.labels(listener=s.listener, name=name).set(issued.not_after)

    def due(self, name):
        issued = self._certs.get(name)
        if issued is None:
            return True
        # The host key was rolled over (next.pem became current.pem): a certificate for
        # the new key, so the TLSA records published for it match.
        key = self._host_key_spki(name)
        if key is not None and key != issued.spki:
            return True
        lifetime = issued.not_after - issued.not_before
        # RenewBefore longer than the certificate's lifetime (short-lived certificates)
        # would order on every check: then renew at two thirds of the lifetime.
        before = self.config.RenewBefore.total_seconds()
        if before >= lifetime:
            before = lifetime / 3
        return issued.not_after - before <= self.now()

    def _host_key_spki(self, name):
        path = next((s.host_keys[0] for s in self._sites_for(name) if s.hostname == name and s.host_keys), None)
        if path is None:
            return None
        try:
            st = os.stat(path)
            cached = self._host_spki.get(path)
            if cached is not None and cached[0] == (st.st_mtime_ns, st.st_size):
                return cached[1]
            spki = load_key(path).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except (OSError, ValueError, TypeError):
            return None
        self._host_spki[path] = ((st.st_mtime_ns, st.st_size), spki)
        return spki

    def request(self, name):
        """A Deferred firing with the :class:`Issued` certificate for ``name`` once it is
        ordered and stored; concurrent requests share one order. Fails with NotAllowed
        for names not configured, ACMEError while backing off after a failure."""
        if not self.allowed(name):
            return defer.fail(NotAllowed(f"{name} is not a configured name"))
        waiter = defer.Deferred()
        if name in self._pending:
            self._pending[name].append(waiter)
            return waiter
        failures, next_try = self._failures.get(name, (0, 0))
        if failures and self.now() < next_try:
            return defer.fail(ACMEError(f"{name}: backing off after {failures} failed orders"))
        self._pending[name] = [waiter]

        def done(result):
            for w in self._pending.pop(name, ()):
                if isinstance(result, failure.Failure):
                    w.errback(result)
                else:
                    w.callback(result)

        defer.Deferred.fromCoroutine(self._wrap(name, self._lock.run(self._order, name))).addBoth(done)
        return waiter

    def want(self, name):
        """Order ``name`` in the background when it has no certificate (a handshake asked
        for it); errors are logged."""
        if self._certs.get(name) is None and name not in self._pending and self.allowed(name):
            failures, next_try = self._failures.get(name, (0, 0))
            if not failures or self.now() >= next_try:
                self.request(name).addErrback(lambda f: None)

    async def _wrap(self, name, d):
        """The order's outcome: stored and counted, or logged, counted and retried."""
        try:
            issued = await d
        except Exception as e:
            failures = self._failures.get(name, (0, 0))[0] + 1
            delay = min(BACKOFF_FIRST * 2 ** min(failures - 1, 32), BACKOFF_MAX)
            self._failures[name] = (failures, self.now() + delay)
            metrics.ACME_ORDERS.labels(provider=self.provider, result="error").inc()
            kept = " (the current certificate stays in service)" if name in self._certs else ""
            log.error("ACME: ordering a certificate for {name} from {provider} failed{kept}, "
                      "retry in {delay:.0f}s: {error}", name=name, provider=self.provider, kept=kept,
                      delay=delay, error=str(e) or type(e).__name__)
            old = self._retries.pop(name, None)
            if old is not None and old.active():
                old.cancel()
            self._retries[name] = self.clock.callLater(delay, self._retry, name)
            raise
        self._failures.pop(name, None)
        self._certs[name] = issued
        self._observe(name, issued)
        metrics.ACME_ORDERS.labels(provider=self.provider, result="ok").inc()
        log.info("ACME: certificate for {name} from {provider}, valid until {until}", name=name,
                 provider=self.provider, until=issued.chain[0].not_valid_after_utc.isoformat())
        return issued

    def _retry(self, name):
        self._retries.pop(name, None)
        if self.allowed(name) and self.due(name):
            self.request(name).addErrback(lambda f: None)

    def _order(self, name):
        sites = self._sites_for(name)
        if not sites:
            return defer.fail(NotAllowed(f"{name} is no longer configured"))
        types = []
        for s in sites:
            types.extend(t for t in s.types if t not in types)
        host_key = next((s.host_keys[0] for s in sites if s.hostname == name and s.host_keys), None)
        return self._run(self._order_blocking, name, types, host_key)

    def _order_blocking(self, name, types, host_key):
        if host_key is not None:
            key_pem = _key_pem(load_key(host_key))
        else:
            key_pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
        chain = self.client.obtain([name], key_pem, self.challenges, types)
        pem = key_pem + chain
        issued = Issued(pem)
        durable.make_dirs(os.path.dirname(self._cert_path(name)))
        durable.write_atomic(self._cert_path(name), pem)
        return issued

    def check(self):
        """Order what is missing or due for renewal (not what is backing off). A
        Deferred firing when all orders are done; errors are logged there."""
        ds = []
        for name in self.names():
            if not self.due(name) or name in self._pending:
                continue
            failures, next_try = self._failures.get(name, (0, 0))
            if failures and self.now() < next_try:
                continue
            ds.append(self.request(name).addErrback(lambda f: None))
        return defer.gatherResults(ds)

    def stop(self):
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()


class RenewService(internet.TimerService):
    """Runs :meth:`Manager.check` of each manager at start and every ``interval``."""

    def __init__(self, managers, interval=3600.0, clock=None):
        self.managers = list(managers)
        super().__init__(interval, self._check)
        if clock is not None:
            self.clock = clock

    def _check(self):
        return defer.gatherResults([m.check() for m in self.managers])

    def stopService(self):
        for m in self.managers:
            m.stop()
        return super().stopService()


# --- Serving ----------------------------------------------------------------------------


def _fallback(hostname, key=None):
    """A self-signed certificate for the host name, served until the CA's arrives (the
    tls-alpn-01 handshake itself needs a context). With the host key (``key``), so DANE
    senders find the published TLSA record (3 1 1) matching from the first start.
    Returns ([certificate], key)."""
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return [cert], key


@implementer(IOpenSSLContextFactory)
class ACMECertStore:
    """The certificates of a listener with ACME, chosen by SNI like
    :class:`moxtw.tls.certstore.CertStore`: a configured name gets its certificate (and
    an order in the background when it has none yet), another name is refused on HTTPS
    (``strict``) and gets the host name's certificate on the mail ports. A client
    offering ALPN acme-tls/1 for a name being validated gets the challenge certificate."""

    def __init__(self, listener, manager, hostname, strict=True):
        _quiet_unknown_names()
        self.listener = listener
        self.manager = manager
        self.hostname = hostname
        self.strict = strict
        self._contexts = {}  # name -> (Issued, context)
        host_key = None
        path = next((s.host_keys[0] for s in manager.sites if s.hostname == hostname and s.host_keys), None)
        if path is not None:
            try:
                host_key = load_key(path)
            except (OSError, ValueError, TypeError) as e:
                log.error("ACME: cannot load host key {path}: {error}", path=path, error=e)
        self._fallback = self._setup(server_options(*_fallback(hostname, host_key)).getContext())

    def _setup(self, ctx):
        ctx.set_tlsext_servername_callback(self._servername)
        ctx.set_alpn_select_callback(self._alpn)
        return ctx

    def _context(self, name):
        issued = self.manager.cert(name)
        if issued is None:
            return None
        have = self._contexts.get(name)
        if have is not None and have[0] is issued:
            return have[1]
        ctx = self._setup(server_options(issued.chain, issued.key).getContext())
        self._contexts[name] = (issued, ctx)
        return ctx

    def getContext(self):
        return self._context(self.hostname) or self._fallback

    def _servername(self, connection):
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace").lower().rstrip(".") if raw else None
        if name is None or _is_ip(name):
            ctx = self.getContext()
        elif self.manager.allowed(name):
            ctx = self._context(name)
            if ctx is None:
                # A configured name without certificate: ordered now, served from then.
                self.manager.want(name)
                ctx = self.getContext()
        elif self.strict:
            log.debug("TLS: no certificate for server name {name!r} on {listener}", name=name,
                      listener=self.listener)
            raise UnknownServerName(name)
        else:
            ctx = self.getContext()
        if connection.get_context() is not ctx:
            connection.set_context(ctx)

    def _alpn(self, connection, offered):
        if ALPN_ACME not in offered:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace").lower().rstrip(".") if raw else None
        pair = self.manager.challenges.tls_alpn01(name) if name else None
        if pair is None:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        # RFC 8737 3: the challenge certificate, and acme-tls/1 as the protocol. The
        # certificate can still be changed here: OpenSSL picks it after ALPN.
        connection.use_certificate(pair[0])
        connection.use_privatekey(pair[1])
        return ALPN_ACME

    def names(self):
        return self.manager.names()


__all__ = [
    "ACMECertStore", "ACMEError", "ChallengeResource", "Challenges", "Client", "Manager",
    "NotAllowed", "RenewService", "Site", "TLSALPN01", "account_uri", "alpn_challenge_cert",
    "challenge_types", "host_key_paths", "issuer_domain", "listener_names",
]
