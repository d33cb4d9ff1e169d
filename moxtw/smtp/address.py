"""Email addresses as SMTP carries them: paths, localparts, domains (RFC 5321 4.1.2),
internationalised per RFC 6531 (UTF-8 localparts, NFC) and RFC 5890 (IDNA domains).
"""

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

import idna


class AddressError(ValueError):
    """A path, address, localpart or domain does not follow the syntax."""


# RFC 5321 4.1.2 atext (RFC 5322 3.2.3), plus UTF-8 (RFC 6531 3.3: atext =/ UTF8-non-ascii).
_ATEXT_ASCII = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_LOCALPART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3


@dataclass(frozen=True)
class Domain:
    """A domain in both forms, lower case: A-labels (``ascii``) and U-labels (``unicode``).
    An address literal ("[192.0.2.1]", "[IPv6:...]") has the same text in both."""

    ascii: str
    unicode: str

    def __str__(self):
        return self.unicode

    @property
    def is_literal(self):
        return self.ascii.startswith("[")


def parse_domain(text, allow_underscore=False):
    """Parse a domain name (RFC 5321 4.1.2 Domain, or U-labels per RFC 5890)."""
    if not text or len(text) > MAX_DOMAIN:
        raise AddressError(f"invalid domain {text!r}: empty or too long")
    text = text.rstrip(".") if text.endswith(".") and not text.endswith("..") else text
    labels = text.split(".")
    if any(not label for label in labels):
        raise AddressError(f"invalid domain {text!r}: empty label")
    ascii_labels = []
    unicode_labels = []
    for label in labels:
        if label.isascii():
            low = label.lower()
            if low.startswith("xn--"):
                try:
                    u = idna.decode(low)
                    idna.encode(u)
                except idna.IDNAError as e:
                    raise AddressError(f"invalid domain {text!r}: bad A-label {label!r}: {e}") from None
                ascii_labels.append(low)
                unicode_labels.append(u)
                continue
            check = low.replace("_", "a") if allow_underscore else low
            if not _LDH.match(check):
                raise AddressError(f"invalid domain {text!r}: bad label {label!r}")
            ascii_labels.append(low)
            unicode_labels.append(low)
        else:
            try:
                a = idna.encode(label, uts46=True).decode("ascii")
                u = idna.decode(a)
            except idna.IDNAError as e:
                raise AddressError(f"invalid domain {text!r}: {e}") from None
            ascii_labels.append(a)
            unicode_labels.append(u)
    ascii_name = ".".join(ascii_labels)
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError(f"invalid domain {text!r}: too long")
    return Domain(ascii_name, ".".join(unicode_labels))


def _parse_literal(text):
    # RFC 5321 4.1.3 address literals.
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ip = ipaddress.IPv6Address(inner[5:])
            norm = f"[IPv6:{ip.compressed}]"
        else:
            ip = ipaddress.IPv4Address(inner)
            norm = f"[{ip}]"
    except ValueError:
        raise AddressError(f"invalid address literal {text!r}") from None
    return Domain(norm, norm)


def _is_dot_string(lp, utf8):
    for atom in lp.split("."):
        if not atom:
            return False
        for c in atom:
            if c in _ATEXT_ASCII:
                continue
            if utf8 and ord(c) >= 0x80 and unicodedata.category(c)[0] != "C":
                continue
            return False
    return True


def _parse_quoted(lp, utf8):
    # RFC 5321 4.1.2 Quoted-string; returns the unquoted localpart.
    out = []
    i = 1
    while i < len(lp) - 1:
        c = lp[i]
        if c == "\\":
            if i + 1 >= len(lp) - 1:
                raise AddressError("invalid quoted localpart: trailing backslash")
            nxt = lp[i + 1]
            if not (" " <= nxt <= "~"):
                raise AddressError("invalid quoted localpart: bad escaped character")
            out.append(nxt)
            i += 2
            continue
        if c == '"' or (c < " " or c == "\x7f") or (ord(c) >= 0x80 and not utf8):
            raise AddressError("invalid character in quoted localpart")
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Address:
    """An address with an unquoted, NFC-normalised localpart."""

    localpart: str
    domain: Domain

    def _quoted_localpart(self):
        lp = self.localpart
        if lp and _is_dot_string(lp, True):
            return lp
        return '"' + lp.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def __str__(self):
        return f"{self._quoted_localpart()}@{self.domain.unicode}"

    def ascii_domain(self):
        """The address with the domain in A-labels (for peers without SMTPUTF8)."""
        return f"{self._quoted_localpart()}@{self.domain.ascii}"

    @property
    def needs_smtputf8(self):
        return not self.localpart.isascii() or not self.domain.ascii.isascii()


def parse_address(text, utf8=True):
    """Parse ``localpart@domain`` (no angle brackets)."""
    if "@" not in text:
        raise AddressError(f"invalid address {text!r}: missing @")
    if text.startswith('"'):
        end = _closing_quote(text)
        if end < 0 or end + 1 >= len(text) or text[end + 1] != "@":
            raise AddressError(f"invalid address {text!r}: bad quoted localpart")
        lp_raw, dom = text[: end + 1], text[end + 2:]
        localpart = _parse_quoted(lp_raw, utf8)
    else:
        lp_raw, _, dom = text.rpartition("@")
        if not _is_dot_string(lp_raw, utf8):
            if not utf8 and not lp_raw.isascii():
                raise AddressError(f"non-ASCII localpart in {text!r} requires SMTPUTF8")
            raise AddressError(f"invalid localpart in {text!r}")
        localpart = lp_raw
    localpart = unicodedata.normalize("NFC", localpart)  # RFC 6531 3.3
    if len(localpart.encode("utf-8")) > MAX_LOCALPART:
        raise AddressError(f"localpart too long in {text!r}")
    if not utf8 and not dom.isascii():
        raise AddressError(f"non-ASCII domain in {text!r} requires SMTPUTF8")
    if dom.startswith("[") and dom.endswith("]"):
        domain = _parse_literal(dom)
    else:
        domain = parse_domain(dom)
    return Address(localpart, domain)


def _closing_quote(text):
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def parse_path(text, utf8=True, allow_null=False):
    """Parse a reverse-path or forward-path: ``<addr>``, ``<@a,@b:addr>`` (source route,
    ignored per RFC 5321 4.1.2), or ``<>`` when ``allow_null``. Returns Address or None."""
    if len(text) > MAX_PATH + 2:
        raise AddressError("path too long")
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError(f"invalid path {text!r}: missing angle brackets")
    inner = text[1:-1]
    if inner == "":
        if allow_null:
            return None
        raise AddressError("empty path not allowed here")
    if inner.startswith("@"):
        # RFC 5321 4.1.2 A-d-l: "SHOULD NOT" be used, MUST be accepted and ignored (C.).
        route, sep, inner = inner.partition(":")
        if not sep:
            raise AddressError(f"invalid source route in {text!r}")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise AddressError(f"invalid source route in {text!r}")
            parse_domain(hop[1:])
    return parse_address(inner, utf8)
