-- Received DMARC aggregate reports (RFC 7489 7.2). Times are Unix seconds (UTC).

CREATE TABLE report (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The domain the report is for (normally policy_published/domain), lower case.
    domain TEXT NOT NULL,
    -- The address the report came from (RFC 5322 From), as given by the caller.
    from_address TEXT NOT NULL,
    -- report_metadata/org_name and report_id: a reporter's resent report is stored once.
    org_name TEXT NOT NULL,
    report_id TEXT NOT NULL,
    range_begin INTEGER NOT NULL,  -- report_metadata/date_range
    range_end INTEGER NOT NULL,
    received REAL NOT NULL,
    -- The parsed report as JSON (moxtw.dmarcrpt.parse.Feedback.to_json).
    report TEXT NOT NULL
);

CREATE UNIQUE INDEX report_origin ON report (org_name, report_id, domain);
CREATE INDEX report_domain_end ON report (domain, range_end);
CREATE INDEX report_end ON report (range_end);
