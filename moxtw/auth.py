"""Password logins, shared by SMTP submission, IMAP and the web interfaces.

A user logs in with an email address of their account (any configured destination
address, not a catchall), as with mox. ``Authenticator.authenticate`` maps the address to
the account through the current domains.toml and checks the password against the stored
SCRAM-SHA-256 key, off the reactor thread. Unknown logins cost the same key derivation as
known ones, so response times do not reveal which addresses exist.
"""

import hashlib
import ipaddress

from twisted.internet import defer, threads

from moxtw import apppasswords, ratelimit
from moxtw.config.load import canonical_address
from moxtw.config.types import parse_address
from moxtw.dns.base import client_ip
from moxtw.sasl import credentials
from moxtw.sasl.errors import AuthFailed, LoginDisabled

__all__ = ["AuthFailed", "Authenticator", "LoginDisabled", "LoginLimits"]


_DUMMY = None


def _dummy_credentials():
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = credentials.derive("moxtw dummy password for unknown logins")
    return _DUMMY


class Authenticator:
    def __init__(self, store, current_dynamic):
        """``current_dynamic``: callable returning the Dynamic config in force."""
        self.store = store
        self._dynamic = current_dynamic

    def account_for_login(self, login):
        """The account name for a login address, or None."""
        try:
            localpart, domain = parse_address(login)
        except ValueError:
            return None
        dynamic = self._dynamic()
        want = canonical_address(dynamic, localpart, domain)
        for name, acc in dynamic.Accounts.items():
            for dest in acc.Destinations:
                lp, _, dom = dest.rpartition("@")
                if lp and canonical_address(dynamic, lp, dom) == want:
                    return name
        return None

    @defer.inlineCallbacks
    def credentials_for(self, login):
        """Deferred[(Account, Credentials)] for challenge-response mechanisms (SCRAM,
        CRAM-MD5), which check proofs against stored keys themselves. Fails with
        AuthFailed for unknown logins and accounts without a password. Whether logins
        are disabled is asked separately (``login_disabled``), after a valid proof."""
        name = self.account_for_login(login)
        if name is None:
            raise AuthFailed("invalid login or password")
        account = yield self.store.open_account(name)
        creds = yield account.credentials()
        if creds is None:
            raise AuthFailed("invalid login or password")
        return account, creds

    def login_disabled(self, account_name):
        """The LoginDisabled message of an account, or "" when logins are allowed."""
        acc = self._dynamic().Accounts.get(account_name)
        return acc.LoginDisabled if acc is not None else ""

    @defer.inlineCallbacks
    def authenticate(self, login, password, app_passwords=False):
        """Deferred[Account]; fails with AuthFailed or LoginDisabled. With
        ``app_passwords`` (IMAP and SMTP logins, not the web's), one of the account's
        app passwords (moxtw.apppasswords) is accepted too."""
        name = self.account_for_login(login)
        if name is None:
            creds = yield threads.deferToThread(_dummy_credentials)
            yield threads.deferToThread(credentials.verify_password, creds, password)
            if app_passwords and apppasswords.looks_like(password):
                # A known login tries such a password as an app password too: as costly.
                yield threads.deferToThread(credentials.verify_password, creds, password)
            raise AuthFailed("invalid login or password")
        account = yield self.store.open_account(name)
        ok = yield account.verify_password(password)
        if not ok and app_passwords:
            ok = yield apppasswords.verify(account, password)
        if not ok:
            raise AuthFailed("invalid login or password")
        disabled = self._dynamic().Accounts[name].LoginDisabled
        if disabled:
            raise LoginDisabled(disabled)
        return account


# Failed logins. Only failures from an IP can lead to refusals: per source IP (any
# login), and per source IP and login. Failures for one login counted over all IPs only
# slow down the failure replies, so nobody can lock a user out by guessing their
# password from elsewhere: the right password from an IP that has not failed always works.
IP_FAILURE_LIMITS = [(60, 10), (3600, 50), (86400, 500)]
IP_LOGIN_FAILURE_LIMITS = [(60, 5), (3600, 25), (86400, 100)]
LOGIN_FAILURE_WINDOW = [(3600, 1 << 62)]  # counted only, never refused
FAILURE_SLOWDOWN = 0.5  # seconds added to a failure reply per recent failure from the IP
LOGIN_SLOWDOWN = 0.05  # seconds added per failure for the login in the last hour
MAX_FAILURE_DELAY = 5.0


def _ip_key(ip):
    """The source a failure counts for: an IPv4 address, or an IPv6 address's /64 (one
    host usually has a whole /64, so counting per address would give it 2**64 tries)."""
    try:
        addr = client_ip(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _login_key(login):
    """A login as a limiter key, of bounded size (logins come from clients)."""
    login = (login or "").lower()
    if len(login) > 256:
        return "sha256:" + hashlib.sha256(login.encode("utf-8", "surrogatepass")).hexdigest()
    return login


class LoginLimits:
    """Limits on failed logins. One instance is shared by SMTP AUTH, IMAP
    LOGIN/AUTHENTICATE and the web logins, so failures on one count for all."""

    def __init__(self, authenticator, clock=None):
        self.authenticator = authenticator
        self.ip_failures = ratelimit.Limiter(IP_FAILURE_LIMITS, clock)
        self.ip_login_failures = ratelimit.Limiter(IP_LOGIN_FAILURE_LIMITS, clock)
        self.login_failures = ratelimit.Limiter(LOGIN_FAILURE_WINDOW, clock)

    def allowed(self, ip):
        """None, or the reason logins from ``ip`` are refused for now."""
        if not self.ip_failures.can_add(_ip_key(ip)):
            return "too many failed authentication attempts from your IP address, try again later"
        return None

    def allowed_login(self, ip, login):
        """None, or why a login attempt for ``login`` from ``ip`` is refused now (the
        per-IP limit and the per-IP-and-login limit SASL applies)."""
        why = self.allowed(ip)
        if why is not None:
            return why
        if not self.ip_login_failures.can_add((_ip_key(ip), _login_key(login))):
            return "too many failed attempts for this login from your IP address, try again later"
        return None

    def sasl_backend(self, ip):
        """The authenticator for one SASL exchange from ``ip``, checking the limit for
        this IP and login first and remembering the login tried (``.login``)."""
        return _LimitedAuthenticator(self, ip)

    def record(self, ip, login, ok):
        """Count the outcome; returns the delay in seconds before a failure reply."""
        ip, login = _ip_key(ip), _login_key(login)
        if ok:
            # The user has the password now; failures of others from the IP still count.
            self.ip_login_failures.reset((ip, login))
            return 0
        self.ip_failures.add(ip)
        if login:
            self.ip_login_failures.add((ip, login))
            self.login_failures.add(login)
        delay = self.ip_failures.count(ip) * FAILURE_SLOWDOWN
        if login:
            delay += self.login_failures.count(login) * LOGIN_SLOWDOWN
        return min(delay, MAX_FAILURE_DELAY)

    def prune(self):
        for limiter in (self.ip_failures, self.ip_login_failures, self.login_failures):
            limiter.prune()


class _LimitedAuthenticator:
    def __init__(self, limits, ip):
        self._limits = limits
        self._auth = limits.authenticator
        self._ip = ip
        self.login = ""

    def _check(self, login):
        self.login = login.lower()
        key = (_ip_key(self._ip), _login_key(self.login))
        if not self._limits.ip_login_failures.can_add(key):
            raise AuthFailed("too many failed attempts for this login from your IP address")

    def authenticate(self, login, password):
        try:
            self._check(login)
        except AuthFailed:
            return defer.fail()
        # The mail protocols (IMAP LOGIN, SASL PLAIN/LOGIN) take app passwords too.
        return self._auth.authenticate(login, password, app_passwords=True)

    def credentials_for(self, login):
        try:
            self._check(login)
        except AuthFailed:
            return defer.fail()
        return self._auth.credentials_for(login)

    def login_disabled(self, account_name):
        return self._auth.login_disabled(account_name)
