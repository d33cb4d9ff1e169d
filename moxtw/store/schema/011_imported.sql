-- Schema version 11: what ``moxtw import`` brought in, by source (the path imported) and
-- key within it (a maildir file's unique name, an mbox message's offset). Rows are
-- written in the transaction that adds the messages, so an import resumed after an
-- interruption skips exactly what was committed: nothing is imported twice.
CREATE TABLE imported (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
