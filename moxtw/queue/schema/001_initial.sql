-- The outgoing queue: one row per recipient of a submitted message or DSN.
-- Times are Unix seconds (REAL, UTC). Booleans are 0/1.

CREATE TABLE msg (
    -- Never reused (AUTOINCREMENT): DSNs, webhooks and logs refer to entries by id.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- id of the first recipient of the submission; all its rows share the message file
    -- data/queue/<base_id>, removed after the last of them is gone.
    base_id INTEGER NOT NULL,
    queued REAL NOT NULL,
    -- Account that submitted the message; '' for messages moxtw generates (DSNs, reports).
    sender_account TEXT NOT NULL DEFAULT '',
    -- MAIL FROM; both '' for the null reverse-path (RFC 5321 4.5.5, DSNs).
    sender_localpart TEXT NOT NULL,
    sender_domain TEXT NOT NULL,  -- lower case, U-labels
    recipient_localpart TEXT NOT NULL,
    recipient_domain TEXT NOT NULL,  -- lower case, U-labels
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 0,  -- 0: the default of the retry schedule
    -- JSON object: host name -> [IP addresses] dialed in earlier attempts.
    dialed_ips TEXT NOT NULL DEFAULT '{}',
    last_attempt REAL,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    hold INTEGER NOT NULL DEFAULT 0,
    -- Size of what is sent: msg_prefix plus the message file.
    size INTEGER NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    -- Header lines prepended at delivery (e.g. DKIM-Signature, Received), not in the file.
    msg_prefix BLOB NOT NULL DEFAULT x'',
    -- For DSNs: the message variant with UTF-8 headers, used when the next hop
    -- announces SMTPUTF8 (RFC 6533); the file holds the ASCII variant.
    dsn_utf8 BLOB,
    has_8bit INTEGER NOT NULL DEFAULT 0,
    smtputf8 INTEGER NOT NULL DEFAULT 0,
    is_dmarc_report INTEGER NOT NULL DEFAULT 0,
    is_tls_report INTEGER NOT NULL DEFAULT 0,
    is_dsn INTEGER NOT NULL DEFAULT 0,
    -- RFC 8689 REQUIRETLS: NULL not specified, 1 required, 0 "TLS-Required: No".
    require_tls INTEGER,
    -- RFC 4865 FUTURERELEASE as requested ("until;<date-time>" or "for;<seconds>"), '' none.
    futurerelease_request TEXT NOT NULL DEFAULT '',
    -- RFC 3461 DSN parameters: RET (FULL or HDRS) and ENVID of the MAIL command,
    -- NOTIFY (comma-separated: SUCCESS,FAILURE,DELAY or NEVER) and ORCPT of the RCPT.
    dsn_ret TEXT NOT NULL DEFAULT '',
    dsn_envid TEXT NOT NULL DEFAULT '',
    dsn_notify TEXT NOT NULL DEFAULT '',
    dsn_orcpt TEXT NOT NULL DEFAULT '',
    -- Configured transport name; '' is direct delivery via MX.
    transport TEXT NOT NULL DEFAULT '',
    -- JSON list of attempt results: {start, duration, success, permanent, code, secode, error}.
    results TEXT NOT NULL DEFAULT '[]'
);

CREATE INDEX msg_next_attempt ON msg (hold, next_attempt);
CREATE INDEX msg_base_id ON msg (base_id);
CREATE INDEX msg_sender_account ON msg (sender_account);
CREATE INDEX msg_recipient_domain ON msg (recipient_domain);
