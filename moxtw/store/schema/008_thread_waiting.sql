-- Schema version 8: thread roots waiting for an ancestor. A message that referenced
-- message-ids (References, In-Reply-To) not in the account when it arrived starts a
-- thread of its own, marked "missing link"; it gets one row here per such message-id, so
-- a later delivery finds the roots its Message-ID completes by index (moxtw.store.msgthread)
-- instead of scanning every message with the same base subject. Rows go when the root is
-- attached or removed. Filled from the existing roots.
CREATE TABLE thread_waiting (
    message_id TEXT NOT NULL,
    msg_id INTEGER NOT NULL,
    PRIMARY KEY (message_id, msg_id)
) WITHOUT ROWID;
CREATE INDEX thread_waiting_msg ON thread_waiting (msg_id);
INSERT OR IGNORE INTO thread_waiting (message_id, msg_id)
    SELECT j.value, m.id FROM message m, json_each(CASE WHEN json_valid(m.refs) THEN m.refs ELSE '[]' END) j
    WHERE m.thread_missing_link = 1 AND m.thread_id = m.id AND j.value != '';
INSERT OR IGNORE INTO thread_waiting (message_id, msg_id)
    SELECT j.value, m.id FROM message m, json_each(CASE WHEN json_valid(m.in_reply_to) THEN m.in_reply_to ELSE '[]' END) j
    WHERE m.thread_missing_link = 1 AND m.thread_id = m.id AND j.value != '';
