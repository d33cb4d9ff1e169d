"""SASL server mechanisms for SMTP submission (AUTH), IMAP (AUTHENTICATE) and others.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195),
SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) and their -PLUS variants with TLS
channel binding (RFC 5802 6; RFC 9266 tls-exporter, RFC 5929 tls-unique).

A protocol handler picks the offered names with :func:`server_mechanisms`, creates one
:class:`ServerMechanism` per exchange with :func:`new_server_mechanism` and feeds it the
client's decoded responses: the first call gets the initial response, or None when the
client sent none. Each call returns a Deferred :class:`Step`: a challenge to send (the
handler base64-encodes it), or ``done`` with the account. As SMTP and IMAP have no
"additional data with success", SCRAM's server-final-message is sent as a
challenge and the client answers with an empty response (RFC 4422 3.6), so handlers
simply loop until ``done``. Failures are :class:`SASLError` with a reason and a message
safe to show to the client; whether a user exists is never revealed, also not by SCRAM
(unknown users get a plausible salt and fail only at the final step).

Passwords are checked through a backend (:class:`moxtw.auth.Authenticator`):
``authenticate(login, password)`` for PLAIN and LOGIN, ``credentials_for(login)`` for
CRAM-MD5 and SCRAM (which check proofs against stored keys), ``login_disabled(name)``
after a valid proof. Parsing base64 and detecting the client's "*" abort are the
handler's job.
"""

from __future__ import annotations

import abc
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from moxtw.sasl import credentials, scram
from moxtw.sasl.channelbinding import ChannelBinding
from moxtw.sasl.credentials import DEFAULT_ITERATIONS
from moxtw.sasl.errors import AuthFailed, LoginDisabled

__all__ = [
    "SASLError",
    "ChannelBinding",
    "Step",
    "ServerMechanism",
    "server_mechanisms",
    "new_server_mechanism",
    "MAX_RESPONSE",
    "REASONS",
]

log = Logger(namespace="moxtw.sasl")

# Responses are short; anything longer than this is refused before it is parsed.
MAX_RESPONSE = 8192
# RFC 4616 2: implementations MUST accept up to 255 octets in authcid and passwd; we
# accept the same for LOGIN and CRAM-MD5 user names.
MAX_FIELD = 255

_DEFAULT_MESSAGES = {
    "aborted": "authentication aborted",
    "malformed": "malformed authentication message",
    "auth-failed": "authentication failed",
    "mechanism-unknown": "unknown authentication mechanism",
    "encryption-required": "authentication mechanism requires TLS",
    "login-disabled": "login disabled for this account",
    "temporary": "temporary authentication failure, try again later",
}
REASONS = tuple(_DEFAULT_MESSAGES)


class SASLError(Exception):
    """Authentication did not succeed. ``reason`` is one of :data:`REASONS`; ``str()``
    is a message safe to show to the client."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in _DEFAULT_MESSAGES:
            raise ValueError(f"unknown SASL error reason {reason!r}")
        self.reason = reason
        self.message = message or _DEFAULT_MESSAGES[reason]
        super().__init__(reason, self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"SASLError({self.reason!r}, {self.message!r})"


def _malformed(message: str) -> SASLError:
    return SASLError("malformed", message)


def _auth_failed() -> SASLError:
    # Always the same words: the client learns nothing about which part was wrong.
    return SASLError("auth-failed", "invalid user name or password")


@dataclass
class Step:
    """One step of an exchange: a challenge for the client, or done with the account."""

    challenge: bytes | None
    done: bool
    account: Any = None


_SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-1")


def server_mechanisms(tls: bool, channel_binding: ChannelBinding | None) -> list[str]:
    """Mechanism names to offer, strongest first. PLAIN and LOGIN send the password
    itself and are only offered with ``tls``; -PLUS only with a channel binding."""
    names: list[str] = []
    if channel_binding is not None:
        names += [n + "-PLUS" for n in _SCRAM]
    names += list(_SCRAM)
    names.append("CRAM-MD5")
    if tls:
        names += ["PLAIN", "LOGIN"]
    return names


def _text(data: bytes, what: str) -> str:
    if len(data) > MAX_RESPONSE:
        raise _malformed(f"{what} too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(f"{what} is not valid UTF-8") from None


def _backend_error(f: Exception) -> SASLError:
    """Translate a backend failure (call it in the except block: unexpected ones are
    logged with their traceback and become "temporary")."""
    if isinstance(f, LoginDisabled):
        return SASLError("login-disabled", str(f) or None)
    if isinstance(f, AuthFailed):
        return _auth_failed()
    if isinstance(f, SASLError):
        return f
    log.failure("authentication backend failed", Failure())
    return SASLError("temporary")


class ServerMechanism(abc.ABC):
    """One authentication exchange. Subclasses implement :meth:`_step`."""

    name = ""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._done = False
        self._failed = False
        self._busy = False

    def step(self, response: bytes | None) -> defer.Deferred:
        """Deferred[Step] for the client's next response (None: no initial response)."""
        return defer.Deferred.fromCoroutine(self._guarded(response))

    async def _guarded(self, response: bytes | None) -> Step:
        if self._done or self._failed:
            raise SASLError("malformed", "authentication exchange already finished")
        if self._busy:
            raise SASLError("malformed", "authentication step already in progress")
        if response is not None and len(response) > MAX_RESPONSE:
            self._failed = True
            raise _malformed("response too long")
        self._busy = True
        try:
            result = await self._step(response)
        except SASLError:
            self._failed = True
            raise
        except Exception as e:  # noqa: BLE001 - anything else is ours or the backend's
            self._failed = True
            raise _backend_error(e) from None
        finally:
            self._busy = False
        if result.done:
            self._done = True
        return result

    @abc.abstractmethod
    async def _step(self, response: bytes | None) -> Step:
        ...

    async def _authenticate(self, login: str, password: str) -> Any:
        try:
            return await self.backend.authenticate(login, password)
        except Exception as e:  # noqa: BLE001
            raise _backend_error(e) from None

    def _check_disabled(self, account: Any) -> None:
        msg = self.backend.login_disabled(account.name)
        if msg:
            raise SASLError("login-disabled", msg)


class PlainMechanism(ServerMechanism):
    """RFC 4616: message = [authzid] NUL authcid NUL passwd, in one response."""

    name = "PLAIN"

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._asked = False

    async def _step(self, response: bytes | None) -> Step:
        if response is None:
            if self._asked:
                raise _malformed("missing response")
            # RFC 4422 5 (a): no initial response, send an empty challenge.
            self._asked = True
            return Step(b"", False)
        text = _text(response, "response")
        # RFC 4616 2: exactly two NULs; no field may contain NUL.
        parts = text.split("\x00")
        if len(parts) != 3:
            raise _malformed("expected authzid NUL authcid NUL password")
        authzid, authcid, password = parts
        if not authcid or not password:
            raise _malformed("empty user name or password")
        if len(authcid.encode()) > MAX_FIELD or len(password.encode()) > MAX_FIELD:
            raise _malformed("user name or password too long")
        # RFC 4616 2: authorizing as another identity is not supported: refuse unless
        # the authzid is absent or the authcid itself.
        if authzid and authzid != authcid:
            raise SASLError("auth-failed", "authorization identity must be empty or the user name")
        account = await self._authenticate(authcid, password)
        return Step(None, True, account)


class LoginMechanism(ServerMechanism):
    """draft-murchison-sasl-login: "Username:" and "Password:" challenges. A user name
    sent as initial response is accepted, as many clients do that."""

    name = "LOGIN"

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._username: str | None = None
        self._asked = False

    async def _step(self, response: bytes | None) -> Step:
        if self._username is None:
            if response is None:
                if self._asked:
                    raise _malformed("missing response")
                self._asked = True
                return Step(b"Username:", False)
            username = _text(response, "user name")
            if not username or "\x00" in username or len(response) > MAX_FIELD:
                raise _malformed("invalid user name")
            self._username = username
            return Step(b"Password:", False)
        if response is None:
            raise _malformed("missing response")
        password = _text(response, "password")
        if "\x00" in password or len(response) > MAX_FIELD:
            raise _malformed("invalid password")
        if not password:
            raise _auth_failed()
        account = await self._authenticate(self._username, password)
        return Step(None, True, account)


class _CredentialsMixin:
    backend: Any

    async def _credentials(self, login: str) -> tuple[Any, credentials.Credentials] | None:
        """(account, credentials), or None for an unknown login or one without password."""
        try:
            account, creds = await self.backend.credentials_for(login)
        except AuthFailed:  # includes LoginDisabled: report that only after a valid proof
            return None
        return account, creds


class CramMD5Mechanism(_CredentialsMixin, ServerMechanism):
    """RFC 2195: the server sends a msg-id-like challenge, the client answers with its
    user name, a space and the lowercase hex HMAC-MD5 of the challenge."""

    name = "CRAM-MD5"

    def __init__(self, backend: Any, nonce: Callable[[], str], hostname: str) -> None:
        super().__init__(backend)
        self._nonce = nonce
        self._hostname = hostname
        self._challenge: bytes | None = None

    async def _step(self, response: bytes | None) -> Step:
        if self._challenge is None:
            # RFC 2195 2: the server speaks first; a client's initial response is invalid.
            if response:
                raise _malformed("CRAM-MD5 has no initial response")
            self._challenge = f"<{self._nonce()}@{self._hostname}>".encode("utf-8")
            return Step(self._challenge, False)
        if response is None:
            raise _malformed("missing response")
        text = _text(response, "response")
        username, sep, digest = text.rpartition(" ")
        # RFC 2195 2: the digest is 16 octets as lowercase hexadecimal.
        if not sep or not username or "\x00" in username or len(username.encode()) > MAX_FIELD:
            raise _malformed("expected user name, space and digest")
        if len(digest) != 32 or digest.strip("0123456789abcdef"):
            raise _malformed("digest must be 32 lowercase hexadecimal digits")
        found = await self._credentials(username)
        if found is None:
            raise _auth_failed()
        account, creds = found
        expect = credentials.cram_md5_digest(creds.cram_md5, self._challenge)
        if not hmac.compare_digest(expect.encode(), digest.encode()):
            raise _auth_failed()
        self._check_disabled(account)
        return Step(None, True, account)


# Per-process secret for the fake salts of unknown users: stable within a process, so
# repeated attempts for one name see the same salt, as they would for a real user.
_FAKE_SALT_SECRET = os.urandom(32)


def _fake_keys(username: str, hashname: str) -> credentials.ScramKeys:
    """Keys for an unknown user: a salt that looks like a real one and keys no proof
    matches, so the exchange runs the same code to the end."""

    def derive(what: str) -> bytes:
        msg = f"{what}\x00{hashname}\x00{username}".encode("utf-8")
        return hmac.new(_FAKE_SALT_SECRET, msg, hashname).digest()

    salt = derive("salt")[: credentials.SALT_SIZE]
    return credentials.ScramKeys(salt, DEFAULT_ITERATIONS, derive("stored"), derive("server"))


class ScramMechanism(_CredentialsMixin, ServerMechanism):
    """RFC 5802 5: client-first, server-first, client-final, server-final, then an
    empty response."""

    def __init__(
        self,
        name: str,
        backend: Any,
        channel_binding: ChannelBinding | None,
        nonce: Callable[[], str],
    ) -> None:
        super().__init__(backend)
        self.name = name
        self._hash, self._plus = scram.mechanism_hash(name)
        self._cb = channel_binding
        self._nonce = nonce
        self._state = "start"
        self._asked = False
        self._account: Any = None
        self._keys: credentials.ScramKeys | None = None
        self._first: scram.ClientFirst | None = None
        self._server_first = ""
        self._full_nonce = ""

    async def _step(self, response: bytes | None) -> Step:
        if self._state == "start":
            if response is None:
                if self._asked:
                    raise _malformed("missing response")
                self._asked = True
                return Step(b"", False)
            return await self._client_first(response)
        if response is None:
            raise _malformed("missing response")
        if self._state == "first":
            return self._client_final(response)
        # RFC 4422 3.6: after the server-final-message the client has nothing to add.
        if response != b"":
            raise _malformed("expected empty response after server-final-message")
        return Step(None, True, self._account)

    def _check_gs2(self, gs2: scram.GS2Header) -> None:
        """RFC 5802 6: channel binding flag against the mechanism and what we offered."""
        if self._plus:
            if gs2.flag != "p":
                raise _malformed("-PLUS mechanism requires channel binding flag p")
            assert self._cb is not None
            if gs2.cb_name != self._cb.type:
                raise SASLError("auth-failed", "unsupported channel binding type")
        elif gs2.flag == "p":
            raise _malformed("channel binding flag p requires a -PLUS mechanism")
        elif gs2.flag == "y" and self._cb is not None:
            # RFC 5802 6: "y" means the client thinks we do not support channel binding,
            # but we offered -PLUS: a downgrade, which we MUST fail.
            raise SASLError("auth-failed", "channel binding downgrade refused")

    async def _client_first(self, response: bytes) -> Step:
        try:
            first = scram.parse_client_first(_text(response, "client-first-message"))
        except scram.ScramSyntaxError as e:
            raise _malformed(str(e)) from None
        self._check_gs2(first.gs2)
        # RFC 5801 4 / RFC 5802 5.1 "a": we only allow acting as oneself.
        if first.gs2.authzid and first.gs2.authzid != first.username:
            raise SASLError("auth-failed", "authorization identity must be empty or the user name")
        self._first = first
        found = await self._credentials(first.username)
        if found is not None:
            self._account, creds = found
            self._keys = creds.scram_sha1 if self._hash == "sha1" else creds.scram_sha256
        else:
            # Unknown user: a plausible salt, fail at the proof (RFC 5802 5.1 leaves the
            # server free to delay failing; this hides which users exist).
            self._keys = _fake_keys(first.username, self._hash)
        salt, iterations = self._keys.salt, self._keys.iterations
        snonce = self._nonce()
        if not snonce or "," in snonce:
            raise ValueError("server nonce must be printable and without comma")
        # RFC 5802 5.1 "r": the server appends its own nonce to the client's.
        self._full_nonce = first.nonce + snonce
        self._server_first = scram.format_server_first(self._full_nonce, salt, iterations)
        self._state = "first"
        return Step(self._server_first.encode("utf-8"), False)

    def _client_final(self, response: bytes) -> Step:
        assert self._first is not None
        try:
            final = scram.parse_client_final(_text(response, "client-final-message"))
        except scram.ScramSyntaxError as e:
            raise _malformed(str(e)) from None
        # RFC 5802 5.1 "r": the nonce must be exactly the one of server-first.
        if not hmac.compare_digest(final.nonce.encode(), self._full_nonce.encode()):
            raise _malformed("nonce does not match")
        # RFC 5802 5.1 "c": the GS2 header (and channel binding data for "p") as sent.
        cb_data = self._cb.data if self._plus and self._cb is not None else None
        expect = scram.channel_binding_input(self._first.gs2.raw, cb_data)
        if not hmac.compare_digest(final.channel_binding, expect):
            raise SASLError("auth-failed", "channel binding mismatch")
        assert self._keys is not None
        am = scram.auth_message(self._first.bare, self._server_first, final.without_proof)
        valid = scram.verify_client_proof(self._keys.stored_key, final.proof, am, self._hash)
        if not valid or self._account is None:
            raise _auth_failed()
        self._check_disabled(self._account)
        sig = scram.server_signature(self._keys.server_key, am, self._hash)
        self._state = "final"
        return Step(f"v={scram.b64(sig)}".encode("ascii"), False)


def _default_nonce() -> str:
    return scram.new_nonce()


def _default_cram_nonce() -> str:
    # RFC 2195 2: "<random.timestamp@hostname>"-like; uniqueness matters, not format.
    return f"{int.from_bytes(os.urandom(8), 'big')}.{int(time.time())}"


def new_server_mechanism(
    name: str,
    backend: Any,
    channel_binding: ChannelBinding | None = None,
    nonce: Callable[[], str] | None = None,
    hostname: str = "localhost",
    tls: bool = True,
) -> ServerMechanism:
    """A server mechanism for one exchange. ``channel_binding``: the connection's, when
    -PLUS was offered (also used to detect downgrades). ``nonce``: returns the server
    nonce (SCRAM) or the unique part of the CRAM-MD5 challenge; tests inject fixed
    values. ``tls=False`` refuses PLAIN and LOGIN with "encryption-required".
    Raises SASLError("mechanism-unknown") for names not supported or not offered."""
    upper = name.upper()
    if upper in ("PLAIN", "LOGIN"):
        if not tls:
            raise SASLError("encryption-required")
        return PlainMechanism(backend) if upper == "PLAIN" else LoginMechanism(backend)
    if upper == "CRAM-MD5":
        return CramMD5Mechanism(backend, nonce or _default_cram_nonce, hostname)
    try:
        _, plus = scram.mechanism_hash(upper)
    except KeyError:
        raise SASLError("mechanism-unknown") from None
    if plus and channel_binding is None:
        raise SASLError("mechanism-unknown")
    return ScramMechanism(upper, backend, channel_binding, nonce or _default_nonce)

