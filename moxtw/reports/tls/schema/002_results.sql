-- Results of our outgoing TLS connections (RFC 8460), aggregated per policy domain and
-- UTC day, for the daily TLS reports we send. Times are Unix seconds (UTC).

CREATE TABLE result (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The policy domain: the recipient domain, or for DANE host results the MX host.
    policy_domain TEXT NOT NULL,
    day TEXT NOT NULL,             -- UTC date, YYYY-MM-DD
    is_host INTEGER NOT NULL,      -- 1: result for an MX host's DANE policy
    -- The report's policy object as JSON (policy-type, policy-string, policy-domain, mx-host).
    policy TEXT NOT NULL,
    success INTEGER NOT NULL DEFAULT 0,
    failure INTEGER NOT NULL DEFAULT 0,
    -- JSON list of failure-details objects with failed-session-count, at most 100.
    failure_details TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL
);

CREATE UNIQUE INDEX result_key ON result (policy_domain, day, is_host, policy);
CREATE INDEX result_day ON result (day);
