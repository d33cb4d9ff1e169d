"""Value types used by the configuration schema.

Each type is an ``Annotated`` pydantic type that validates and normalises one kind of value
found in the configuration files: ports, IP addresses, host and domain names (IDNA, kept in
lowercase unicode form as mox does), email addresses (with "@domain" catchall keys), regular
expressions, durations in Go syntax ("15s", "1h30m", "72h"), log levels and TLS versions.

Each type carries a `TypeDoc` in its metadata, which `moxtw.config.describe` uses to name the
type in the annotated example configuration.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import idna
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer


@dataclass(frozen=True)
class TypeDoc:
    """Human name of a value type, shown in the annotated example configuration."""

    name: str


LOG_LEVELS = ("error", "info", "debug", "trace", "traceauth", "tracedata")
TLS_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")


# Ports.

Port = Annotated[int, Field(ge=1, le=65535), TypeDoc("port number (1-65535)")]


# IP addresses.


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"invalid IP address {value!r}") from None


IPAddress = Annotated[str, AfterValidator(_check_ip), TypeDoc("IP address")]


# Domain and host names.

_LDH_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def parse_domain(value: str) -> str:
    """Validate a domain name and return it in lowercase unicode (U-label) form.

    Raises ValueError with a readable message for invalid names.
    """
    if value == "":
        raise ValueError("empty domain name")
    if value.endswith("."):
        raise ValueError(f"domain name {value!r} must not end with a dot")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise ValueError(f"{value!r} is an IP address, not a domain name")
    try:
        ascii_name = idna.encode(value, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid domain name {value!r}: {exc}") from None
    if len(ascii_name) > 253:
        raise ValueError(f"domain name {value!r} is longer than 253 characters")
    for label in ascii_name.split("."):
        if len(label) > 63 or not _LDH_LABEL.match(label):
            raise ValueError(f"invalid label {label!r} in domain name {value!r}")
    try:
        return idna.decode(ascii_name)
    except idna.IDNAError as exc:  # pragma: no cover - encode succeeded
        raise ValueError(f"invalid domain name {value!r}: {exc}") from None


def domain_ascii(domain: str) -> str:
    """The A-label (ASCII, "xn--") form of a domain in the configuration."""
    return idna.encode(domain, uts46=True).decode("ascii")


DomainName = Annotated[
    str, AfterValidator(parse_domain), TypeDoc("domain name (IDNA, stored in unicode form)")
]
Hostname = Annotated[
    str, AfterValidator(parse_domain), TypeDoc("host name (IDNA, stored in unicode form)")
]


# Email addresses.

_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+$")
_QTEXT = re.compile(r'^"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')


def check_localpart(localpart: str) -> str:
    """Validate the localpart of an email address (dot-atom or quoted string, RFC 5321 4.1.2,
    UTF-8 allowed as in RFC 6531)."""
    if localpart == "":
        raise ValueError("empty localpart")
    if localpart.startswith('"'):
        if not _QTEXT.match(localpart):
            raise ValueError(f"invalid quoted localpart {localpart!r}")
        return localpart
    for atom in localpart.split("."):
        if not atom or not _ATEXT.match(atom):
            raise ValueError(f"invalid localpart {localpart!r}")
    return localpart


def parse_address(value: str) -> tuple[str, str]:
    """Split and validate an email address, returning (localpart, unicode domain)."""
    localpart, sep, domain = value.rpartition("@")
    if not sep:
        raise ValueError(f"invalid email address {value!r}: missing @")
    try:
        localpart = check_localpart(localpart)
        domain = parse_domain(domain)
    except ValueError as exc:
        raise ValueError(f"invalid email address {value!r}: {exc}") from None
    return localpart, domain


def _normalize_address(value: str) -> str:
    localpart, domain = parse_address(value)
    return f"{localpart}@{domain}"


def parse_destination(value: str) -> tuple[str, str]:
    """Parse a destination key: an email address, or "@domain" for a catchall.

    Returns (localpart, domain), localpart empty for a catchall.
    """
    if value.startswith("@"):
        try:
            return "", parse_domain(value[1:])
        except ValueError as exc:
            raise ValueError(f"invalid catchall destination {value!r}: {exc}") from None
    return parse_address(value)


def _normalize_destination(value: str) -> str:
    localpart, domain = parse_destination(value)
    return f"{localpart}@{domain}"


EmailAddress = Annotated[str, AfterValidator(_normalize_address), TypeDoc("email address")]
DestinationAddress = Annotated[
    str,
    AfterValidator(_normalize_destination),
    TypeDoc('email address, or "@domain" for a catchall'),
]


# Regular expressions.


def _check_regexp(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


Regexp = Annotated[str, AfterValidator(_check_regexp), TypeDoc("regular expression")]


# Durations, in Go's time.ParseDuration syntax, as mox uses.

_DURATION_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "μs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: str) -> timedelta:
    """Parse a duration like "15s", "1h30m", "72h", "1.5h" or "0"."""
    if value == "0":
        return timedelta(0)
    pos = 0
    total = timedelta(0)
    if not value:
        raise ValueError('empty duration, expected e.g. "15m" or "24h"')
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if not m:
            raise ValueError(
                f"invalid duration {value!r}, expected a number and unit (h, m, s, ms), "
                'e.g. "15m", "24h" or "1h30m"'
            )
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(value: timedelta) -> str:
    """Format a duration in the syntax parse_duration reads, e.g. "72h", "1h30m", "15s"."""
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or micros:
        if micros:
            frac = f"{micros:06d}".rstrip("0")
            out += f"{seconds}.{frac}s"
        else:
            out += f"{seconds}s"
    return out


def _to_duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError('expected a duration string, e.g. "15m" or "24h"')


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    TypeDoc('duration (e.g. "15s", "30m", "24h", "1h30m")'),
]


# Enumerations as strings.


def one_of(*choices: str):
    """An AfterValidator that requires a string to be one of choices."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"invalid value {value!r}, expected one of: {', '.join(choices)}")
        return value

    return AfterValidator(check)


def Choice(*choices: str) -> Any:
    """A string type that must be one of choices."""
    return Annotated[str, one_of(*choices), TypeDoc("one of: " + ", ".join(choices))]


LogLevel = Annotated[str, one_of(*LOG_LEVELS), TypeDoc("log level: " + ", ".join(LOG_LEVELS))]
TLSVersion = Annotated[
    str, one_of(*TLS_VERSIONS), TypeDoc("TLS version: " + ", ".join(TLS_VERSIONS))
]


def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"invalid URL {value!r}, expected an http:// or https:// URL")
    return value


HTTPURL = Annotated[str, AfterValidator(_check_http_url), TypeDoc("http(s) URL")]


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"path {value!r} must start with a slash")
    return value


URLPath = Annotated[str, AfterValidator(_check_path), TypeDoc("URL path starting with /")]


Localpart = Annotated[
    str, AfterValidator(check_localpart), TypeDoc("localpart (the part of an address before @)")
]


def _check_route_domain(value: str) -> str:
    if value.startswith("."):
        return "." + parse_domain(value[1:])
    return parse_domain(value)


RouteDomain = Annotated[
    str,
    AfterValidator(_check_route_domain),
    TypeDoc('domain name, with a leading dot to also match subdomains (".example.org")'),
]


def _check_mx_pattern(value: str) -> str:
    if value.startswith("*."):
        return "*." + parse_domain(value[2:])
    return parse_domain(value)


MXPattern = Annotated[
    str,
    AfterValidator(_check_mx_pattern),
    TypeDoc('host name, optionally with a leading "*." wildcard label'),
]


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}, expected host:port")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        parse_domain(host)
    return value


HostPort = Annotated[
    str, AfterValidator(_check_host_port), TypeDoc('"host:port" or "ip:port" (IPv6 in brackets)')
]
