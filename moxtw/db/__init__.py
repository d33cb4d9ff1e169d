"""SQLite for every database of moxtw: worker threads with group commit
(``worker``), versioned schemas (``schema``) and the base of the queue, report and
evaluation databases (``database``)."""

from moxtw.db.database import Database
from moxtw.db.worker import OpContext, Worker

__all__ = ["Database", "OpContext", "Worker"]
