"""What an account stores for its password: derived keys, never the password itself.

For each password we keep

- SCRAM-SHA-1 and SCRAM-SHA-256 keys (RFC 5802 3, RFC 7677): a random salt, the iteration
  count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
  ServerKey = HMAC(SaltedPassword, "Server Key") with SaltedPassword = PBKDF2 (Hi). They
  verify SCRAM exchanges and, through :func:`verify_password`, plain passwords (PLAIN,
  LOGIN, web login);
- for CRAM-MD5 (RFC 2195), the HMAC-MD5 (RFC 2104) intermediate states: the MD5 chaining
  values after compressing the single block (key XOR ipad), and after (key XOR opad). With
  them the server computes HMAC-MD5(password, challenge) without the password. Python's
  hashlib cannot export or import an MD5 state, so this module has a small pure-Python MD5
  whose state can be resumed; it only ever hashes a challenge and a digest.

Passwords are prepared with the PRECIS OpaqueString profile (RFC 8265 4.2) first.

:func:`derive` and :func:`verify_password` run PBKDF2 with 4096 or more iterations (twice
for derive): milliseconds of CPU each. Callers on the reactor thread must run them in a
thread pool (``twisted.internet.threads.deferToThread`` or the auth pool), never inline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from moxtw.sasl.precis import PrecisError, opaque_string

__all__ = [
    "PasswordError",
    "ScramKeys",
    "CramMD5Keys",
    "Credentials",
    "ScramClientKeys",
    "derive",
    "verify_password",
    "cram_md5_digest",
    "scram_client_keys",
    "scram_keys",
    "cram_md5_keys",
    "MD5",
    "DEFAULT_ITERATIONS",
]

# RFC 7677 4 and RFC 5802 5.1: at least 4096 iterations.
DEFAULT_ITERATIONS = 4096
MIN_ITERATIONS = 4096
SALT_SIZE = 16


class PasswordError(ValueError):
    """The password is empty or not valid under the OpaqueString profile."""


def _hash_name(hashname: str) -> str:
    n = hashname.lower().replace("-", "")
    if n not in ("sha1", "sha256"):
        raise ValueError(f"unsupported SCRAM hash {hashname!r}")
    return n


def _prepare(password: str) -> bytes:
    try:
        return opaque_string(password).encode("utf-8")
    except PrecisError as e:
        raise PasswordError(f"invalid password: {e}") from None


# Pure-Python MD5 (RFC 1321) with a resumable state.

_M32 = 0xFFFFFFFF
_MD5_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
# RFC 1321 3.4: per-round shift amounts and T[i] = floor(2^32 * abs(sin(i + 1))).
_MD5_S = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_MD5_T = (
    0xD76AA478, 0xE8C7B756, 0x242070DB, 0xC1BDCEEE, 0xF57C0FAF, 0x4787C62A, 0xA8304613, 0xFD469501,
    0x698098D8, 0x8B44F7AF, 0xFFFF5BB1, 0x895CD7BE, 0x6B901122, 0xFD987193, 0xA679438E, 0x49B40821,
    0xF61E2562, 0xC040B340, 0x265E5A51, 0xE9B6C7AA, 0xD62F105D, 0x02441453, 0xD8A1E681, 0xE7D3FBC8,
    0x21E1CDE6, 0xC33707D6, 0xF4D50D87, 0x455A14ED, 0xA9E3E905, 0xFCEFA3F8, 0x676F02D9, 0x8D2A4C8A,
    0xFFFA3942, 0x8771F681, 0x6D9D6122, 0xFDE5380C, 0xA4BEEA44, 0x4BDECFA9, 0xF6BB4B60, 0xBEBFBC70,
    0x289B7EC6, 0xEAA127FA, 0xD4EF3085, 0x04881D05, 0xD9D4D039, 0xE6DB99E5, 0x1FA27CF8, 0xC4AC5665,
    0xF4292244, 0x432AFF97, 0xAB9423A7, 0xFC93A039, 0x655B59C3, 0x8F0CCC92, 0xFFEFF47D, 0x85845DD1,
    0x6FA87E4F, 0xFE2CE6E0, 0xA3014314, 0x4E0811A1, 0xF7537E82, 0xBD3AF235, 0x2AD7D2BB, 0xEB86D391,
)  # fmt: skip
_MD5_G = tuple(
    i if i < 16 else (5 * i + 1) % 16 if i < 32 else (3 * i + 5) % 16 if i < 48 else (7 * i) % 16
    for i in range(64)
)


def _md5_compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    """RFC 1321 3.4: process one 64-byte block."""
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
        elif i < 32:
            f = (d & b) | (~d & c)
        elif i < 48:
            f = b ^ c ^ d
        else:
            f = c ^ (b | (~d & _M32))
        f = (a + f + _MD5_T[i] + x[_MD5_G[i]]) & _M32
        s = _MD5_S[i]
        a, d, c = d, c, b
        b = (b + (((f << s) | (f >> (32 - s))) & _M32)) & _M32
    return (
        (state[0] + a) & _M32,
        (state[1] + b) & _M32,
        (state[2] + c) & _M32,
        (state[3] + d) & _M32,
    )


class MD5:
    """MD5 whose chaining state can be exported after whole blocks and resumed."""

    digest_size = 16
    block_size = 64

    def __init__(self, data: bytes = b"", *, state: bytes | None = None, count: int = 0) -> None:
        if state is None:
            self._state = _MD5_IV
        else:
            if len(state) != 16 or count % 64:
                raise ValueError("MD5 state must be 16 bytes, count a multiple of 64")
            self._state = struct.unpack("<4I", state)
        self._count = count  # bytes processed
        self._buf = b""
        self.update(data)

    def update(self, data: bytes) -> None:
        self._count += len(data)
        buf = self._buf + bytes(data)
        n = len(buf) - len(buf) % 64
        for i in range(0, n, 64):
            self._state = _md5_compress(self._state, buf[i : i + 64])
        self._buf = buf[n:]

    def state(self) -> bytes:
        """The chaining state; only meaningful after a whole number of blocks."""
        if self._buf:
            raise ValueError("state is only defined on a block boundary")
        return struct.pack("<4I", *self._state)

    def digest(self) -> bytes:
        # RFC 1321 3.1, 3.2: pad with 0x80, zeros, and the bit length, little endian.
        pad = b"\x80" + b"\x00" * ((55 - self._count) % 64)
        tail = self._buf + pad + struct.pack("<Q", (self._count * 8) & 0xFFFFFFFFFFFFFFFF)
        st = self._state
        for i in range(0, len(tail), 64):
            st = _md5_compress(st, tail[i : i + 64])
        return struct.pack("<4I", *st)

    def hexdigest(self) -> str:
        return self.digest().hex()


# Key types.


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise ValueError(f"{what}: invalid base64") from None


@dataclass(frozen=True)
class ScramKeys:
    """RFC 5802 3: what the server stores for one SCRAM hash."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "stored_key": _b64(self.stored_key),
            "server_key": _b64(self.server_key),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str, size: int) -> ScramKeys:
        it = d.get("iterations")
        if not isinstance(it, int) or isinstance(it, bool) or it < 1:
            raise ValueError(f"{what}.iterations: expected a positive integer")
        keys = cls(
            salt=_unb64(d.get("salt"), f"{what}.salt"),
            iterations=it,
            stored_key=_unb64(d.get("stored_key"), f"{what}.stored_key"),
            server_key=_unb64(d.get("server_key"), f"{what}.server_key"),
        )
        if len(keys.stored_key) != size or len(keys.server_key) != size or not keys.salt:
            raise ValueError(f"{what}: wrong key or salt size")
        return keys


@dataclass(frozen=True)
class CramMD5Keys:
    """HMAC-MD5 precomputed states: MD5 chaining values after (key XOR ipad) and after
    (key XOR opad), 16 bytes each (RFC 2104 4 suggests exactly this)."""

    inner: bytes
    outer: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"inner": _b64(self.inner), "outer": _b64(self.outer)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str) -> CramMD5Keys:
        keys = cls(_unb64(d.get("inner"), f"{what}.inner"), _unb64(d.get("outer"), f"{what}.outer"))
        if len(keys.inner) != 16 or len(keys.outer) != 16:
            raise ValueError(f"{what}: states must be 16 bytes")
        return keys


@dataclass(frozen=True)
class Credentials:
    """All derived keys an account stores for its password."""

    scram_sha1: ScramKeys
    scram_sha256: ScramKeys
    cram_md5: CramMD5Keys

    VERSION = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.VERSION,
            "scram_sha1": self.scram_sha1.to_dict(),
            "scram_sha256": self.scram_sha256.to_dict(),
            "cram_md5": self.cram_md5.to_dict(),
        }

    def to_json(self) -> str:
        """A JSON object with base64 strings for all binary values."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> Credentials:
        """Parse what :meth:`to_json` wrote (a string or the decoded object);
        raises ValueError if it is malformed."""
        d = json.loads(data) if isinstance(data, (str, bytes)) else data
        if not isinstance(d, dict) or d.get("version") != cls.VERSION:
            raise ValueError("credentials: expected an object with version 1")
        for k in ("scram_sha1", "scram_sha256", "cram_md5"):
            if not isinstance(d.get(k), dict):
                raise ValueError(f"credentials.{k}: missing or not an object")
        return cls(
            scram_sha1=ScramKeys.from_dict(d["scram_sha1"], "scram_sha1", 20),
            scram_sha256=ScramKeys.from_dict(d["scram_sha256"], "scram_sha256", 32),
            cram_md5=CramMD5Keys.from_dict(d["cram_md5"], "cram_md5"),
        )


# Derivation.


class ScramClientKeys(NamedTuple):
    """RFC 5802 3: the keys a SCRAM client (or a verifier) computes from the password."""

    salted_password: bytes
    client_key: bytes
    stored_key: bytes
    server_key: bytes


def _scram_from_prepared(pw: bytes, salt: bytes, iterations: int, hashname: str) -> ScramClientKeys:
    h = _hash_name(hashname)
    salted = hashlib.pbkdf2_hmac(h, pw, salt, iterations)  # RFC 5802 2.2: Hi()
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = hashlib.new(h, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", h).digest()
    return ScramClientKeys(salted, client_key, stored_key, server_key)


def scram_client_keys(
    password: str, salt: bytes, iterations: int, hashname: str
) -> ScramClientKeys:
    """SaltedPassword, ClientKey, StoredKey and ServerKey for a password (prepared with
    OpaqueString), salt, iteration count and hash ("sha1"/"sha256", or "SHA-1"/"SHA-256").
    CPU heavy: run off the reactor thread."""
    return _scram_from_prepared(_prepare(password), salt, iterations, hashname)


def scram_keys(password: str, salt: bytes, iterations: int, hashname: str) -> ScramKeys:
    """The server-side SCRAM keys for a password. CPU heavy."""
    k = scram_client_keys(password, salt, iterations, hashname)
    return ScramKeys(salt, iterations, k.stored_key, k.server_key)


def _cram_md5_from_prepared(pw: bytes) -> CramMD5Keys:
    # RFC 2104 2: keys longer than the block size are hashed first, then zero-padded.
    key = hashlib.md5(pw).digest() if len(pw) > 64 else pw
    key = key.ljust(64, b"\x00")
    inner = MD5(bytes(b ^ 0x36 for b in key)).state()
    outer = MD5(bytes(b ^ 0x5C for b in key)).state()
    return CramMD5Keys(inner, outer)


def cram_md5_keys(password: str) -> CramMD5Keys:
    """The precomputed HMAC-MD5 states for a password."""
    return _cram_md5_from_prepared(_prepare(password))


def derive(
    password: str,
    iterations: int = DEFAULT_ITERATIONS,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> Credentials:
    """Derive all stored keys from a password, with fresh random salts.

    Raises PasswordError if the password is empty or invalid under OpaqueString.
    CPU heavy (two PBKDF2 runs): call it off the reactor thread."""
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"at least {MIN_ITERATIONS} iterations required")
    pw = _prepare(password)

    def scram(h: str) -> ScramKeys:
        salt = randbytes(SALT_SIZE)
        k = _scram_from_prepared(pw, salt, iterations, h)
        return ScramKeys(salt, iterations, k.stored_key, k.server_key)

    return Credentials(scram("sha1"), scram("sha256"), _cram_md5_from_prepared(pw))


def verify_password(creds: Credentials, password: str) -> bool:
    """Whether password matches, by recomputing the SCRAM-SHA-256 StoredKey.

    CPU heavy (one PBKDF2 run): call it off the reactor thread."""
    try:
        pw = _prepare(password)
    except PasswordError:
        return False
    k = creds.scram_sha256
    got = _scram_from_prepared(pw, k.salt, k.iterations, "sha256")
    return hmac.compare_digest(got.stored_key, k.stored_key)


def cram_md5_digest(keys: CramMD5Keys, challenge: bytes) -> str:
    """HMAC-MD5(password, challenge) as lowercase hex, from the stored states: what a
    CRAM-MD5 client must send after its user name (RFC 2195 2). Compare with
    hmac.compare_digest."""
    inner = MD5(state=keys.inner, count=64)
    inner.update(challenge)
    outer = MD5(state=keys.outer, count=64)
    outer.update(inner.digest())
    return outer.hexdigest()
