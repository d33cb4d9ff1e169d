"""TLS reports we send (RFC 8460): the results of a UTC day for one policy domain as a
report, to the addresses of its ``_smtp._tls`` TXT record.

:func:`build_report` makes the RFC 8460 4.4 report from the day's result rows (kept by
:class:`moxtw.reports.tls.received.ReportDB`), :func:`compose_message` the RFC 8460 5.3
message (``multipart/report; report-type="tlsrpt"`` with the gzipped JSON), and
:func:`post_report` the RFC 8460 5.4 HTTPS POST. The ReportsService sends them once the
day is over.
"""

import gzip
import json
import secrets
from datetime import datetime, timedelta, timezone
from email import policy as _email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from moxtw import dns
from moxtw.reports.tls.parse import DateRange, FailureDetails, Policy, Report, Result, Summary

MAX_DESTINATIONS = 5
POST_TIMEOUT = 30.0


def parse_record(text):
    """The rua URIs of a ``v=TLSRPTv1`` TXT record (RFC 8460 3): ``mailto:`` and
    ``https:``; None when it is not a TLSRPT record."""
    fields = [f.strip() for f in text.split(";")]
    if not fields or fields[0].replace(" ", "") != "v=TLSRPTv1":
        return None
    uris = []
    for f in fields[1:]:
        key, eq, value = f.partition("=")
        if eq and key.strip() == "rua":
            for uri in value.split(","):
                uri = uri.strip()
                if uri.lower().startswith("mailto:") and "@" in uri:
                    uris.append("mailto:" + uri[7:])
                elif uri.lower().startswith("https://"):
                    uris.append(uri)
    return uris


async def destinations(resolver, policy_domain):
    """The rua URIs published for ``policy_domain``: [] for none; raises
    dns.TemporaryFailure to try again later."""
    try:
        answer = await resolver.txt(f"_smtp._tls.{dns.normalize(policy_domain)}")
    except (dns.NotFound, dns.NoRecords, dns.InvalidName):
        return []
    records = [r for r in (parse_record(t) for t in answer.records) if r is not None]
    if len(records) != 1:
        return []  # RFC 8460 3: exactly one record
    return list(dict.fromkeys(records[0]))[:MAX_DESTINATIONS]


def day_range(day):
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return start, start + timedelta(days=1) - timedelta(seconds=1)


def build_report(rows, policy_domain, day, organization, contact):
    """The Report for one policy domain and day from its result rows."""
    start, end = day_range(day)
    policies = []
    for row in rows:
        p = json.loads(row["policy"])
        details = [FailureDetails(
            result_type=d.get("result-type", "validation-failure"),
            failed_session_count=d.get("failed-session-count", 0),
            receiving_mx_hostname=d.get("receiving-mx-hostname", ""),
            receiving_ip=d.get("receiving-ip", ""),
            additional_information=d.get("additional-information", ""),
        ) for d in json.loads(row["failure_details"])]
        policies.append(Result(
            policy=Policy(type=p["policy-type"], domain=p["policy-domain"], string=p.get("policy-string", []),
                          mx_host=p.get("mx-host", [])),
            summary=Summary(row["success"], row["failure"]),
            failure_details=details,
        ))
    report_id = f"{day}.{secrets.token_hex(6)}@{organization}"
    return Report(organization_name=organization, date_range=DateRange(start, end), contact_info=contact,
                  report_id=report_id, policies=policies)


def report_json(report):
    return json.dumps(report.to_json(), indent=1).encode("utf-8") + b"\n"


def gzip_report(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def filename(submitter, policy_domain, report):
    """RFC 8460 5.1: ``sender!policy-domain!begin!end!unique-id.json.gz``."""
    begin = int(report.date_range.start.timestamp())
    end = int(report.date_range.end.timestamp())
    unique = report.report_id.split("@")[0].split(".")[-1]
    return f"{submitter}!{policy_domain}!{begin}!{end}!{unique}.json.gz"


def compose_message(from_address, to_addresses, policy_domain, submitter, report, report_gz, date=None):
    """The report message of RFC 8460 5.3 (bytes, CRLF)."""
    msg = EmailMessage(policy=_email_policy.SMTP)
    msg["From"] = from_address
    msg["To"] = ", ".join(to_addresses)
    msg["Subject"] = f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report.report_id}>"
    msg["Date"] = format_datetime(date or datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = policy_domain  # RFC 8460 5.3
    msg["TLS-Report-Submitter"] = submitter
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 5
    # RFC 8460 5.1 / RFC 8689 5: a report about a broken TLS policy must still get there.
    msg["TLS-Required"] = "No"
    start = report.date_range.start.strftime("%Y-%m-%d")
    msg.set_content(
        f"This is an SMTP TLS report (RFC 8460) for {policy_domain}, covering {start} (UTC),\r\n"
        f"about the TLS connections {submitter} made to deliver mail.\r\n"
        f"Report-ID: {report.report_id}\r\n")
    msg.add_attachment(report_gz, maintype="application", subtype="tlsrpt+gzip",
                       filename=filename(submitter, policy_domain, report))
    # RFC 8460 5.3: multipart/report with report-type "tlsrpt" (RFC 6522).
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report", 1))
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()


async def post_report(reactor, resolver, url, report_gz, trust=None, timeout=POST_TIMEOUT):
    """RFC 8460 5.4: POST the gzipped report with media type application/tlsrpt+gzip.
    Returns the HTTP status; raises for connection errors."""
    import treq
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from moxtw.mtasts.client import EndpointFactory, collect_within

    deadline = reactor.seconds() + timeout
    agent = Agent.usingEndpointFactory(
        reactor, EndpointFactory(reactor, resolver, BrowserLikePolicyForHTTPS(trustRoot=trust), None, timeout))
    client = treq.client.HTTPClient(agent)
    response = await client.post(url, data=report_gz, headers={b"Content-Type": [b"application/tlsrpt+gzip"]},
                                 allow_redirects=False, timeout=timeout, unbuffered=True)
    size = [0]

    def discard(data):
        size[0] += len(data)
        if size[0] > 64 * 1024:
            raise ValueError("response body larger than 64 KB")

    await collect_within(reactor, response, discard, deadline)
    return response.code


__all__ = ["build_report", "compose_message", "destinations", "parse_record", "post_report"]
