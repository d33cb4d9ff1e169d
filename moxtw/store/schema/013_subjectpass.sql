-- Schema version 13: the account's key for subject pass tokens (moxtw.junk.subjectpass),
-- made at first use; the junk analysis's reason on each message.
CREATE TABLE subjectpass_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);

-- Why the junk analysis let a message in (moxtw.junk.analysis: the reputation method,
-- junk-content, subjectpass, ...), next to junk_score; '' when not analysed.
ALTER TABLE message ADD COLUMN junk_reason TEXT NOT NULL DEFAULT '';
