-- MTA-STS policies of recipient domains (RFC 8461 5.1). Times are Unix seconds (UTC).

CREATE TABLE policy (
    domain TEXT PRIMARY KEY,       -- recipient domain, A-labels, lower case
    policy_id TEXT NOT NULL,       -- id of the _mta-sts TXT record it was fetched for
    mode TEXT NOT NULL,            -- enforce, testing or none
    mx TEXT NOT NULL,              -- JSON list of MX patterns
    max_age INTEGER NOT NULL,
    text TEXT NOT NULL,            -- the policy file as fetched
    inserted REAL NOT NULL,
    valid_end REAL NOT NULL,       -- fetched (or refreshed) + max_age
    last_update REAL NOT NULL,     -- last successful fetch
    last_use REAL NOT NULL         -- last delivery attempt that used it
);

CREATE INDEX policy_valid_end ON policy (valid_end);
