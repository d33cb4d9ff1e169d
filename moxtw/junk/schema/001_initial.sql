-- Word counts of the Bayesian junk filter: in how many trained ham and spam messages
-- each word (or n-gram, words joined by a space) occurred. Rows whose counts both reach
-- zero are deleted.
CREATE TABLE word (
    word TEXT PRIMARY KEY,
    ham INTEGER NOT NULL DEFAULT 0 CHECK (ham >= 0),
    spam INTEGER NOT NULL DEFAULT 0 CHECK (spam >= 0)
) WITHOUT ROWID;

-- The number of ham and spam messages trained: one row.
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ham INTEGER NOT NULL CHECK (ham >= 0),
    spam INTEGER NOT NULL CHECK (spam >= 0)
);

INSERT INTO totals (id, ham, spam) VALUES (1, 0, 0);
