"""Regressions found reviewing the admin pages (issue 17 part 3): hostile input that
crashed a request (500) or left configuration behind, over the real listener."""

import json
import os

import tomlkit
from twisted.internet import defer
from twisted.trial import unittest

from moxtw.admin import configedit
from moxtw.config import write_localserve_config
from moxtw.test.test_web_admin_config import AdminConfigBase
from moxtw.test.test_web_admin_queue import AdminQueueTestBase
from moxtw.web import admin_config


class ConfigInputTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_non_ascii_version_is_a_conflict(self):
        # secrets.compare_digest refuses non-ASCII str: was a 500.
        before = self.file()
        out = yield self.api("GET", "/config")
        r = yield self.api("POST", "/config", {"text": out["text"] + "\n# x\n", "version": "\u00e9" * 64}, ok=409)
        self.assertIn("changed by someone else", r["error"])
        self.assertEqual(self.file(), before)

    @defer.inlineCallbacks
    def test_lone_surrogates_refused(self):
        # JSON "\ud800" is no character: was a UnicodeEncodeError when writing (500).
        before = self.file()
        out = yield self.api("GET", "/config")
        for path, body in (("/config", {"text": out["text"] + "\n# \ud800\n", "version": out["version"]}),
                           ("/accounts/settings", {"account": "mjl", "FullName": "x\ud800"}),
                           ("/accounts/add", {"account": "new", "address": "new\udfff@example.org"}),
                           ("/loglevels", {"pkg": "smtp", "level": "\ud800"})):
            r = yield self.api("POST", path, body, ok=400)
            self.assertIn("not valid Unicode", r["error"], path)
        self.assertEqual(self.file(), before)


class QueueInputTests(AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_reschedule_beyond_year_9999(self):
        # Valid from 2000 (what the duration check uses), overflowing from now: was a 500.
        [qid] = yield self.queued()
        before = (yield self.root.queue.get(qid)).next_attempt
        r, content = yield self.post("/api/queue/reschedule", {"ids": [qid], "when": "+2913000d"})
        self.assertEqual(r.code, 400, content)
        self.assertIn("when", json.loads(content)["error"])
        self.assertEqual((yield self.root.queue.get(qid)).next_attempt, before)

    @defer.inlineCallbacks
    def test_fail_reason_lone_surrogate(self):
        [qid] = yield self.queued()
        r, content = yield self.post("/api/queue/fail", {"ids": [qid], "reason": "\ud800"})
        self.assertEqual(r.code, 400, content)
        self.assertEqual((yield self.ids()), [qid])


class ReferenceTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_domain_added_again_after_removal(self):
        # The removed domain's key files are kept; they blocked adding it again (same year).
        yield self.api("POST", "/domains/add", {"domain": "example.net", "account": "mjl"})
        keys = set(os.listdir(os.path.join(self.config_dir, "dkim")))
        yield self.api("POST", "/domains/remove", {"domain": "example.net"})
        out = yield self.api("POST", "/domains/add", {"domain": "example.net", "account": "mjl"})
        self.assertIn("domain example.net added", out["message"])
        now = set(os.listdir(os.path.join(self.config_dir, "dkim")))
        self.assertTrue(keys < now)  # the old ones untouched, two new
        self.assertEqual(len(now - keys), 2)
        d = yield self.api("GET", "/domains/example.net")
        self.assertEqual({s["key_file"] for s in d["selectors"]} & {"dkim/" + k for k in keys}, set())
        dkim = [r for r in d["records"] if "._domainkey." in r["name"]]
        self.assertEqual(len(dkim), 2)  # the new keys' records, read from the new files
        self.assertTrue(all("v=DKIM1" in r["value"] for r in dkim))

    @defer.inlineCallbacks
    def test_account_named_by_hold_rule_not_removed(self):
        # The rule would hold all mail of a later account of the same name.
        yield self.api("POST", "/queue/holdrules/add", {"account": "other"})
        before = self.file()
        out = yield self.api("POST", "/accounts/remove", {"account": "other"}, ok=400)
        self.assertIn("hold rule", out["error"])
        self.assertEqual(self.file(), before)
        yield self.api("POST", "/queue/holdrules/remove", {"index": "0"})
        yield self.api("POST", "/accounts/remove", {"account": "other"})
        self.assertNotIn("other", self.root.watcher.current.Accounts)


class ReportInputTests(AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_days_with_many_digits(self):
        # int() of more than 4300 digits raises ValueError: was a 500.
        for path in ("/api/reports/dmarc", "/api/reports/tls", "/reports/dmarc", "/reports/tls"):
            r, content = yield self.get(path + "?days=" + "9" * 5000)
            self.assertEqual(r.code, 400, (path, content[:200]))
            self.assertIn(b"days: 1 to 366", content)


class HoldRuleArrayTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_hold_rule_added_to_inline_array(self):
        # "QueueHoldRules = [...]" is valid; a table appended to it made invalid TOML, so
        # every hold rule was refused with a syntax error.
        out = yield self.api("GET", "/config")
        for start in ("QueueHoldRules = []\n", 'QueueHoldRules = [{RecipientDomain = "a.example"}]\n'):
            out = yield self.api("GET", "/config")
            text = start + "".join(line + "\n" for line in out["text"].splitlines()
                                   if not line.startswith("QueueHoldRules"))
            yield self.api("POST", "/config", {"text": text, "version": out["version"]})
            n = len(self.root.watcher.current.QueueHoldRules)
            r = yield self.api("POST", "/queue/holdrules/add", {"recipient_domain": "b.example"})
            self.assertEqual(r, {"index": n})
            rules = self.root.watcher.current.QueueHoldRules
            self.assertEqual([str(x.RecipientDomain) for x in rules][-1], "b.example")
            yield self.api("POST", "/queue/holdrules/remove", {"index": str(n)})
            self.assertEqual(len(self.root.watcher.current.QueueHoldRules), n)


INLINE = """
[Domains."example.org"]
Aliases = {}
[Accounts.mjl]
Domain = "example.org"
Destinations = {"mjl@example.org" = {}}
[Accounts.other]
Domain = "example.org"
Destinations = {"other@example.org" = {}}
"""


class InlineTableTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_edits_of_inline_tables(self):
        # Valid domains.toml with inline tables: tomlkit raised ValueError ("Inline tables
        # cannot contain a table") for each of these: a 500.
        out = yield self.api("GET", "/config")
        yield self.api("POST", "/config", {"text": INLINE, "version": out["version"]})
        yield self.api("POST", "/addresses/add", {"address": "second@example.org", "account": "mjl"})
        yield self.api("POST", "/aliases/add", {"alias": "list@example.org", "addresses": "mjl@example.org"})
        yield self.api("POST", "/domains/add", {"domain": "example.net", "account": "other",
                                                "localpart": "postmaster"})
        current = self.root.watcher.current
        self.assertIn("second@example.org", current.Accounts["mjl"].Destinations)
        self.assertIn("postmaster@example.net", current.Accounts["other"].Destinations)
        self.assertEqual(list(current.Domains["example.org"].Aliases["list"].Addresses), ["mjl@example.org"])


class ApplyValueErrorTests(unittest.SynchronousTestCase):
    def test_tomlkit_value_error_is_a_refusal(self):
        # Whatever else tomlkit refuses (ValueError) is refused with its reason, not a crash.
        config = write_localserve_config(os.path.abspath(self.mktemp()))
        path = os.path.join(config, "domains.toml")
        before = open(path).read()

        def change(doc, cfg):
            doc["Accounts"]["mox"]["Destinations"] = tomlkit.inline_table()
            doc["Accounts"]["mox"]["Destinations"]["x"] = tomlkit.table()

        with self.assertRaises(configedit.EditError) as e:
            configedit.apply(config, change)
        self.assertIn("Inline tables cannot contain a table", str(e.exception))
        self.assertEqual(open(path).read(), before)


class HoldRuleErrorTests(AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_error_without_server_paths(self):
        # The other admin pages show file names relative to the config directory; the hold
        # rules showed the absolute path of domains.toml.
        path = os.path.join(self.config_dir, "domains.toml")
        with open(path, "a") as f:
            f.write("\nthis is = = not toml\n")
        r, content = yield self.post("/api/queue/holdrules/add", {"recipient_domain": "x.example"})
        self.assertEqual(r.code, 400, content)
        error = json.loads(content)["error"]
        self.assertIn("domains.toml", error)
        self.assertNotIn(self.config_dir, error)


class LogLevelTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_package_levels_bounded(self):
        # Any "smtp.<anything>" was taken: the package levels grew without bound.
        for i in range(admin_config.MAX_LOG_PACKAGES):
            yield self.api("POST", "/loglevels", {"pkg": f"smtp.x{i}", "level": "debug"})
        r = yield self.api("POST", "/loglevels", {"pkg": "smtp.one-more", "level": "debug"}, ok=400)
        self.assertIn("at most", r["error"])
        yield self.api("POST", "/loglevels", {"pkg": "smtp.x0", "level": "info"})  # a change is fine
        yield self.api("POST", "/loglevels", {"pkg": "smtp.x1", "remove": "true"})
        out = yield self.api("POST", "/loglevels", {"pkg": "smtp.one-more", "level": "debug"})
        self.assertEqual(len(out["packages"]), admin_config.MAX_LOG_PACKAGES)
        for pkg in out["packages"]:  # the levels are the process's: gone for later tests
            yield self.api("POST", "/loglevels", {"pkg": pkg, "remove": "true"})


class AccountAgainTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_adding_a_removed_account_again_says_its_data_is_used(self):
        # The old password still logged in to the new account, without a word to the admin.
        yield self.api("POST", "/accounts/remove", {"account": "other"})
        out = yield self.api("POST", "/accounts/add", {"account": "other", "address": "new@example.org"})
        self.assertIn("earlier account of this name is used again", out["message"])
        self.assertIn("set a new password", out["message"])
        out = yield self.api("POST", "/accounts/add", {"account": "fresh", "address": "fresh@example.org"})
        self.assertEqual(out["message"], "account fresh added with address fresh@example.org")
