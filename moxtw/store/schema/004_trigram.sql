-- Schema version 4: a trigram index over the full-text rows, for substring searches
-- (IMAP SEARCH BODY is a substring match, RFC 9051 6.4.4; words alone cannot narrow
-- "tmp" in "attempt"). Contentless: the text itself is kept once, in message_text, and
-- rows are removed with the 'delete' command and that text.
CREATE VIRTUAL TABLE message_trigram USING fts5 (text, content = '', tokenize = 'trigram');
INSERT INTO message_trigram (rowid, text) SELECT rowid, text FROM message_text;
