-- Schema version 13: the account's key for subject pass tokens (moxtw.junk.subjectpass),
-- made at first use.
CREATE TABLE subjectpass_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);
