"""Settings that do nothing say so (issue 11 item 7): every field of the schema is either
used by the code or listed in ``moxtw.config.notbuilt``, and setting a listed one gives a
warning at load (``serve``, reload, ``moxtw config test``)."""

import os
import re

from twisted.logger import globalLogPublisher
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest

import moxtw
from moxtw import app
from moxtw import config as mconfig
from moxtw.config import schema as S
from moxtw.config import notbuilt
from moxtw.config.introspect import base_type, container, is_model
from moxtw.test.test_cli import run_cli

PKG = os.path.dirname(os.path.abspath(moxtw.__file__))
# Where a field's name stands without the field being used.
NOT_USES = {"config/schema.py", "config/describe.py", "config/introspect.py", "config/errors.py",
            "config/notbuilt.py", "config/localserve.py"}


def field_paths(model, path=()):
    """Every key path of the schema, with ``*`` for table keys and list items."""
    for name, f in model.model_fields.items():
        p = path + (f.alias or name,)
        yield p
        t = base_type(f.annotation)
        if is_model(t):
            yield from field_paths(t, p)
            continue
        _, args = container(f.annotation)
        for a in args:
            if is_model(base_type(a)):
                yield from field_paths(base_type(a), p + ("*",))


def sources(exclude_config=False):
    text = []
    for top, dirs, files in os.walk(PKG):
        rel_top = os.path.relpath(top, PKG)
        if rel_top.split(os.sep)[0] == "test":
            continue
        if exclude_config and rel_top.split(os.sep)[0] == "config":
            continue
        for fn in files:
            rel = os.path.normpath(os.path.join(rel_top, fn))
            if fn.endswith(".py") and rel not in NOT_USES:
                with open(os.path.join(top, fn), encoding="utf-8") as f:
                    text.append(f.read())
    return "\n".join(text)


def _read_in(name, src):
    # As an attribute, or by name (getattr(listener, "IMAPS")).
    return re.search(r"\." + re.escape(name) + r"\b|[\"']" + re.escape(name) + r"[\"']", src) is not None


def covered(path, table):
    return any(path[:len(p)] == p for p in table)


class ScheduleTests(unittest.SynchronousTestCase):
    def test_every_field_used_or_listed(self):
        """A field counts as used when the code reads it as an attribute (``.Name``) or
        names it in a string (``getattr``) outside the schema's own modules: a heuristic, but one that fails for a new
        field nobody reads."""
        src = sources()
        unused = []
        for root, table in ((S.Static, notbuilt.STATIC), (S.Dynamic, notbuilt.DYNAMIC)):
            for p in field_paths(root):
                if covered(p, table) or p in notbuilt.DOCUMENTATION:
                    continue
                if not _read_in(p[-1], src):
                    unused.append(".".join(p))
        self.assertEqual(unused, [], "fields neither used nor in moxtw.config.notbuilt")

    def test_listed_fields_exist_and_are_not_used(self):
        """The list shrinks: a field the code starts reading must leave it."""
        src = sources(exclude_config=True)
        for root, table in ((S.Static, notbuilt.STATIC), (S.Dynamic, notbuilt.DYNAMIC)):
            paths = set(field_paths(root))
            for p in table:
                self.assertIn(p, paths)
                if p in SAME_NAME_READ_ELSEWHERE:
                    continue
                self.assertFalse(_read_in(p[-1], src), p)


# Not built, but a field of the same name elsewhere is read, which the search by name
# cannot tell apart.
SAME_NAME_READ_ELSEWHERE = {
    ("Accounts", "*", "Destinations", "*", "FullName"),  # Accounts.*.FullName: the account pages
}
# Shown (read-only) on the admin routes page, not used for SPF checks yet.
SAME_NAME_READ_ELSEWHERE.add(("Transports", "*", "Socks", "RemoteIPs"))
# Forwarded of the account and admin pages is read; that of the interfaces not built is not.
SAME_NAME_READ_ELSEWHERE.update(p for p in notbuilt.STATIC if p[-1] == "Forwarded")

STATIC = """
Hostname = "mail.example.org"
DataDir = "data"
LogLevel = "info"
CheckUpdates = true

[Postmaster]
Account = "mjl"
Mailbox = "postmaster"

[Listeners.local]
IPs = ["127.0.0.1"]
[Listeners.local.PprofHTTP]
Enabled = true
Port = 41999
"""

DYNAMIC = """
[Domains."example.org"]

[Accounts.mjl]
Domain = "example.org"
NoFirstTimeSenderDelay = false
KeepRetiredMessagePeriod = "48h"
[Accounts.mjl.Destinations."mjl@example.org"]
"""


class WarningTests(unittest.TestCase):
    def write(self, static=STATIC, dynamic=DYNAMIC):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        for name, text in (("moxtw.toml", static), ("domains.toml", dynamic)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d

    def test_not_built_found(self):
        cfg = mconfig.load(self.write())
        found = notbuilt.not_built(cfg.static, cfg.dynamic)
        keys = [(f, k) for f, k, _ in found]
        self.assertEqual(keys, [
            ("moxtw.toml", "CheckUpdates"),
            ("moxtw.toml", "Listeners.local.PprofHTTP"),
            ("domains.toml", "Accounts.mjl.KeepRetiredMessagePeriod"),
        ])  # NoFirstTimeSenderDelay = false is the default: nothing to say

    def test_makeService_warns(self):
        cfg = mconfig.load(self.write())
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        app.makeService(cfg, reactor=reactor)
        warned = [e for e in logged if "has no effect" in e.get("log_format", "")]
        self.assertEqual(sorted(e["key"] for e in warned),
                         ["Accounts.mjl.KeepRetiredMessagePeriod", "CheckUpdates", "Listeners.local.PprofHTTP"])

    def test_config_test_prints(self):
        rc, out, err = run_cli("config", "test", "--config", self.write())
        self.assertEqual(rc, 0, err)
        self.assertIn("warning: domains.toml: Accounts.mjl.KeepRetiredMessagePeriod has no effect in this version", err)
        self.assertIn("config OK", out)

    def test_default_config_quiet(self):
        cfg = mconfig.load(self.write(STATIC.replace("CheckUpdates = true", "").split("[Listeners.local.PprofHTTP]")[0],
                                      DYNAMIC.replace('KeepRetiredMessagePeriod = "48h"\n', "")))
        self.assertEqual(notbuilt.not_built(cfg.static, cfg.dynamic), [])

    def test_localserve_config_quiet(self):
        # localserve's own config sets nothing that would warn at every start.
        from moxtw.config.localserve import write_localserve_config
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        cfg = mconfig.load(write_localserve_config(d))
        self.assertEqual(notbuilt.not_built(cfg.static, cfg.dynamic), [])
