-- Received SMTP TLS reports (RFC 8460). Times are Unix seconds (UTC).

CREATE TABLE report (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The domain the report is for (normally one of the policy-domain values), lower case.
    domain TEXT NOT NULL,
    -- The address the report came from (RFC 5322 From), as given by the caller.
    from_address TEXT NOT NULL,
    -- organization-name and report-id: a reporter's resent report is stored once.
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    range_begin INTEGER NOT NULL,  -- date-range, start-datetime and end-datetime
    range_end INTEGER NOT NULL,
    received REAL NOT NULL,
    -- The parsed report as JSON (RFC 8460 JSON, moxtw.tlsrpt.parse.Report.to_json).
    report TEXT NOT NULL
);

CREATE UNIQUE INDEX report_origin ON report (org_name, report_id, domain);
CREATE INDEX report_domain_end ON report (domain, range_end);
CREATE INDEX report_end ON report (range_end);
