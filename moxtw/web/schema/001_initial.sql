-- Login sessions of the web interfaces. Times are Unix seconds.
CREATE TABLE session (
    -- SHA-256 of the cookie's token, hex: a copy of the database gives no usable cookie.
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- "account" or "admin"
    account TEXT NOT NULL,       -- account name ('' for admin)
    login TEXT NOT NULL,         -- what was typed to log in
    csrf TEXT NOT NULL,          -- token required on every state-changing request
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    expires REAL NOT NULL,
    remote_ip TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX session_account ON session (kind, account);
CREATE INDEX session_expires ON session (expires);
