-- Schema version 7: IMAP METADATA (RFC 5464) entries of the account's mailboxes and of
-- the server (mailbox_id 0). Entry names are kept lower case (RFC 5464 3.2: names are
-- case-insensitive); values are octets. Deleting a mailbox deletes its entries
-- (moxtw.store.account); renaming keeps them (the id stays).
CREATE TABLE metadata (
    mailbox_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, name)
);
