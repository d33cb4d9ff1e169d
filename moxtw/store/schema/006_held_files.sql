-- Schema version 6: files of expunged messages kept while IMAP sessions that have not
-- been told of the expunge may still FETCH them (RFC 9051 7.5.1: a session can fetch
-- every message it has a sequence number for). moxtw.store.hold removes the file and its
-- row here once no session holds it; rows left by a crash are removed, with their files,
-- when the account is opened.
CREATE TABLE held_file (
    id INTEGER PRIMARY KEY      -- message.id of the removed row: maildir/cur/<id // 1000>/<id>
);
