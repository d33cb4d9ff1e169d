"""The failures a password backend reports (``moxtw.auth.Authenticator``), here so that
both the backend and the SASL mechanisms that call it can import them without importing
each other."""


class AuthFailed(Exception):
    """Unknown login or wrong password (never says which)."""


class LoginDisabled(AuthFailed):
    """The account exists and the password is right, but logins are disabled; the
    message is the one from the account's LoginDisabled setting."""
