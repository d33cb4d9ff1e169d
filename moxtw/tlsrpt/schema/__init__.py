"""Versioned SQLite schema of the received TLS reports (``data/tlsrpt.db``).

Same rules as ``moxtw.store.schema``: ``NNN_name.sql`` files upgrade from version NNN-1 to
NNN, opening the database applies the missing ones, released files are never edited.
"""

from moxtw.store import schema as _schema

SchemaError = _schema.SchemaError
connect = _schema.connect
fsync_dir = _schema.fsync_dir


def migrations():
    """Return [(version, sql_text)] for the schema files, in order."""
    return _schema.package_migrations(__name__)


LATEST = len(migrations())


def upgrade(conn, target=None, hooks=None):
    """Bring the database to ``target`` (default: latest); returns the version before."""
    return _schema.upgrade_package(conn, __name__, target, hooks)
