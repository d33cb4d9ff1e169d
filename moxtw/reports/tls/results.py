"""Results of our outgoing TLS connections, for the TLS reports we send (RFC 8460).

Outgoing delivery (``moxtw.queue.outbound``) describes every connection attempt under a
policy question in a :class:`moxtw.tls.policyclient.TLSAttempt`; :func:`results_for`
makes :class:`TLSResult` values of it: which policy applied (MTA-STS "sts", DANE
"tlsa", or "no-policy-found") and whether TLS was negotiated as the policy demands, with
an RFC 8460 4.3 result type when not. :func:`results_for_attempt` gives the results of
one attempt: one for the recipient domain, and with DANE one more for the MX host
(reports to the MX host's own ``_smtp._tls`` record, as mox sends them). The received
reports' database (``data/tlsrpt.db``, :class:`moxtw.reports.tls.received.ReportDB`)
aggregates them per policy domain and UTC day; :mod:`moxtw.reports.tls.outgoing` turns
ended days into reports.
"""

import json
from dataclasses import dataclass

MAX_FAILURE_DETAILS = 100  # distinct failure-details kept per policy domain and day
MAX_TEXT = 300  # characters of additional-information


@dataclass(frozen=True)
class TLSResult:
    policy_domain: str
    is_host: bool
    policy: dict  # RFC 8460 4.4 policy object
    ok: bool
    result_type: str = ""
    mx_host: str = ""
    ip: str = ""
    detail: str = ""

    def failure_details(self):
        out = {"result-type": self.result_type or "validation-failure"}
        if self.ip:
            out["receiving-ip"] = self.ip
        if self.mx_host:
            out["receiving-mx-hostname"] = self.mx_host
        if self.detail:
            out["additional-information"] = self.detail[:MAX_TEXT]
        return out


def sts_policy(domain, policy):
    """The report's policy object for a recipient domain: its MTA-STS policy (RFC 8460
    4.4: the policy's lines as policy-string, its MX patterns as mx-host), or
    no-policy-found."""
    if policy is None:
        return {"policy-type": "no-policy-found", "policy-domain": domain}
    lines = [line.strip() for line in policy.text.replace("\r\n", "\n").split("\n") if line.strip()]
    return {"policy-type": "sts", "policy-string": lines, "policy-domain": domain,
            "mx-host": list(policy.mx)}


def tlsa_policy(dane_host):
    """The report's policy object for an MX host's TLSA records (RFC 8460 4.4)."""
    strings = [f"{r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in dane_host.records]
    return {"policy-type": "tlsa", "policy-string": strings, "policy-domain": dane_host.base}


def results_for_attempt(domain, policy, mx_host, ip, ok, result_type="", detail="", dane_host=None,
                        dane_base=None):
    """The TLSResults of one connection attempt to ``mx_host`` for recipient ``domain``
    under MTA-STS ``policy`` (a FetchedPolicy or None); with ``dane_host`` (or only its
    ``dane_base`` when the TLSA lookup itself failed) also the MX host's result."""
    out = [TLSResult(domain, False, sts_policy(domain, policy), ok, result_type, mx_host, ip, detail)]
    if dane_host is not None and dane_host.records:
        out.append(TLSResult(dane_host.base, True, tlsa_policy(dane_host), ok, result_type, mx_host, ip, detail))
    elif dane_base:
        out.append(TLSResult(dane_base, True, {"policy-type": "tlsa", "policy-domain": dane_base}, ok,
                             result_type, mx_host, ip, detail))
    return out


def results_for(attempt):
    """The TLSResults of a :class:`moxtw.tls.policyclient.TLSAttempt`."""
    a = attempt
    return results_for_attempt(a.domain, a.policy, a.mx_host, a.ip, a.ok, a.result_type, a.detail,
                               dane_host=a.dane_host, dane_base=a.dane_base or None)


def add_results(conn, results, day, now):
    """Fold ``results`` into the day's rows (in the caller's write transaction)."""
    for r in results:
        policy = json.dumps(r.policy, sort_keys=True)
        row = conn.execute(
            "SELECT id, failure_details FROM result WHERE policy_domain = ? AND day = ? AND is_host = ?"
            " AND policy = ?", (r.policy_domain, day, int(r.is_host), policy)).fetchone()
        if row is None:
            details = [] if r.ok else [dict(r.failure_details(), **{"failed-session-count": 1})]
            conn.execute(
                "INSERT INTO result (policy_domain, day, is_host, policy, success, failure, failure_details,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (r.policy_domain, day, int(r.is_host), policy, int(r.ok), int(not r.ok), json.dumps(details), now))
            continue
        if r.ok:
            conn.execute("UPDATE result SET success = success + 1, updated = ? WHERE id = ?", (now, row["id"]))
            continue
        details = json.loads(row["failure_details"])
        new = r.failure_details()
        for d in details:
            if {k: v for k, v in d.items() if k != "failed-session-count"} == new:
                d["failed-session-count"] += 1
                break
        else:
            if len(details) < MAX_FAILURE_DETAILS:
                details.append(dict(new, **{"failed-session-count": 1}))
        conn.execute("UPDATE result SET failure = failure + 1, failure_details = ?, updated = ? WHERE id = ?",
                     (json.dumps(details), now, row["id"]))


__all__ = ["TLSResult", "add_results", "results_for", "results_for_attempt", "sts_policy", "tlsa_policy"]
