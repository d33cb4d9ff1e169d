"""moxtw.db: the shared database base, its schema machinery and worker threads, as the
queue, report and evaluation databases use them."""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from moxtw.db import Database, schema as dbschema
from moxtw.reports.dmarc import evalschema
from moxtw.queue import Queue
from moxtw.queue import schema as queue_schema
from moxtw.reports.received import ReportDB


class Scratch(Database):
    db_name = "scratch.db"
    schema = queue_schema
    thread_name = "scratch"


class DatabaseTests(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def test_open_write_read_close(self):
        db = Scratch(os.path.join(self.dir, "sub"), reactor=reactor)
        self.assertIs((yield db.open()), db)
        self.assertIs((yield db.open()), db)  # opening again is harmless
        yield db._write(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))

        def op(conn, ctx):
            conn.execute("INSERT INTO t VALUES (1)")
            ctx.after_commit.append(lambda: None)
            return "done"

        self.assertEqual((yield db._write_op(op)), "done")
        rows = yield db._read(lambda conn: [r[0] for r in conn.execute("SELECT x FROM t")])
        self.assertEqual(rows, [1])
        yield db.close()
        yield self.assertFailure(db._write(lambda conn: None), RuntimeError)
        yield self.assertFailure(db._read(lambda conn: None), RuntimeError)
        # Created private, at the schema's latest version.
        self.assertEqual(os.stat(db.path).st_mode & 0o077, 0)
        conn = sqlite3.connect(db.path)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], queue_schema.LATEST)
        conn.close()

    def test_every_database_uses_the_base(self):
        self.assertTrue(issubclass(Queue, Database))
        self.assertTrue(issubclass(ReportDB, Database))
        from moxtw.reports.dmarc.evaluations import EvaluationStore
        self.assertTrue(issubclass(EvaluationStore, Database))

    def test_schema_packages(self):
        for pkg in (queue_schema, evalschema):
            self.assertEqual(pkg.LATEST, len(pkg.migrations()))
            self.assertIs(pkg.SchemaError, dbschema.SchemaError)

    def test_newer_database_refused(self):
        conn = dbschema.connect(dbschema.MEMORY)
        conn.execute(f"PRAGMA user_version = {queue_schema.LATEST + 1}")
        self.assertRaises(dbschema.SchemaError, queue_schema.upgrade, conn)
        conn.close()
