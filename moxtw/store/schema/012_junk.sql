-- Schema version 12: junk filtering (moxtw.junk).
--
-- junkclass: 1 for a message with the $junk keyword, 0 for $notjunk, NULL for neither
-- ($junk wins when both are set). Keywords are a sorted JSON list of lower-cased
-- strings, so the quoted keyword is an exact token.
ALTER TABLE message ADD COLUMN junkclass INTEGER GENERATED ALWAYS AS (
    CASE WHEN instr(keywords, '"$junk"') > 0 THEN 1
         WHEN instr(keywords, '"$notjunk"') > 0 THEN 0 END) VIRTUAL;

-- The evidence of classified messages for the reputation analysis at delivery
-- (moxtw.junk.reputation), kept by the triggers below from every insert, flag change,
-- move and removal: one row per (message, kind of evidence). Each question the analysis
-- asks ("the last 20 classified messages from this From domain in two years") is one
-- range of the index, so its cost does not grow with the account. Messages copied into
-- Rejects (is_reject) count only once they are moved out.
--   kind: from1/from0 (From address, DMARC-validated or not), fromdom1/fromdom0 (its
--   domain), orgdom1/orgdom0 (its organisational domain), dkim (each verified DKIM
--   domain), mfrom (validated MAIL FROM), mfromdom (its domain), ehlo (validated EHLO),
--   ip1/ip2/ip3 (remote IP masked /32 /26 /21, or /64 /48 /32).
CREATE TABLE reputation (
    msg_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    received INTEGER NOT NULL,
    junk INTEGER NOT NULL,
    localpart TEXT NOT NULL DEFAULT ''
);
CREATE INDEX reputation_lookup ON reputation (kind, key, received);
CREATE INDEX reputation_msg ON reputation (msg_id);

-- The evidence of each message, as rows for the reputation table; the triggers and the
-- upgrade below insert from it (its conditions are pushed into each branch, so one
-- message's rows are found by its primary key).
CREATE VIEW reputation_evidence AS
    SELECT id AS msg_id, 'from' || msgfrom_validated AS kind, msgfrom_localpart || '@' || msgfrom_domain AS key,
           received, junkclass AS junk, '' AS localpart
        FROM message WHERE msgfrom_domain != ''
    UNION ALL SELECT id, 'fromdom' || msgfrom_validated, msgfrom_domain, received, junkclass, msgfrom_localpart
        FROM message WHERE msgfrom_domain != ''
    UNION ALL SELECT id, 'orgdom' || msgfrom_validated, msgfrom_org_domain, received, junkclass, msgfrom_localpart
        FROM message WHERE msgfrom_org_domain != ''
    UNION ALL SELECT m.id, 'dkim', j.value, m.received, m.junkclass, ''
        FROM message m, json_each(m.dkim_domains) j WHERE NOT m.is_forward
    UNION ALL SELECT id, 'mfrom', mailfrom_localpart || '@' || mailfrom_domain, received, junkclass, ''
        FROM message WHERE mailfrom_validated AND mailfrom_domain != '' AND NOT is_forward
    UNION ALL SELECT id, 'mfromdom', mailfrom_domain, received, junkclass, ''
        FROM message WHERE mailfrom_validated AND mailfrom_domain != '' AND NOT is_forward
    UNION ALL SELECT id, 'ehlo', ehlo_domain, received, junkclass, ''
        FROM message WHERE ehlo_validated AND ehlo_domain != '' AND NOT is_forward
    UNION ALL SELECT id, 'ip1', remote_ip_masked1, received, junkclass, ''
        FROM message WHERE remote_ip_masked1 != '' AND NOT is_forward
    UNION ALL SELECT id, 'ip2', remote_ip_masked2, received, junkclass, ''
        FROM message WHERE remote_ip_masked2 != '' AND NOT is_forward
    UNION ALL SELECT id, 'ip3', remote_ip_masked3, received, junkclass, ''
        FROM message WHERE remote_ip_masked3 != '' AND NOT is_forward;

CREATE TRIGGER reputation_insert AFTER INSERT ON message
WHEN NEW.junkclass IS NOT NULL AND NEW.is_reject = 0 AND NEW.remote_ip != ''
BEGIN INSERT INTO reputation SELECT * FROM reputation_evidence WHERE msg_id = NEW.id; END;

CREATE TRIGGER reputation_update AFTER UPDATE OF keywords, is_reject ON message
WHEN OLD.junkclass IS NOT NEW.junkclass OR OLD.is_reject != NEW.is_reject
BEGIN DELETE FROM reputation WHERE msg_id = NEW.id; INSERT INTO reputation SELECT * FROM reputation_evidence
    WHERE msg_id = NEW.id AND NEW.junkclass IS NOT NULL AND NEW.is_reject = 0 AND NEW.remote_ip != ''; END;

CREATE TRIGGER reputation_delete AFTER DELETE ON message
BEGIN DELETE FROM reputation WHERE msg_id = OLD.id; END;

-- Messages whose classification differs from what the Bayesian filter was trained with
-- (trained_junk), for the trainer to pick up after the commit; kept by triggers too.
-- Copies into Rejects are never trained (their verdict is the filter's, not the user's).
CREATE TABLE junk_train_pending (msg_id INTEGER PRIMARY KEY);

CREATE TRIGGER junk_train_insert AFTER INSERT ON message
WHEN NEW.junkclass IS NOT NULL AND NEW.is_reject = 0
BEGIN INSERT OR IGNORE INTO junk_train_pending (msg_id) VALUES (NEW.id); END;

CREATE TRIGGER junk_train_update AFTER UPDATE OF keywords, is_reject ON message
WHEN NEW.is_reject = 0 AND NEW.junkclass IS NOT NEW.trained_junk
BEGIN INSERT OR IGNORE INTO junk_train_pending (msg_id) VALUES (NEW.id); END;

CREATE TRIGGER junk_train_delete AFTER DELETE ON message
BEGIN DELETE FROM junk_train_pending WHERE msg_id = OLD.id; END;

-- Recipients of submitted messages by domain and organisational domain, for "have we
-- written to this domain" (the address itself: outgoing_recipient). Rows from before
-- this version have no organisational domain.
ALTER TABLE outgoing ADD COLUMN recipient_domain TEXT GENERATED ALWAYS AS (
    substr(recipient, instr(recipient, '@') + 1)) VIRTUAL;
ALTER TABLE outgoing ADD COLUMN recipient_org_domain TEXT NOT NULL DEFAULT '';
CREATE INDEX outgoing_recipient_domain ON outgoing (recipient_domain, submitted);
CREATE INDEX outgoing_recipient_org_domain ON outgoing (recipient_org_domain, submitted);

-- Rejects: a rejected message is stored once per Message-ID and sender.
CREATE INDEX message_reject_dedupe ON message (mailbox_id, message_id, mailfrom) WHERE is_reject = 1;

-- Existing classified messages: their evidence and training.
INSERT INTO reputation SELECT e.* FROM reputation_evidence e JOIN message m ON m.id = e.msg_id
    WHERE m.junkclass IS NOT NULL AND m.is_reject = 0 AND m.remote_ip != '';
INSERT INTO junk_train_pending (msg_id) SELECT id FROM message WHERE junkclass IS NOT NULL AND is_reject = 0;
