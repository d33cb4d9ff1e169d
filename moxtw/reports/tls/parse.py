"""Parsing of incoming SMTP TLS reports (RFC 8460).

A report is a JSON document (RFC 8460 4.4), mailed as an attachment of media type
``application/tlsrpt+gzip`` or ``application/tlsrpt+json`` (RFC 8460 5.3, 6.4, 6.5).
Reports come from anyone, so input is capped (decompressed size, nesting) and every
problem becomes a :class:`ReportError`. Field names of the JSON are kept in the stored
form (``to_json``), so what is stored reads like the RFC.

``parse_report(data)`` parses a report (JSON or gzip); ``parse_message(message)`` finds
the report in an email message.
"""

import gzip
import io
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from moxtw import message as _message

MAX_REPORT_SIZE = 20 * 1024 * 1024  # decompressed bytes (gzip bombs)
MAX_COUNT = 2**63 - 1  # session counts must fit SQLite's INTEGER
MAX_POLICIES = 10_000
MAX_FAILURE_DETAILS = 100_000
MAX_CANDIDATE_PARTS = 10

# RFC 8460 6.4, 6.5; the rest are seen in the wild or from careless reporters.
REPORT_TYPES = frozenset({
    "application/tlsrpt+gzip", "application/tlsrpt+json",
    "application/gzip", "application/x-gzip", "application/json",
})
REPORT_EXTENSIONS = (".json", ".json.gz", ".gz")

# RFC 8460 4.4 policy-type values.
POLICY_TYPES = frozenset({"tlsa", "sts", "no-policy-found"})
# RFC 8460 4.3 result types (unknown ones are kept as sent).
RESULT_TYPES = frozenset({
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
})


class ReportError(Exception):
    """The data is not a usable TLS report; the text says why."""


@dataclass(slots=True)
class DateRange:
    start: datetime  # aware, UTC
    end: datetime


@dataclass(slots=True)
class Policy:
    """RFC 8460 4.4 ``policy``. ``mx_host`` is always a list (some reporters send a
    string)."""

    type: str  # sts, tlsa, no-policy-found
    domain: str
    string: list[str] = field(default_factory=list)
    mx_host: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Summary:
    total_successful_session_count: int = 0
    total_failure_session_count: int = 0


@dataclass(slots=True)
class FailureDetails:
    """RFC 8460 4.4 ``failure-details``; absent fields are ""."""

    result_type: str
    failed_session_count: int = 0
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""


@dataclass(slots=True)
class Result:
    """One entry of ``policies``: the policy, its summary and failure details."""

    policy: Policy
    summary: Summary = field(default_factory=Summary)
    failure_details: list[FailureDetails] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    """An SMTP TLS report (RFC 8460 4.4)."""

    organization_name: str
    date_range: DateRange
    contact_info: str
    report_id: str
    policies: list[Result] = field(default_factory=list)

    def domains(self):
        """The policy domains the report is about, in order, without duplicates."""
        seen = []
        for r in self.policies:
            if r.policy.domain and r.policy.domain not in seen:
                seen.append(r.policy.domain)
        return seen

    def to_json(self):
        """The report as RFC 8460 JSON (a dict); ``from_json`` restores it."""
        return {
            "organization-name": self.organization_name,
            "date-range": {
                "start-datetime": _format_time(self.date_range.start),
                "end-datetime": _format_time(self.date_range.end),
            },
            "contact-info": self.contact_info,
            "report-id": self.report_id,
            "policies": [_result_json(r) for r in self.policies],
        }

    @classmethod
    def from_json(cls, value):
        """Build a Report from RFC 8460 JSON (a parsed dict); ReportError if invalid."""
        return _report(value)


def _format_time(t):
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _result_json(r):
    p = r.policy
    policy = {"policy-type": p.type, "policy-domain": p.domain}
    if p.string:
        policy["policy-string"] = list(p.string)
    if p.mx_host:
        policy["mx-host"] = list(p.mx_host)
    out = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": r.summary.total_successful_session_count,
            "total-failure-session-count": r.summary.total_failure_session_count,
        },
    }
    if r.failure_details:
        out["failure-details"] = [_details_json(d) for d in r.failure_details]
    return out


def _details_json(d):
    out = {"result-type": d.result_type, "failed-session-count": d.failed_session_count}
    for key, value in (
        ("sending-mta-ip", d.sending_mta_ip),
        ("receiving-mx-hostname", d.receiving_mx_hostname),
        ("receiving-mx-helo", d.receiving_mx_helo),
        ("receiving-ip", d.receiving_ip),
        ("additional-information", d.additional_information),
        ("failure-reason-code", d.failure_reason_code),
    ):
        if value:
            out[key] = value
    return out


# -- decoding


def decompress(data, max_size=MAX_REPORT_SIZE):
    """Gunzip ``data`` when it is gzip (recognised by content); ReportError when damaged
    or larger than ``max_size`` bytes once decompressed."""
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(max_size + 1)  # never more than the cap in memory
        except (OSError, EOFError, zlib.error) as e:
            raise ReportError(f"bad gzip data: {e}") from None
    if len(data) > max_size:
        raise ReportError(f"report larger than {max_size} bytes")
    return data


def parse_report(data, max_size=MAX_REPORT_SIZE):
    """Parse a TLS report: JSON or gzip-compressed JSON (bytes). Returns a
    :class:`Report`; raises :class:`ReportError`."""
    raw = decompress(data, max_size)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark, which json.loads refuses
    try:
        text = raw.decode("utf-8")  # RFC 8259 8.1: JSON exchanged between systems is UTF-8
    except UnicodeDecodeError as e:
        raise ReportError(f"report is not UTF-8: {e}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        # The C decoder guards its recursion; deep nesting ends here, not in a crash.
        raise ReportError("JSON nested too deep") from None
    except ValueError as e:
        raise ReportError(f"malformed JSON: {e}") from None
    return _report(value)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _obj(value, where):
    if not isinstance(value, dict):
        raise ReportError(f"{where} is not an object")
    return value


def _str(obj, key, where, required=False):
    value = obj.get(key)
    if value is None:
        if required:
            raise ReportError(f"missing {key!r} in {where}")
        return ""
    if not isinstance(value, str):
        raise ReportError(f"{key!r} in {where} is not a string")
    if required and not value.strip():
        raise ReportError(f"empty {key!r} in {where}")
    return value.strip()


def _count(obj, key, where):
    value = obj.get(key, 0)
    if value is None:
        return 0
    # bool is an int in Python, but true is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportError(f"{key!r} in {where} is not an integer")
    if not 0 <= value <= MAX_COUNT:
        raise ReportError(f"{key!r} in {where} out of range: {value}")
    return value


def _time(obj, key, where):
    text = _str(obj, key, where, required=True)
    try:
        # RFC 8460 4.4: RFC 3339 date-time.
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"{key!r} in {where} is not an RFC 3339 date-time: {text[:40]!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def _str_list(obj, key, where):
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportError(f"{key!r} in {where} is not a list of strings")
    return list(value)


def _report(value):
    doc = _obj(value, "report")
    dr = _obj(doc.get("date-range"), "date-range")
    date_range = DateRange(start=_time(dr, "start-datetime", "date-range"),
                           end=_time(dr, "end-datetime", "date-range"))
    policies = doc.get("policies")
    if not isinstance(policies, list):
        raise ReportError("missing or invalid 'policies'")
    if len(policies) > MAX_POLICIES:
        raise ReportError(f"more than {MAX_POLICIES} policies")
    return Report(
        organization_name=_str(doc, "organization-name", "report", required=True),
        date_range=date_range,
        contact_info=_str(doc, "contact-info", "report"),
        report_id=_str(doc, "report-id", "report", required=True),
        policies=[_result(p, i) for i, p in enumerate(policies)],
    )


def _result(value, i):
    where = f"policies[{i}]"
    r = _obj(value, where)
    p = _obj(r.get("policy"), where + ".policy")
    pwhere = where + ".policy"
    ptype = _str(p, "policy-type", pwhere, required=True).lower()
    summary = r.get("summary")
    summary = _obj(summary, where + ".summary") if summary is not None else {}
    details = r.get("failure-details")
    if details is None:
        details = []
    if not isinstance(details, list):
        raise ReportError(f"{where}.failure-details is not a list")
    if len(details) > MAX_FAILURE_DETAILS:
        raise ReportError(f"more than {MAX_FAILURE_DETAILS} failure details")
    return Result(
        policy=Policy(
            type=ptype,
            domain=_str(p, "policy-domain", pwhere, required=True),
            string=_str_list(p, "policy-string", pwhere),
            mx_host=_str_list(p, "mx-host", pwhere),
        ),
        summary=Summary(
            total_successful_session_count=_count(summary, "total-successful-session-count", where),
            total_failure_session_count=_count(summary, "total-failure-session-count", where),
        ),
        failure_details=[_details(d, f"{where}.failure-details[{j}]")
                         for j, d in enumerate(details)],
    )


def _details(value, where):
    d = _obj(value, where)
    return FailureDetails(
        result_type=_str(d, "result-type", where, required=True).lower(),
        failed_session_count=_count(d, "failed-session-count", where),
        sending_mta_ip=_str(d, "sending-mta-ip", where),
        receiving_mx_hostname=_str(d, "receiving-mx-hostname", where),
        receiving_mx_helo=_str(d, "receiving-mx-helo", where),
        receiving_ip=_str(d, "receiving-ip", where),
        additional_information=_str(d, "additional-information", where),
        failure_reason_code=_str(d, "failure-reason-code", where),
    )


# -- messages


def _is_candidate(media_type, filename):
    if media_type in REPORT_TYPES:
        return True
    return filename.lower().endswith(REPORT_EXTENSIONS)


def parse_message(message, max_size=MAX_REPORT_SIZE):
    """Find and parse the TLS report in an email message (bytes).

    Returns the :class:`Report` of the first attachment that parses, None when no part
    looks like a report, and raises :class:`ReportError` (of the first such part) when
    parts looked like reports but none parsed."""
    data = bytes(message)
    root = _message.parse(data)
    first_error = None
    n = 0
    for part in root.walk():
        if part.is_multipart() or part.message is not None:
            continue
        media_type = f"{part.media_type}/{part.media_subtype}".lower()
        filename = part.filename()
        if not _is_candidate(media_type, filename):
            continue
        n += 1
        if n > MAX_CANDIDATE_PARTS:
            break
        try:
            return parse_report(part.decoded_body(data), max_size)
        except ReportError as e:
            if first_error is None:
                first_error = ReportError(f"{media_type} part {filename!r}: {e}")
    if first_error is not None:
        raise first_error
    return None
