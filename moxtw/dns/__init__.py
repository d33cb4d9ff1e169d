"""Deferred-based DNS resolution (DESIGN.md section 7)."""

from moxtw.dns.base import BaseResolver, normalize, reverse_name
from moxtw.dns.mock import MockResolver
from moxtw.dns.types import (
    MX, SRV, TLSA, Answer, DNSError, InvalidName, NoRecords, NotFound, TemporaryFailure,
)

__all__ = [
    "BaseResolver", "MockResolver", "normalize", "reverse_name",
    "MX", "SRV", "TLSA", "Answer", "DNSError", "InvalidName", "NoRecords", "NotFound",
    "TemporaryFailure",
]
