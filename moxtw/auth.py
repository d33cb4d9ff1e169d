"""Password logins, shared by SMTP submission, IMAP and the web interfaces.

A user logs in with an email address of their account (any configured destination
address, not a catchall), as with mox. ``Authenticator.authenticate`` maps the address to
the account through the current domains.toml and checks the password against the stored
SCRAM-SHA-256 key, off the reactor thread. Unknown logins cost the same key derivation as
known ones, so response times do not reveal which addresses exist.
"""

from twisted.internet import defer, threads

from moxtw.config.load import canonical_address
from moxtw.config.types import parse_address
from moxtw.sasl import credentials


class AuthFailed(Exception):
    """Unknown login or wrong password (never says which)."""


class LoginDisabled(AuthFailed):
    """The account exists and the password is right, but logins are disabled; the
    message is the one from the account's LoginDisabled setting."""


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
    def authenticate(self, login, password):
        """Deferred[Account]; fails with AuthFailed or LoginDisabled."""
        name = self.account_for_login(login)
        if name is None:
            creds = yield threads.deferToThread(_dummy_credentials)
            yield threads.deferToThread(credentials.verify_password, creds, password)
            raise AuthFailed("invalid login or password")
        account = yield self.store.open_account(name)
        ok = yield account.verify_password(password)
        if not ok:
            raise AuthFailed("invalid login or password")
        disabled = self._dynamic().Accounts[name].LoginDisabled
        if disabled:
            raise LoginDisabled(disabled)
        return account
