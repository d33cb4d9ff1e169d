"""Login sessions of the web interfaces in ``data/auth.db``.

A session is created at login: the browser gets a random token in an HttpOnly,
SameSite=Strict cookie (Secure over TLS); the database keeps only its SHA-256, with the
account, a CSRF token, the client's IP and user agent, and an expiry. A session expires
after ``IDLE`` without use and at most ``LIFETIME`` after login; logout, a password change
(other sessions) or revoking from the list ends it.
"""

import hashlib
import secrets
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from moxtw.db import Database
from moxtw.web import schema

log = Logger(namespace="moxtw.web")

DB_NAME = "auth.db"
IDLE = 24 * 3600.0
LIFETIME = 30 * 24 * 3600.0
MAX_PER_ACCOUNT = 100  # oldest sessions beyond this are removed at login


def _hash(token):
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    kind: str
    account: str
    login: str
    csrf: str
    created: float
    last_used: float
    expires: float
    remote_ip: str
    user_agent: str

    @classmethod
    def from_row(cls, r):
        return cls(**{k: r[k] for k in r.keys()})


class DatabaseService(service.Service):
    """Opens a Database at start, closes it at stop."""

    def __init__(self, db):
        self.db = db

    def startService(self):
        super().startService()
        self.ready = self.db.open()
        self.ready.addErrback(lambda f: log.failure("opening {db}", f, db=self.db.db_name))

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        yield self.ready
        yield self.db.close()


class SessionStore(Database):
    db_name = DB_NAME
    schema = schema
    thread_name = "auth"

    def create(self, kind, account, login, remote_ip, user_agent):
        """Deferred[(token, Session)]: the cookie value and the new session."""
        token = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        row = (_hash(token), kind, account, login[:256], secrets.token_urlsafe(24), now, now,
               min(now + IDLE, now + LIFETIME), remote_ip[:64], (user_agent or "")[:256])

        def insert(conn):
            conn.execute("DELETE FROM session WHERE expires < ?", (now,))
            conn.execute("INSERT INTO session (id, kind, account, login, csrf, created, last_used, expires,"
                         " remote_ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            conn.execute(
                "DELETE FROM session WHERE kind = ? AND account = ? AND id NOT IN (SELECT id FROM session"
                " WHERE kind = ? AND account = ? ORDER BY created DESC LIMIT ?)",
                (kind, account, kind, account, MAX_PER_ACCOUNT))
            return Session.from_row(conn.execute("SELECT * FROM session WHERE id = ?", (row[0],)).fetchone())

        return self._write(insert).addCallback(lambda s: (token, s))

    def lookup(self, kind, token):
        """Deferred[Session or None] for a cookie token; extends the idle expiry."""
        if not token or len(token) > 100:
            return defer.succeed(None)
        sid = _hash(token)
        now = self._clock.seconds()

        def get(conn):
            r = conn.execute("SELECT * FROM session WHERE id = ? AND kind = ?", (sid, kind)).fetchone()
            if r is None or r["expires"] < now:
                return None
            expires = min(now + IDLE, r["created"] + LIFETIME)
            if now - r["last_used"] > 60:  # not a write per request
                conn.execute("UPDATE session SET last_used = ?, expires = ? WHERE id = ?", (now, expires, sid))
            return Session.from_row(r)

        return self._write(get)

    def remove(self, session_id):
        return self._write(lambda conn: conn.execute("DELETE FROM session WHERE id = ?", (session_id,)).rowcount)

    def remove_others(self, kind, account, keep_id):
        return self._write(lambda conn: conn.execute(
            "DELETE FROM session WHERE kind = ? AND account = ? AND id != ?", (kind, account, keep_id)).rowcount)

    def list(self, kind, account):
        now = self._clock.seconds()
        return self._read(lambda conn: [Session.from_row(r) for r in conn.execute(
            "SELECT * FROM session WHERE kind = ? AND account = ? AND expires >= ? ORDER BY last_used DESC",
            (kind, account, now))])


__all__ = ["SessionStore", "Session", "IDLE", "LIFETIME"]
