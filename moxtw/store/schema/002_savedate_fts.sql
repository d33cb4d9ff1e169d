-- Schema version 2: SAVEDATE (RFC 8514) and the full-text index.

-- When the message was saved into its current mailbox (set again on COPY and MOVE).
ALTER TABLE message ADD COLUMN saved INTEGER NOT NULL DEFAULT 0;
UPDATE message SET saved = received;

-- Decoded text of headers and text parts, one row per message, rowid = message.id.
-- Filled at delivery; rows for messages of a version-1 database are filled by the upgrade
-- step in moxtw.store.schema (it reads the message files).
CREATE VIRTUAL TABLE message_text USING fts5 (text, tokenize = 'unicode61 remove_diacritics 2');
