"""SASL client mechanisms, for the SMTP client authenticating to smarthosts.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195),
SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) and their -PLUS variants with TLS
channel binding (RFC 5802 6).

Use: ``name = choose_client_mechanism(offered, tls, cb is not None)``, then
``mech = new_client_mechanism(name, user, password, cb)``; send ``mech.initial()`` as
initial response when it is not None (else send the command without one; the first
challenge then gets the initial message from :meth:`ClientMechanism.step`); answer each
challenge with ``mech.step(challenge)``; on success call ``mech.finish(data)`` with the
"additional data with success" if the protocol carries any, else None. For SCRAM,
``finish`` raises :class:`SASLError` unless the server proved it knows the password
(RFC 5802 5.1 "v": the client MUST verify the ServerSignature).

The SCRAM step that answers server-first runs PBKDF2 (milliseconds for 4096
iterations, more for higher counts): callers on the reactor thread may want
``deferToThread`` for it.
"""

from __future__ import annotations

import hmac
from typing import Callable

from moxtw.sasl import scram
from moxtw.sasl.channelbinding import ChannelBinding
from moxtw.sasl.credentials import PasswordError, scram_client_keys
from moxtw.sasl.precis import PrecisError, opaque_string
from moxtw.sasl.server import SASLError

__all__ = [
    "ClientMechanism",
    "new_client_mechanism",
    "choose_client_mechanism",
    "CLIENT_PREFERENCE",
    "MIN_ITERATIONS",
    "MAX_ITERATIONS",
]

# RFC 7677 4, RFC 5802 5.1 "i": refuse weak iteration counts.
MIN_ITERATIONS = 4096
# A malicious server could otherwise make us spin on PBKDF2 for hours.
MAX_ITERATIONS = 10_000_000

# Strongest first. LOGIN is last: like PLAIN, it sends the password itself.
CLIENT_PREFERENCE = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)
_CLEARTEXT = ("PLAIN", "LOGIN")


def _malformed(message: str) -> SASLError:
    return SASLError("malformed", message)


class ClientMechanism:
    """Client side of one exchange."""

    name = ""

    def __init__(self) -> None:
        self._initial_sent = False

    def initial(self) -> bytes | None:
        """The initial response, or None when the mechanism has none."""
        self._initial_sent = True
        return self._initial()

    def _initial(self) -> bytes | None:
        return None

    def step(self, challenge: bytes) -> bytes:
        """The response to a server challenge."""
        if not self._initial_sent:
            # RFC 4422 5 (a): no initial response was sent; the server sends an empty
            # challenge and the initial message goes in response to it.
            self._initial_sent = True
            first = self._initial()
            if first is not None:
                if challenge:
                    raise _malformed("unexpected non-empty first challenge")
                return first
        return self._step(challenge)

    def _step(self, challenge: bytes) -> bytes:
        raise _malformed(f"unexpected challenge for {self.name}")

    def finish(self, final: bytes | None) -> None:
        """The server reported success, with additional data or None."""
        if final:
            raise _malformed(f"unexpected additional data for {self.name}")


class PlainClient(ClientMechanism):
    """RFC 4616 2: NUL authcid NUL passwd, no authzid."""

    name = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        if "\x00" in username or "\x00" in password:
            raise ValueError("user name and password must not contain NUL")
        self._msg = b"\x00" + username.encode("utf-8") + b"\x00" + password.encode("utf-8")

    def _initial(self) -> bytes | None:
        return self._msg


class LoginClient(ClientMechanism):
    """draft-murchison-sasl-login: user name, then password, each on a challenge."""

    name = "LOGIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self._answers = [username.encode("utf-8"), password.encode("utf-8")]

    def _step(self, challenge: bytes) -> bytes:
        # Servers word the challenges differently ("Username:", "User Name\0"); we go
        # by their order only.
        if not self._answers:
            raise _malformed("unexpected challenge for LOGIN")
        return self._answers.pop(0)


class CramMD5Client(ClientMechanism):
    """RFC 2195 2: user name, space, lowercase hex HMAC-MD5(password, challenge)."""

    name = "CRAM-MD5"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self._username = username
        self._password = password
        self._answered = False

    def _step(self, challenge: bytes) -> bytes:
        if self._answered:
            raise _malformed("unexpected challenge for CRAM-MD5")
        if not challenge:
            raise _malformed("empty CRAM-MD5 challenge")
        self._answered = True
        # Prepared as for our stored keys (RFC 8265 4.2); ASCII passwords are unchanged.
        try:
            password = opaque_string(self._password)
        except PrecisError:
            password = self._password
        digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
        return f"{self._username} {digest}".encode("utf-8")


class ScramClient(ClientMechanism):
    """RFC 5802 5: client-first, client-final, then verify server-final."""

    def __init__(
        self,
        name: str,
        username: str,
        password: str,
        channel_binding: ChannelBinding | None,
        nonce: Callable[[], str],
    ) -> None:
        super().__init__()
        self.name = name
        self._hash, self._plus = scram.mechanism_hash(name)
        if self._plus and channel_binding is None:
            raise ValueError(f"{name} needs a channel binding")
        self._cb = channel_binding
        self._password = password
        # RFC 5802 6: "p" for -PLUS; "y" when we support channel binding but use a
        # non-PLUS mechanism (the server did not offer -PLUS); "n" when we cannot bind.
        if self._plus:
            assert channel_binding is not None
            flag = "p=" + channel_binding.type
        elif channel_binding is not None:
            flag = "y"
        else:
            flag = "n"
        self._gs2 = flag + ",,"  # no authzid: we act as ourselves
        cnonce = nonce()
        if not cnonce or "," in cnonce:
            raise ValueError("client nonce must be printable and without comma")
        self._cnonce = cnonce
        self._bare = f"n={scram.escape_saslname(username)},r={cnonce}"
        self._state = "start"
        self._expected_signature = b""
        self._verified = False

    def _initial(self) -> bytes | None:
        return (self._gs2 + self._bare).encode("utf-8")

    def _step(self, challenge: bytes) -> bytes:
        if self._state == "start":
            return self._server_first(challenge)
        if self._state == "first":
            self._verify_final(challenge)
            return b""
        raise _malformed("unexpected challenge after server-final-message")

    def _decode(self, data: bytes, what: str) -> str:
        if len(data) > 8192:
            raise _malformed(f"{what} too long")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed(f"{what} is not valid UTF-8") from None

    def _server_first(self, challenge: bytes) -> bytes:
        text = self._decode(challenge, "server-first-message")
        try:
            first = scram.parse_server_first(text)
        except scram.ScramSyntaxError as e:
            raise _malformed(str(e)) from None
        # RFC 5802 5.1 "r": the server's nonce starts with ours and adds its own part.
        if not first.nonce.startswith(self._cnonce) or len(first.nonce) == len(self._cnonce):
            raise _malformed("server nonce does not extend client nonce")
        if first.iterations < MIN_ITERATIONS:
            raise SASLError("auth-failed", f"iteration count {first.iterations} too low")
        if first.iterations > MAX_ITERATIONS:
            raise SASLError("auth-failed", f"iteration count {first.iterations} too high")
        try:
            keys = scram_client_keys(self._password, first.salt, first.iterations, self._hash)
        except PasswordError as e:
            raise SASLError("auth-failed", str(e)) from None
        cb_data = self._cb.data if self._plus and self._cb is not None else None
        cbind = scram.channel_binding_input(self._gs2, cb_data)
        without, _ = scram.format_client_final(cbind, first.nonce, b"")
        am = scram.auth_message(self._bare, text, without)
        proof = scram.client_proof(keys.client_key, keys.stored_key, am, self._hash)
        _, final = scram.format_client_final(cbind, first.nonce, proof)
        self._expected_signature = scram.server_signature(keys.server_key, am, self._hash)
        self._state = "first"
        return final.encode("utf-8")

    def _verify_final(self, data: bytes) -> None:
        text = self._decode(data, "server-final-message")
        try:
            final = scram.parse_server_final(text)
        except scram.ScramSyntaxError as e:
            raise _malformed(str(e)) from None
        self._state = "final"
        if final.error is not None:
            raise SASLError("auth-failed", f"server error: {final.error}")
        assert final.verifier is not None
        if not hmac.compare_digest(final.verifier, self._expected_signature):
            raise SASLError("auth-failed", "invalid server signature")
        self._verified = True

    def finish(self, final: bytes | None) -> None:
        if final and not self._verified:
            if self._state != "first":
                raise _malformed("unexpected additional data")
            self._verify_final(final)
        elif final:
            raise _malformed("unexpected additional data after server-final-message")
        if not self._verified:
            # RFC 5802 5.1 "v": success without a valid ServerSignature is a failure.
            raise SASLError("auth-failed", "server did not prove knowledge of the password")


def new_client_mechanism(
    name: str,
    username: str,
    password: str,
    channel_binding: ChannelBinding | None = None,
    nonce: Callable[[], str] | None = None,
) -> ClientMechanism:
    """A client mechanism for one exchange. ``channel_binding`` is required for -PLUS;
    given for a non-PLUS SCRAM mechanism it means "we support channel binding but the
    server offered no -PLUS", and the GS2 flag becomes "y" (RFC 5802 6), so pass it only
    then. ``nonce`` (SCRAM) returns the client nonce; tests inject fixed values.
    Raises SASLError("mechanism-unknown") for unsupported names."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainClient(username, password)
    if upper == "LOGIN":
        return LoginClient(username, password)
    if upper == "CRAM-MD5":
        return CramMD5Client(username, password)
    try:
        _, plus = scram.mechanism_hash(upper)
    except KeyError:
        raise SASLError("mechanism-unknown") from None
    if plus and channel_binding is None:
        raise SASLError("mechanism-unknown", f"{upper} needs a TLS channel binding")
    return ScramClient(upper, username, password, channel_binding, nonce or scram.new_nonce)


def choose_client_mechanism(
    offered: list[str],
    tls: bool,
    channel_binding_available: bool,
    configured: str | list[str] | tuple[str, ...] | None = None,
) -> str | None:
    """The mechanism to use from the server's offer, or None. ``configured`` forces one
    if offered (and usable: PLAIN/LOGIN only with TLS, -PLUS only with a channel
    binding); a list of names allows those, the strongest usable one is chosen.
    Otherwise the strongest usable of :data:`CLIENT_PREFERENCE`."""
    have = {m.upper() for m in offered}

    def usable(m: str) -> bool:
        if m not in have:
            return False
        if m in _CLEARTEXT and not tls:
            return False
        if m.endswith("-PLUS") and not channel_binding_available:
            return False
        return m in CLIENT_PREFERENCE

    allowed = None
    if isinstance(configured, str) and configured:
        m = configured.upper()
        return m if usable(m) else None
    if configured:
        allowed = {m.upper() for m in configured}
    for m in CLIENT_PREFERENCE:
        if usable(m) and (allowed is None or m in allowed):
            return m
    return None
