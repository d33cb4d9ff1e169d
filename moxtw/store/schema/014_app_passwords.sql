-- Schema version 14: app-specific passwords of the account (moxtw.apppasswords), for
-- IMAP and SMTP submission logins, never for the web login. Only derived secrets are
-- kept (the SCRAM-SHA-256 keys of moxtw.sasl.credentials, as for the account password);
-- lookup is the password's first group, which says nothing usable about the rest.
CREATE TABLE app_password (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    lookup TEXT NOT NULL,
    credentials TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX app_password_lookup ON app_password (lookup);
