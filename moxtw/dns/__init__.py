"""Deferred-based DNS resolution (design notes §7, kept outside this repository)."""

from moxtw.dns.base import BaseResolver, normalize, reverse_name
from moxtw.dns.mock import MockResolver
from moxtw.dns.resolver import Resolver
from moxtw.dns.types import (
    MX, SOA, SRV, TLSA, Answer, DNSError, InvalidName, NoRecords, NotFound, TemporaryFailure,
)

__all__ = [
    "BaseResolver", "MockResolver", "Resolver", "normalize", "reverse_name",
    "MX", "SOA", "SRV", "TLSA", "Answer", "DNSError", "InvalidName", "NoRecords", "NotFound",
    "TemporaryFailure",
]
