"""Ruleset edits from a stale page are refused (409), not applied to whichever ruleset
now has the index the page showed; an edit racing another under the config lock too."""

import json
import os

from twisted.internet import defer

from moxtw.admin import configedit
from moxtw.test.test_web_account_more import MoreBase


class RulesetVersionTests(MoreBase):
    @defer.inlineCallbacks
    def destination(self, cookie):
        r, content = yield self.call(self.account, "GET", "/api/destinations", cookie=cookie)
        return json.loads(content)["destinations"][0]

    @defer.inlineCallbacks
    def test_stale_version_refused(self):
        cookie, csrf, _ = yield self.login()
        for box in ("A", "B"):
            code, body = yield self.post("/api/ruleset/save", {"address": "mjl@example.org", "mailbox": box,
                                                               "smtp_mail_from_regexp": "^" + box.lower() + "@"},
                                         cookie, csrf)
            self.assertEqual(code, 200, body)
        seen = yield self.destination(cookie)  # the "other tab"
        # Someone removes ruleset 0 meanwhile...
        code, _ = yield self.post("/api/ruleset/remove", {"address": "mjl@example.org", "index": "0",
                                                          "version": seen["version"]}, cookie, csrf)
        self.assertEqual(code, 200)
        path = os.path.join(self.root.watcher.config.config_dir, "domains.toml")
        with open(path, "rb") as f:
            before = f.read()
        # ...and the stale page's "remove 0" (meant for A) would remove B: refused.
        code, body = yield self.post("/api/ruleset/remove", {"address": "mjl@example.org", "index": "0",
                                                             "version": seen["version"]}, cookie, csrf)
        self.assertEqual(code, 409, body)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        now = yield self.destination(cookie)
        self.assertEqual([rs["mailbox"] for rs in now["rulesets"]], ["B"])
        self.assertNotEqual(now["version"], seen["version"])
        # With the current version it goes through; the settings page carries it.
        code, _ = yield self.post("/api/ruleset/move", {"address": "mjl@example.org", "index": "0",
                                                        "direction": "up", "version": now["version"]}, cookie, csrf)
        self.assertEqual(code, 200)
        r, page = yield self.call(self.account, "GET", "/settings", cookie=cookie)
        self.assertIn(f'name="version" value="{now["version"]}"'.encode(), page)

    def test_changed_under_the_lock_refused(self):
        # The file changed after the page read the server's config (another writer): the
        # change made from the old list is refused inside the lock.
        cfg_dir = self.root.watcher.config.config_dir
        old = configedit.rulesets_version([])
        configedit.apply(cfg_dir, configedit.destination_set("mjl", "mjl@example.org", rulesets=[
            {"SMTPMailFromRegexp": "^x@", "Mailbox": "X"}]))
        with self.assertRaises(configedit.RulesetsChanged):
            configedit.apply(cfg_dir, configedit.destination_set("mjl", "mjl@example.org", rulesets=[],
                                                                 based_on=old))
