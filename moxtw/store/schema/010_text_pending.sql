-- Schema version 10: search texts indexed after the delivery is acknowledged. A large
-- message (moxtw.store.account.INDEX_LATER_SIZE) is committed with text_pending = 1 and
-- text_indexed = 0: no message_text or message_search rows yet, so SEARCH reads its file
-- (as for messages too large to index). The account's indexer then adds the rows and
-- clears the mark, one message at a time; marks left by a crash are picked up when the
-- account is opened. The partial index finds the pending ones without a scan.
ALTER TABLE message ADD COLUMN text_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX message_text_pending ON message (id) WHERE text_pending = 1;
