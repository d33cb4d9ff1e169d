-- Schema version 5: the texts IMAP SEARCH compares, the ENVELOPE as FETCH sends it, and
-- an index answering FETCH of flags. Rows of a version-4 database are filled by the
-- upgrade step in moxtw.store.account (search_text_hook): it renders the envelopes and
-- reads the message files.

-- FETCH ENVELOPE as sent (moxtw.message.imap.format_envelope) when it is ASCII, the same
-- for every session; NULL: rendered from the envelope column.
ALTER TABLE message ADD COLUMN envelope_imap BLOB;
-- 1 when message_search holds the message's texts; 0 for messages larger than
-- moxtw.message.searchtext.MAX_INDEXED_SIZE, which SEARCH reads from their files.
ALTER TABLE message ADD COLUMN text_indexed INTEGER NOT NULL DEFAULT 0;
-- The few messages without indexed text, which every text search must consider.
CREATE INDEX message_unindexed ON message (mailbox_id, uid) WHERE text_indexed = 0;

-- The header and body text of moxtw.message.searchtext (lower-cased, decoded), rowid =
-- message.id. The trigram index narrows SEARCH BODY/TEXT/HEADER (RFC 9051 6.4.4:
-- substrings) to messages having every trigram of the string, and the stored text then
-- answers them without the message file. Case is folded by moxtw.message.searchtext
-- (Python's), not by SQLite, so both sides fold alike, and white space and non-ASCII
-- strings narrow too. detail=none: the index records which messages have a trigram, not
-- where (no phrase queries), at an eighth of the size of a full one.
CREATE VIRTUAL TABLE message_search USING fts5 (
    header, body, tokenize = 'trigram case_sensitive 1', detail = none
);

-- message_search replaces the ASCII-only trigram index of version 4.
DROP TABLE message_trigram;

-- FETCH 1:* (FLAGS) / (UID FLAGS MODSEQ), how clients synchronise flags: answered from
-- this index alone, without reading the (wide) message rows.
CREATE INDEX message_flags ON message (
    mailbox_id, uid, modseq, seen, answered, flagged, deleted, draft, keywords
);
