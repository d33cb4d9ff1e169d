"""Versioned SQLite schema of the web login sessions (``data/auth.db``).

Same rules as ``moxtw.db.schema``: ``NNN_name.sql`` files upgrade from version NNN-1 to
NNN, opening the database applies the missing ones, released files are never edited.
"""

from moxtw.db.schema import package_api

SchemaError, connect, fsync_dir, migrations, LATEST, upgrade = package_api(__name__)
