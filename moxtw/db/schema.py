"""Versioned SQLite schemas, for every database of moxtw (account indexes, the queue,
report and evaluation databases).

A database's schema lives in a package of its own (``moxtw.store.schema``,
``moxtw.queue.schema``, ...) holding ``NNN_name.sql`` files: each upgrades a database from
version NNN-1 to NNN. Opening a database applies the missing files in order inside one
transaction, runs the Python step registered for a version (if any), and records the
version in ``PRAGMA user_version``. Files are never edited once released; changes get a
new file. The schema package's ``__init__.py`` gets its API from :func:`package_api`.
"""

import os
import re
import sqlite3
import time
from importlib import resources

from moxtw import durable

_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
MEMORY = ":memory:"  # sqlite3's name for a database without a file


def package_migrations(package):
    """Return [(version, sql_text)] for the schema files of ``package``, in order.

    """
    out = []
    for entry in resources.files(package).iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    out.sort()
    for expect, (version, _) in enumerate(out, start=1):
        if version != expect:
            raise RuntimeError(f"schema files not contiguous at version {expect}")
    return out


class SchemaError(Exception):
    """The database is newer than this program, or an upgrade failed."""


def connect(path):
    """Open a database with the pragmas moxtw relies on (WAL, synchronous=FULL, foreign
    keys), creating the file private first."""
    if path != MEMORY and not os.path.exists(path):
        # SQLite would create it with the umask's mode (0644) and gives the -wal and
        # -shm files the database's mode: created private first (issue 10).
        durable.create_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    # Turning WAL on takes the database exclusively and does not wait on a busy one: two
    # first openers at once (deliveries beside the junk trainer) retry briefly.
    for attempt in range(200):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 199:
                conn.close()
                raise
            time.sleep(0.01)
    # Durability is promised to SMTP and IMAP clients: commit means on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def upgrade_package(conn, package, target=None, hooks=None):
    """Bring ``conn`` to ``target`` (default: the latest version of ``package``'s schema
    files). Returns the version before.

    ``hooks`` maps a version to ``fn(conn)`` run after that version's SQL, in the same
    transaction, for upgrades that need more than SQL.
    """
    steps = package_migrations(package)
    latest = len(steps)
    target = latest if target is None else target
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > latest:
        raise SchemaError(
            f"database schema version {current} is newer than this moxtw ({latest})"
        )
    if current >= target:
        return current
    conn.execute("BEGIN IMMEDIATE")
    # Another connection may have upgraded while we waited for the write lock.
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current >= target:
        conn.execute("COMMIT")
        return current
    try:
        for version, sql in steps:
            if current < version <= target:
                for stmt in _statements(sql):
                    conn.execute(stmt)
                if hooks and version in hooks:
                    hooks[version](conn)
                conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


def package_api(package):
    """The schema API of a database's schema package, for its ``__init__.py``:
    (SchemaError, connect, fsync_dir, migrations, LATEST, upgrade)."""

    def package_migrations_():
        """Return [(version, sql_text)] for the schema files, in order."""
        return package_migrations(package)

    def package_upgrade(conn, target=None, hooks=None):
        """Bring the database to ``target`` (default: latest); returns the version before."""
        return upgrade_package(conn, package, target, hooks)

    return (SchemaError, connect, fsync_dir, package_migrations_, len(package_migrations(package)),
            package_upgrade)


def _statements(sql):
    # sqlite3.executescript would commit our transaction; split on ";" at line ends instead.
    # Schema files keep one statement per ";"-terminated block and no ";" inside literals.
    buf = []
    for line in sql.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        buf.append(stripped)
        if stripped.endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                yield stmt
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        yield rest


fsync_dir = durable.fsync_dir
