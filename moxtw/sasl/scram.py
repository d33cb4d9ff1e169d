"""SCRAM message syntax and computations, shared by the SASL server and client.

Implements the message grammar of RFC 5802 section 7 (with the GS2 header of RFC 5801
section 4 as RFC 5802 uses it), saslname escaping (RFC 5802 5.1), the proof and signature
computations of RFC 5802 section 3 for SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 7677), and the
channel binding input ("c=") of RFC 5802 section 6.

Parsers take text (the caller decodes UTF-8 and enforces a size limit first) and raise
:class:`ScramSyntaxError` on anything that does not match the grammar; the message of that
error is safe to show to the peer. Nothing here blocks: the PBKDF2 work lives in
:func:`moxtw.sasl.credentials.scram_client_keys`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "MECHANISMS",
    "ScramSyntaxError",
    "GS2Header",
    "ClientFirst",
    "ServerFirst",
    "ClientFinal",
    "ServerFinal",
    "mechanism_hash",
    "escape_saslname",
    "unescape_saslname",
    "new_nonce",
    "parse_client_first",
    "parse_server_first",
    "parse_client_final",
    "parse_server_final",
    "format_server_first",
    "format_client_final",
    "channel_binding_input",
    "auth_message",
    "client_proof",
    "verify_client_proof",
    "server_signature",
    "b64",
]

# RFC 5802 4, RFC 7677 2: mechanism name -> hashlib name.
MECHANISMS = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}

# RFC 5802 7: cb-name = 1*(ALPHA / DIGIT / "." / "-")
_CB_NAME = re.compile(r"[A-Za-z0-9.\-]+\Z")
# RFC 5802 7: printable = %x21-2B / %x2D-7E ;; printable ASCII except ","
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+\Z")
# RFC 5802 7: attr-val = ALPHA "=" value; value = 1*value-char (any UTF-8 but NUL and ",")
_ATTR = re.compile(r"([A-Za-z])=([^,\x00]+)\Z")
# RFC 5802 7: posit-number = %x31-39 *DIGIT
_POSIT_NUMBER = re.compile(r"[1-9][0-9]*\Z")


class ScramSyntaxError(ValueError):
    """A SCRAM message does not follow the RFC 5802 7 grammar; the message is safe to
    show to the peer."""


def mechanism_hash(name: str) -> tuple[str, bool]:
    """("sha1"|"sha256", plus) for a SCRAM mechanism name; KeyError if not SCRAM."""
    name = name.upper()
    plus = name.endswith("-PLUS")
    return MECHANISMS[name[:-5] if plus else name], plus


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(s: str, what: str) -> bytes:
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ScramSyntaxError(f"invalid base64 in {what}") from None


def escape_saslname(name: str) -> str:
    """RFC 5802 5.1: "," as "=2C" and "=" as "=3D"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(value: str) -> str:
    """RFC 5802 7: saslname = 1*(value-safe-char / "=2C" / "=3D"); any other "=" is
    an error (RFC 5802 5.1: the server MUST fail the authentication)."""
    if not value:
        raise ScramSyntaxError("empty saslname")
    if "\x00" in value or "," in value:
        raise ScramSyntaxError("invalid character in saslname")
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            esc = value[i + 1 : i + 3]
            if esc == "2C":
                out.append(",")
            elif esc == "3D":
                out.append("=")
            else:
                raise ScramSyntaxError("invalid escape in saslname")
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def new_nonce(randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh nonce: 18 random bytes as base64 (24 printable characters, no ",")."""
    return b64(randbytes(18))


def _check_nonce(nonce: str) -> str:
    if not _PRINTABLE.match(nonce):
        raise ScramSyntaxError("invalid nonce")
    return nonce


def _expect(part: str, key: str, what: str) -> str:
    """The value of attribute ``key`` in ``part``, which must be present and non-empty."""
    if not part.startswith(key + "="):
        raise ScramSyntaxError(f"missing {key}= in {what}")
    value = part[len(key) + 1 :]
    if not value:
        raise ScramSyntaxError(f"empty {key}= in {what}")
    return value


def _extensions(parts: list[str], what: str) -> None:
    """RFC 5802 7: extensions = attr-val *("," attr-val); unknown optional ones are
    ignored, but they must be well formed."""
    for p in parts:
        if not _ATTR.match(p):
            raise ScramSyntaxError(f"malformed attribute in {what}")


@dataclass(frozen=True)
class GS2Header:
    """RFC 5802 7 gs2-header: the channel binding flag ("n", "y" or "p"), the cb-name
    for "p", the (unescaped) authzid ("" when absent) and the header text as sent,
    with its trailing comma."""

    flag: str
    cb_name: str | None
    authzid: str
    raw: str


@dataclass(frozen=True)
class ClientFirst:
    gs2: GS2Header
    username: str
    nonce: str
    bare: str  # client-first-message-bare, part of AuthMessage


def _no_mext(parts: list[str], what: str) -> None:
    # RFC 5802 5.1 "m": reserved for mandatory extensions; the receiver MUST fail
    # the authentication when it sees one.
    if parts and parts[0].startswith("m="):
        raise ScramSyntaxError(f"unsupported mandatory extension in {what}")


def parse_client_first(msg: str) -> ClientFirst:
    """RFC 5802 7: client-first-message = gs2-header client-first-message-bare."""
    what = "client-first-message"
    if "\x00" in msg:
        raise ScramSyntaxError(f"NUL in {what}")
    pieces = msg.split(",", 2)
    if len(pieces) != 3:
        raise ScramSyntaxError(f"missing GS2 header in {what}")
    flag, authz, bare = pieces
    # RFC 5802 7: gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
    cb_name = None
    if flag in ("n", "y"):
        pass
    elif flag.startswith("p="):
        cb_name = flag[2:]
        if not _CB_NAME.match(cb_name):
            raise ScramSyntaxError("invalid channel binding name")
        flag = "p"
    else:
        raise ScramSyntaxError("invalid channel binding flag in GS2 header")
    # RFC 5802 7: gs2-header = gs2-cbind-flag "," [ authzid ] ","; authzid = "a=" saslname
    authzid = ""
    if authz:
        authzid = unescape_saslname(_expect(authz, "a", "GS2 header"))
    parts = bare.split(",")
    _no_mext(parts, what)
    if len(parts) < 2:
        raise ScramSyntaxError(f"missing attributes in {what}")
    username = unescape_saslname(_expect(parts[0], "n", what))
    nonce = _check_nonce(_expect(parts[1], "r", what))
    _extensions(parts[2:], what)
    return ClientFirst(GS2Header(flag, cb_name, authzid, pieces[0] + "," + authz + ","),
                       username, nonce, bare)


@dataclass(frozen=True)
class ServerFirst:
    nonce: str
    salt: bytes
    iterations: int
    raw: str


def format_server_first(nonce: str, salt: bytes, iterations: int) -> str:
    """RFC 5802 7: server-first-message = nonce "," salt "," iteration-count."""
    return f"r={nonce},s={b64(salt)},i={iterations}"


def parse_server_first(msg: str) -> ServerFirst:
    what = "server-first-message"
    if "\x00" in msg:
        raise ScramSyntaxError(f"NUL in {what}")
    parts = msg.split(",")
    _no_mext(parts, what)
    if len(parts) < 3:
        raise ScramSyntaxError(f"missing attributes in {what}")
    nonce = _check_nonce(_expect(parts[0], "r", what))
    salt = _unb64(_expect(parts[1], "s", what), "salt")
    if not salt:
        raise ScramSyntaxError("empty salt")
    i = _expect(parts[2], "i", what)
    if not _POSIT_NUMBER.match(i) or len(i) > 10:
        raise ScramSyntaxError("invalid iteration count")
    _extensions(parts[3:], what)
    return ServerFirst(nonce, salt, int(i), msg)


@dataclass(frozen=True)
class ClientFinal:
    channel_binding: bytes  # decoded c= value: gs2-header [cbind-data]
    nonce: str
    proof: bytes
    without_proof: str  # client-final-message-without-proof, part of AuthMessage


def parse_client_final(msg: str) -> ClientFinal:
    """RFC 5802 7: client-final-message = channel-binding "," nonce ["," extensions]
    "," proof."""
    what = "client-final-message"
    if "\x00" in msg:
        raise ScramSyntaxError(f"NUL in {what}")
    parts = msg.split(",")
    if len(parts) < 3:
        raise ScramSyntaxError(f"missing attributes in {what}")
    cbind = _unb64(_expect(parts[0], "c", what), "channel binding")
    nonce = _check_nonce(_expect(parts[1], "r", what))
    proof = _unb64(_expect(parts[-1], "p", what), "proof")
    _extensions(parts[2:-1], what)
    without_proof = msg[: msg.rindex(",")]
    return ClientFinal(cbind, nonce, proof, without_proof)


def format_client_final(cbind_input: bytes, nonce: str, proof: bytes) -> tuple[str, str]:
    """(client-final-message-without-proof, client-final-message)."""
    without = f"c={b64(cbind_input)},r={nonce}"
    return without, f"{without},p={b64(proof)}"


@dataclass(frozen=True)
class ServerFinal:
    error: str | None  # RFC 5802 7 server-error-value, when the server refused
    verifier: bytes | None  # ServerSignature


def parse_server_final(msg: str) -> ServerFinal:
    """RFC 5802 7: server-final-message = (server-error / verifier) ["," extensions]."""
    what = "server-final-message"
    if "\x00" in msg:
        raise ScramSyntaxError(f"NUL in {what}")
    parts = msg.split(",")
    _extensions(parts[1:], what)
    if parts[0].startswith("e="):
        return ServerFinal(_expect(parts[0], "e", what), None)
    return ServerFinal(None, _unb64(_expect(parts[0], "v", what), "verifier"))


def channel_binding_input(gs2_header: str, cb_data: bytes | None) -> bytes:
    """RFC 5802 7: cbind-input = gs2-header [ cbind-data ]; cbind-data only with "p"."""
    return gs2_header.encode("utf-8") + (cb_data or b"")


def auth_message(
    client_first_bare: str, server_first: str, client_final_without_proof: str
) -> bytes:
    """RFC 5802 3: AuthMessage."""
    return ",".join((client_first_bare, server_first, client_final_without_proof)).encode("utf-8")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def client_proof(client_key: bytes, stored_key: bytes, auth_msg: bytes, hashname: str) -> bytes:
    """RFC 5802 3: ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)."""
    return _xor(client_key, hmac.new(stored_key, auth_msg, hashname).digest())


def verify_client_proof(stored_key: bytes, proof: bytes, auth_msg: bytes, hashname: str) -> bool:
    """RFC 5802 3: recover ClientKey from the proof and check H(ClientKey) == StoredKey."""
    signature = hmac.new(stored_key, auth_msg, hashname).digest()
    if len(proof) != len(signature):
        return False
    client_key = _xor(proof, signature)
    return hmac.compare_digest(hashlib.new(hashname, client_key).digest(), stored_key)


def server_signature(server_key: bytes, auth_msg: bytes, hashname: str) -> bytes:
    """RFC 5802 3: ServerSignature = HMAC(ServerKey, AuthMessage)."""
    return hmac.new(server_key, auth_msg, hashname).digest()
