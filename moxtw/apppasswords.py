"""App-specific passwords (beyond mox): an account makes named, random passwords for its
mail clients, each usable for IMAP LOGIN/AUTHENTICATE PLAIN and SMTP AUTH PLAIN/LOGIN
(submission), never for the web login, and revokable one by one.

A password is ``NAME-LIST-OF-GROUPS``: six groups of four characters from an alphabet
without look-alikes (about 119 random bits), shown once at creation. The account's
index (table ``app_password``, schema 14) keeps, as for the account password, only the
derived SCRAM-SHA-256 keys (PBKDF2, :mod:`moxtw.sasl.credentials`) and the first group
as a lookup key, so a login costs one key derivation per candidate, not one per app
password. Logins with them count in the shared failure limits (``moxtw.auth``). SCRAM
and CRAM-MD5 logins use the account password only.
"""

import json
import re
import secrets
import time

from twisted.internet import defer, threads

from moxtw.sasl import credentials

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS, GROUP = 6, 4
MAX_PER_ACCOUNT = 50
MAX_NAME = 100

_SHAPE = re.compile(r"^[%s]{%d}(-[%s]{%d}){%d}$" % (ALPHABET, GROUP, ALPHABET, GROUP, GROUPS - 1))


class AppPasswordError(ValueError):
    """A refused change (bad name, too many passwords)."""


def generate():
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP)) for _ in range(GROUPS))


def looks_like(password):
    """Whether ``password`` has the shape of an app password (spaces and case are
    forgiven: it may have been retyped)."""
    return bool(_SHAPE.match(_normalize(password)))


def _normalize(password):
    return (password or "").strip().lower()[:GROUPS * (GROUP + 1)]


def check_name(name):
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 0x20 or ord(c) == 0x7f for c in name):
        raise AppPasswordError(f"a name has 1 to {MAX_NAME} characters, no control characters")
    return name


@defer.inlineCallbacks
def create(account, name, now=None):
    """Deferred[(id, password)]: a new app password for ``account`` (a store Account);
    the password is returned this once and never stored."""
    name = check_name(name)
    password = generate()
    creds = yield threads.deferToThread(credentials.derive, password)
    created = int(now if now is not None else time.time())

    def insert(conn, ctx):
        (count,) = conn.execute("SELECT count(*) FROM app_password").fetchone()
        if count >= MAX_PER_ACCOUNT:
            raise AppPasswordError(f"at most {MAX_PER_ACCOUNT} app passwords: revoke one first")
        cur = conn.execute("INSERT INTO app_password (name, lookup, credentials, created) VALUES (?, ?, ?, ?)",
                           (name, password[:GROUP], json.dumps(creds.to_json()), created))
        return cur.lastrowid

    pid = yield account.write(insert)
    return pid, password


def list_(account):
    """Deferred[[{id, name, created, last_used}]], newest first (last_used 0: never)."""
    return account.read(lambda conn: [
        {"id": r[0], "name": r[1], "created": r[2], "last_used": r[3]}
        for r in conn.execute("SELECT id, name, created, last_used FROM app_password ORDER BY id DESC")])


def revoke(account, pid):
    """Deferred[int]: 1 when the account's app password ``pid`` was removed, else 0."""
    return account.write(lambda conn, ctx: conn.execute("DELETE FROM app_password WHERE id = ?",
                                                        (int(pid),)).rowcount)


@defer.inlineCallbacks
def verify(account, password, now=None):
    """Deferred[bool]: whether ``password`` is one of the account's app passwords (its
    last use is then recorded). Key derivation runs off the reactor."""
    if not looks_like(password):
        return False
    password = _normalize(password)
    rows = yield account.read(lambda conn: conn.execute(
        "SELECT id, credentials FROM app_password WHERE lookup = ?", (password[:GROUP],)).fetchall())
    if not rows:
        # The same cost as a wrong password whose lookup matches: the time taken does not
        # tell an attacker that the first group is right.
        from moxtw.auth import _dummy_credentials

        creds = yield threads.deferToThread(_dummy_credentials)
        yield threads.deferToThread(credentials.verify_password, creds, password)
        return False
    for pid, stored in rows[:4]:  # a chance collision of lookups: a few tries, bounded
        creds = credentials.Credentials.from_json(json.loads(stored))
        ok = yield threads.deferToThread(credentials.verify_password, creds, password)
        if ok:
            used = int(now if now is not None else time.time())
            yield account.write(lambda conn, ctx: conn.execute(
                "UPDATE app_password SET last_used = ? WHERE id = ?", (used, pid)))
            return True
    return False


__all__ = ["AppPasswordError", "create", "generate", "list_", "looks_like", "revoke", "verify"]
