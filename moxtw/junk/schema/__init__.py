"""Versioned SQLite schema of an account's Bayesian word database
(``accounts/<name>/junkfilter.db``, ``moxtw.junk.bayes``).

The ``NNN_name.sql`` files here follow the rules of ``moxtw.db.schema``.
"""

from moxtw.db.schema import package_api

SchemaError, connect, fsync_dir, migrations, LATEST, upgrade = package_api(__name__)
