-- moxtw account index, schema version 1.
-- One database per account (data/accounts/<name>/index.db). Message files live in
-- maildir/cur/<shard>/<message id>, are written once and never change; every other bit of
-- state lives here.

-- Account-wide counters. Exactly one row.
CREATE TABLE account_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    modseq INTEGER NOT NULL,              -- last modseq handed out (RFC 7162), account-wide
    next_uidvalidity INTEGER NOT NULL,    -- next UIDVALIDITY for a new mailbox (RFC 9051 2.3.1.1)
    quota_used INTEGER NOT NULL DEFAULT 0,-- sum of sizes of all messages, for quota checks
    created INTEGER NOT NULL              -- unix time
);

-- Derived password secrets (SCRAM keys, CRAM-MD5 states), never the password. One row.
CREATE TABLE password (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    credentials TEXT NOT NULL,            -- JSON, see moxtw.sasl.credentials
    changed INTEGER NOT NULL
);

CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,            -- "/"-separated hierarchy, NFC UTF-8; "Inbox" spelled so
    special_use TEXT,                     -- RFC 6154 attribute: \Sent, \Drafts, \Trash, \Archive, \Junk
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    modseq INTEGER NOT NULL,              -- highest modseq of any change in this mailbox
    createseq INTEGER NOT NULL,           -- modseq at which the mailbox was created
    total INTEGER NOT NULL DEFAULT 0,     -- counts kept in the same transaction as every change
    unseen INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    keywords TEXT NOT NULL DEFAULT '[]'   -- JSON: keywords ever set in this mailbox (IMAP FLAGS response)
);

CREATE TABLE subscription (
    name TEXT PRIMARY KEY                 -- may name a mailbox that does not exist (RFC 9051 6.3.7)
);

CREATE TABLE message (
    id INTEGER PRIMARY KEY AUTOINCREMENT, -- also the file name: maildir/cur/<id // 1000>/<id>
    mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    createseq INTEGER NOT NULL,
    -- System flags (RFC 9051 2.3.2) as columns, so searches use the index; keywords as JSON.
    seen INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    flagged INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    draft INTEGER NOT NULL DEFAULT 0,
    keywords TEXT NOT NULL DEFAULT '[]',  -- lower-cased, sorted JSON list ($junk, $notjunk, $forwarded, ...)
    received INTEGER NOT NULL,            -- INTERNALDATE, unix seconds
    received_tz INTEGER NOT NULL DEFAULT 0, -- its zone offset in minutes
    size INTEGER NOT NULL,                -- RFC822.SIZE: bytes of the stored file
    -- Parsed once at delivery (moxtw.message), cached for IMAP and webmail.
    message_id TEXT NOT NULL DEFAULT '',
    in_reply_to TEXT NOT NULL DEFAULT '[]',
    refs TEXT NOT NULL DEFAULT '[]',
    subject TEXT NOT NULL DEFAULT '',
    base_subject TEXT NOT NULL DEFAULT '',
    sent INTEGER,                         -- Date: header, unix seconds, NULL when absent
    from_address TEXT NOT NULL DEFAULT '',-- first From address, localpart@domain
    list_id TEXT NOT NULL DEFAULT '',
    envelope TEXT NOT NULL,               -- JSON, IMAP ENVELOPE
    bodystructure TEXT NOT NULL,          -- JSON, IMAP BODYSTRUCTURE (extended)
    part TEXT NOT NULL,                   -- JSON, MIME tree with offsets
    preview TEXT NOT NULL DEFAULT '',     -- RFC 8970
    -- Threading (moxtw.store.threading).
    thread_id INTEGER NOT NULL DEFAULT 0, -- id of the thread's root message
    thread_parent_ids TEXT NOT NULL DEFAULT '[]', -- JSON: ids from root to direct parent
    thread_missing_link INTEGER NOT NULL DEFAULT 0,
    thread_muted INTEGER NOT NULL DEFAULT 0,
    thread_collapsed INTEGER NOT NULL DEFAULT 0,
    -- Junk filtering: what the classifier said and what it was trained with.
    junk_score REAL,                      -- probability from the Bayesian filter at delivery
    trained_junk INTEGER,                 -- NULL: not trained; 0: trained as ham; 1: as spam
    is_reject INTEGER NOT NULL DEFAULT 0, -- delivered to the Rejects mailbox
    is_forward INTEGER NOT NULL DEFAULT 0,
    is_mailing_list INTEGER NOT NULL DEFAULT 0,
    dsn INTEGER NOT NULL DEFAULT 0,       -- a delivery status notification
    -- Delivery facts, for sender reputation. NULL/'' for appended messages.
    remote_ip TEXT NOT NULL DEFAULT '',
    remote_ip_masked1 TEXT NOT NULL DEFAULT '', -- /32 IPv4, /64 IPv6
    remote_ip_masked2 TEXT NOT NULL DEFAULT '', -- /26, /48
    remote_ip_masked3 TEXT NOT NULL DEFAULT '', -- /21, /32
    ehlo_domain TEXT NOT NULL DEFAULT '',
    mailfrom TEXT NOT NULL DEFAULT '',
    mailfrom_localpart TEXT NOT NULL DEFAULT '',
    mailfrom_domain TEXT NOT NULL DEFAULT '',
    rcptto TEXT NOT NULL DEFAULT '',
    msgfrom_localpart TEXT NOT NULL DEFAULT '',
    msgfrom_domain TEXT NOT NULL DEFAULT '',
    msgfrom_org_domain TEXT NOT NULL DEFAULT '',
    ehlo_validated INTEGER NOT NULL DEFAULT 0,
    mailfrom_validated INTEGER NOT NULL DEFAULT 0,
    msgfrom_validated INTEGER NOT NULL DEFAULT 0,
    spf_result TEXT NOT NULL DEFAULT '',
    dkim_domains TEXT NOT NULL DEFAULT '[]',  -- JSON: domains of valid DKIM signatures
    dmarc_result TEXT NOT NULL DEFAULT '',
    iprev_result TEXT NOT NULL DEFAULT '',
    tls_version TEXT NOT NULL DEFAULT '',
    tls_cipher TEXT NOT NULL DEFAULT '',
    requiretls INTEGER NOT NULL DEFAULT 0,    -- RFC 8689
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX message_mailbox_modseq ON message (mailbox_id, modseq);
CREATE INDEX message_message_id ON message (message_id);
CREATE INDEX message_thread ON message (thread_id);
CREATE INDEX message_base_subject ON message (base_subject, received);
CREATE INDEX message_received ON message (mailbox_id, received);
CREATE INDEX message_msgfrom ON message (msgfrom_domain, msgfrom_localpart);
CREATE INDEX message_mailfrom ON message (mailfrom_domain);
CREATE INDEX message_remote_ip ON message (remote_ip_masked1);

-- Expunged UIDs, for QRESYNC VANISHED (RFC 7162 3.2.10).
CREATE TABLE expunged (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
