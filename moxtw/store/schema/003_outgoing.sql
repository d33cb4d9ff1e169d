-- Schema version 3: recipients of submitted messages, for the account's daily limits
-- (MaxOutgoingMessagesPerDay, MaxFirstTimeRecipientsPerDay) and to tell first-time
-- recipients from known ones.
CREATE TABLE outgoing (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission TEXT NOT NULL,             -- one key per submitted message
    recipient TEXT NOT NULL,              -- lower-cased address
    submitted INTEGER NOT NULL,           -- unix time
    first_time INTEGER NOT NULL           -- no earlier message to this recipient
);
CREATE INDEX outgoing_recipient ON outgoing (recipient);
CREATE INDEX outgoing_submitted ON outgoing (submitted);
