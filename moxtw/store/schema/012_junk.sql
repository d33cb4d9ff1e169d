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

CREATE TRIGGER reputation_insert AFTER INSERT ON message
WHEN NEW.junkclass IS NOT NULL AND NEW.is_reject = 0 AND NEW.remote_ip != ''
BEGIN
    INSERT INTO reputation (msg_id, kind, key, received, junk, localpart)
    SELECT NEW.id, kind, key, NEW.received, NEW.junkclass, lp FROM (
        SELECT 'from' || NEW.msgfrom_validated AS kind,
               NEW.msgfrom_localpart || '@' || NEW.msgfrom_domain AS key, '' AS lp
            WHERE NEW.msgfrom_domain != ''
        UNION ALL SELECT 'fromdom' || NEW.msgfrom_validated, NEW.msgfrom_domain, NEW.msgfrom_localpart
            WHERE NEW.msgfrom_domain != ''
        UNION ALL SELECT 'orgdom' || NEW.msgfrom_validated, NEW.msgfrom_org_domain, NEW.msgfrom_localpart
            WHERE NEW.msgfrom_org_domain != ''
        UNION ALL SELECT 'dkim', value, '' FROM json_each(NEW.dkim_domains) WHERE NOT NEW.is_forward
        UNION ALL SELECT 'mfrom', NEW.mailfrom_localpart || '@' || NEW.mailfrom_domain, ''
            WHERE NEW.mailfrom_validated AND NEW.mailfrom_domain != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'mfromdom', NEW.mailfrom_domain, ''
            WHERE NEW.mailfrom_validated AND NEW.mailfrom_domain != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ehlo', NEW.ehlo_domain, '' WHERE NEW.ehlo_validated AND NEW.ehlo_domain != ''
            AND NOT NEW.is_forward
        UNION ALL SELECT 'ip1', NEW.remote_ip_masked1, '' WHERE NEW.remote_ip_masked1 != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ip2', NEW.remote_ip_masked2, '' WHERE NEW.remote_ip_masked2 != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ip3', NEW.remote_ip_masked3, '' WHERE NEW.remote_ip_masked3 != '' AND NOT NEW.is_forward
    ); END;

CREATE TRIGGER reputation_update AFTER UPDATE OF keywords, is_reject ON message
WHEN OLD.junkclass IS NOT NEW.junkclass OR OLD.is_reject != NEW.is_reject
BEGIN
    DELETE FROM reputation WHERE msg_id = NEW.id; INSERT INTO reputation (msg_id, kind, key, received, junk, localpart)
    SELECT NEW.id, kind, key, NEW.received, NEW.junkclass, lp FROM (
        SELECT 'from' || NEW.msgfrom_validated AS kind,
               NEW.msgfrom_localpart || '@' || NEW.msgfrom_domain AS key, '' AS lp
            WHERE NEW.msgfrom_domain != ''
        UNION ALL SELECT 'fromdom' || NEW.msgfrom_validated, NEW.msgfrom_domain, NEW.msgfrom_localpart
            WHERE NEW.msgfrom_domain != ''
        UNION ALL SELECT 'orgdom' || NEW.msgfrom_validated, NEW.msgfrom_org_domain, NEW.msgfrom_localpart
            WHERE NEW.msgfrom_org_domain != ''
        UNION ALL SELECT 'dkim', value, '' FROM json_each(NEW.dkim_domains) WHERE NOT NEW.is_forward
        UNION ALL SELECT 'mfrom', NEW.mailfrom_localpart || '@' || NEW.mailfrom_domain, ''
            WHERE NEW.mailfrom_validated AND NEW.mailfrom_domain != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'mfromdom', NEW.mailfrom_domain, ''
            WHERE NEW.mailfrom_validated AND NEW.mailfrom_domain != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ehlo', NEW.ehlo_domain, '' WHERE NEW.ehlo_validated AND NEW.ehlo_domain != ''
            AND NOT NEW.is_forward
        UNION ALL SELECT 'ip1', NEW.remote_ip_masked1, '' WHERE NEW.remote_ip_masked1 != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ip2', NEW.remote_ip_masked2, '' WHERE NEW.remote_ip_masked2 != '' AND NOT NEW.is_forward
        UNION ALL SELECT 'ip3', NEW.remote_ip_masked3, '' WHERE NEW.remote_ip_masked3 != '' AND NOT NEW.is_forward
    ) WHERE NEW.junkclass IS NOT NULL AND NEW.is_reject = 0 AND NEW.remote_ip != ''; END;

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

-- Existing classified messages: their evidence and training, by taking their keywords
-- away and giving them back (the update triggers do the rest; modseqs are unchanged, as
-- the flags are).
CREATE TEMP TABLE junk_upgrade (id INTEGER PRIMARY KEY, keywords TEXT NOT NULL);
INSERT INTO junk_upgrade (id, keywords) SELECT id, keywords FROM message WHERE junkclass IS NOT NULL;
UPDATE message SET keywords = '[]' WHERE id IN (SELECT id FROM junk_upgrade);
UPDATE message SET keywords = (SELECT keywords FROM junk_upgrade WHERE junk_upgrade.id = message.id)
    WHERE id IN (SELECT id FROM junk_upgrade);
DROP TABLE junk_upgrade;
