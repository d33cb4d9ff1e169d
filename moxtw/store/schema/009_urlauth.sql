-- Schema version 9: mailbox access keys for IMAP URLAUTH (RFC 4467 2.2 and 6). One random
-- key per mailbox, made by the first GENURLAUTH for it; the authorization token of a URL is
-- an HMAC of the URL under this key, so RESETKEY (deleting the row) voids every URL issued
-- for the mailbox. Deleting a mailbox deletes its key (moxtw.store.account); renaming keeps
-- it (the id stays, but URLs name the old mailbox name and no longer resolve).
CREATE TABLE urlauth_key (
    mailbox_id INTEGER PRIMARY KEY,
    key BLOB NOT NULL
);
