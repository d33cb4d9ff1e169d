-- DMARC evaluations of incoming messages, kept until they are sent as aggregate reports
-- (RFC 7489 7.2), and the suppression list of report destinations.
-- Times are Unix seconds (REAL, UTC).

CREATE TABLE evaluation (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Domain where the DMARC record was found (lower case, A-labels).
    policy_domain TEXT NOT NULL,
    evaluated REAL NOT NULL,
    -- Reporting interval from the record's ri, in hours: 1, 2, 3, 4, 6, 8, 12 or 24.
    interval_hours INTEGER NOT NULL,
    -- JSON list of the record's rua URIs (RFC 7489 6.3), as published.
    addresses TEXT NOT NULL,
    -- JSON object: policy_published (domain, adkim, aspf, p, sp, pct, fo).
    policy_published TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    disposition TEXT NOT NULL,  -- none, quarantine, reject
    dkim_aligned TEXT NOT NULL,  -- pass, fail
    spf_aligned TEXT NOT NULL,  -- pass, fail
    -- JSON list of [type, comment] policy override reasons.
    reasons TEXT NOT NULL DEFAULT '[]',
    envelope_to TEXT NOT NULL DEFAULT '',
    envelope_from TEXT NOT NULL DEFAULT '',
    header_from TEXT NOT NULL,
    -- JSON lists: [domain, selector, result, human_result] and [domain, scope, result].
    dkim_results TEXT NOT NULL DEFAULT '[]',
    spf_results TEXT NOT NULL DEFAULT '[]'
);

CREATE INDEX evaluation_domain_time ON evaluation (policy_domain, evaluated);

-- Report destinations that get no reports: an address (localpart@domain) or a domain
-- (then its subdomains too), lower case.
CREATE TABLE suppression (
    entry TEXT PRIMARY KEY,
    created REAL NOT NULL,
    until REAL,  -- NULL: until removed
    comment TEXT NOT NULL DEFAULT ''
);
