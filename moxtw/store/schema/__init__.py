"""Versioned SQLite schema of an account's index (``accounts/<name>/index.db``).

The ``NNN_name.sql`` files here follow the rules of ``moxtw.db.schema``; versions 2 and 5
also have Python steps (``moxtw.store.account``: filling the full-text index).
"""

from moxtw.db.schema import package_api

SchemaError, connect, fsync_dir, migrations, LATEST, upgrade = package_api(__name__)
