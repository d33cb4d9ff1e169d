"""The configuration admin pages and their JSON API (moxtw.web.admin_config) over a real
loopback HTTP listener of the real service tree, with a loopback DNS server for the DNS
check: domains, accounts, addresses, aliases, domains.toml as text, log levels, routes.
Every route refuses without a session (401, pages redirect to the login), without the
CSRF token or from another origin (403); refused edits leave domains.toml untouched;
an edit from an older version gets 409; hostile input is refused or escaped."""

import json
import os
from urllib.parse import urlencode

from twisted.internet import defer

from moxtw.admin.quickstart import write_admin_password
from moxtw.dns import MX
from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_localserve import free_offset
from moxtw.test.test_web import ADMIN_PASSWORD, DYNAMIC, PASSWORD, STATIC, WebTestBase
from moxtw.web import admin_config

# The web test config, with SMTP for deliveries and the loopback name server.
STATIC_SMTP = STATIC + """
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[DNS]
Servers = ["{dns}"]
"""

DNS_RECORDS = {
    ("example.org", "MX"): [MX(10, "mail.example.org")],
    ("mail.example.org", "A"): ["127.0.0.1"],
    ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.1 mx ~all"],
}


class AdminConfigBase(WebTestBase):
    timeout = 90
    extra_static = ""  # more of moxtw.toml

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.dns = loopback_dns(self, dict(DNS_RECORDS))
        self.ports = {"imaps": 993 + off, "http": 80 + off, "smtp": 25 + off}
        d = os.path.abspath(self.mktemp())
        cfg, self.ca = servertree.write_config(d, STATIC_SMTP.format(dns=self.dns.address, **self.ports) + self.extra_static,
                                             DYNAMIC)
        self.config_dir = cfg.config_dir
        self.domains_toml = os.path.join(d, "domains.toml")
        write_admin_password(cfg.config_dir, ADMIN_PASSWORD)
        self.root = yield servertree.start(self, cfg)
        yield self.root.web_sessions.open()
        for name in ("mjl", "other"):
            acc = yield self.root.store.open_account(name)
            yield acc.set_password(PASSWORD)
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.account = f"http://127.0.0.1:{self.ports['http']}"
        self.admin = f"http://127.0.0.1:{self.ports['http']}/admin"

    def file(self):
        with open(self.domains_toml, "rb") as f:
            return f.read()

    @defer.inlineCallbacks
    def api(self, method, path, body=None, ok=200):
        """An API call with the admin session (logging in on first use)."""
        if not getattr(self, "_admin", None):
            self._admin = yield self.admin_login()
        cookie, csrf = self._admin
        r, content = yield self.call(self.admin, method, "/api" + path, cookie=cookie,
                                     csrf=csrf if method == "POST" else None, body=body)
        if ok is not None:
            self.assertEqual(r.code, ok, content)
        return json.loads(content) if content else None

    @defer.inlineCallbacks
    def post_form(self, path, fields, csrf=True):
        """A form POST as a browser sends it; returns (response, body)."""
        if not getattr(self, "_admin", None):
            self._admin = yield self.admin_login()
        cookie, token = self._admin
        if csrf:
            fields = dict(fields, csrf=token)
        r, content = yield self.call(self.admin, "POST", path, cookie=cookie, raw=urlencode(fields).encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return r, content

    @defer.inlineCallbacks
    def get_page(self, path):
        if not getattr(self, "_admin", None):
            self._admin = yield self.admin_login()
        r, content = yield self.call(self.admin, "GET", path, cookie=self._admin[0])
        return r, content


def _concrete(path):
    return (path.replace("<domain>", "example.org").replace("<account>", "mjl"))


class AccessTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_every_route_needs_session_and_csrf(self):
        before = self.file()
        for method, path, _ in admin_config.API:
            r, content = yield self.call(self.admin, method, _concrete(path), body={} if method == "POST" else None)
            self.assertEqual(r.code, 401, (method, path, content))
            self.assertEqual(json.loads(content), {"error": "not logged in"})
        cookie, csrf = yield self.admin_login()
        for method, path, _ in admin_config.API:
            if method != "POST":
                continue
            r, _ = yield self.call(self.admin, method, _concrete(path), cookie=cookie, body={})
            self.assertEqual(r.code, 403, (method, path))
            r, _ = yield self.call(self.admin, method, _concrete(path), cookie=cookie, csrf="wrong", body={})
            self.assertEqual(r.code, 403, (method, path))
            r, _ = yield self.call(self.admin, method, _concrete(path), cookie=cookie, csrf=csrf, body={},
                                   headers={"Origin": "https://evil.example"})
            self.assertEqual(r.code, 403, (method, path))
        # An account session is no admin session.
        acookie, acsrf, _ = yield self.login()
        r, _ = yield self.call(self.admin, "POST", "/api/accounts/remove", csrf=acsrf,
                               cookie=acookie.replace("moxtw_account", "moxtw_admin"), body={"account": "other"})
        self.assertEqual(r.code, 401)
        self.assertEqual(self.file(), before)

    @defer.inlineCallbacks
    def test_pages_need_session_and_csrf(self):
        before = self.file()
        for path in ("/domains", "/domains/example.org", "/domains/example.org/dnscheck", "/accounts",
                     "/accounts/mjl", "/config", "/logging", "/routes"):
            r, _ = yield self.call(self.admin, "GET", path)
            self.assertEqual(r.code, 303, path)
            self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/admin/"])
        for path in ("/domains/add", "/accounts/remove", "/addresses/add", "/aliases/add", "/config/save",
                     "/logging/set"):
            r, _ = yield self.call(self.admin, "POST", path, raw=b"account=other",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(r.code, 401, path)
            r, _ = yield self.post_form(path, {"account": "other"}, csrf=False)
            self.assertEqual(r.code, 403, path)
        r, _ = yield self.post_form("/nothing/add", {})
        self.assertEqual(r.code, 404)
        r, _ = yield self.post_form("/accounts/explode", {"account": "other"})
        self.assertEqual(r.code, 404)
        yield self.api("POST", "/accounts/explode", {"account": "other"}, ok=404)
        self.assertEqual(self.file(), before)

    @defer.inlineCallbacks
    def test_api_list_has_every_call(self):
        r, content = yield self.call(self.admin, "GET", "/api/")
        listed = {(x["method"], x["path"]) for x in json.loads(content)}
        for m, p, _ in admin_config.API:
            self.assertIn((m, "/admin" + p), listed)


class DomainTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_domain_add_records_remove(self):
        domains = yield self.api("GET", "/domains")
        self.assertEqual([d["domain"] for d in domains], ["example.org"])
        self.assertEqual(domains[0]["accounts"], ["mjl", "other"])
        # A new domain with a new postmaster account (mox's "config domain add").
        out = yield self.api("POST", "/domains/add", {"domain": "Example.NET", "account": "netadmin",
                                                     "localpart": "postmaster"})
        self.assertIn("domain example.net added", out["message"])
        # The running server has it at once.
        self.assertIn("example.net", self.root.watcher.current.Domains)
        self.assertIn("postmaster@example.net", self.root.watcher.current.Accounts["netadmin"].Destinations)
        d = yield self.api("GET", "/domains/example.net")
        types = [r["type"] for r in d["records"]]
        self.assertIn("MX", types)
        self.assertEqual(len(d["selectors"]), 2)
        self.assertTrue(all(s["sign"] for s in d["selectors"]))
        self.assertEqual({s["expiration"] for s in d["selectors"]}, {"72h"})
        dkim = [r for r in d["records"] if "._domainkey." in r["name"]]
        self.assertEqual(len(dkim), 2)
        self.assertIn("v=DKIM1", dkim[0]["value"])
        self.assertIn("example.net. 300 IN MX 10 mail.example.org.", d["zone"])
        # Existing, unknown, in use: refused with the reason, file untouched.
        before = self.file()
        out = yield self.api("POST", "/domains/add", {"domain": "example.net", "account": "mjl"}, ok=400)
        self.assertIn("exists", out["error"])
        out = yield self.api("POST", "/domains/add", {"domain": "bad..name", "account": "mjl"}, ok=400)
        out = yield self.api("POST", "/domains/add", {"domain": "new.example", "account": "nobody"}, ok=400)
        self.assertIn("localpart", out["error"])
        out = yield self.api("POST", "/domains/remove", {"domain": "example.net"}, ok=400)
        self.assertIn("still used by account(s) netadmin", out["error"])
        out = yield self.api("POST", "/domains/remove", {"domain": "nowhere.example"}, ok=400)
        self.assertEqual(self.file(), before)
        yield self.api("GET", "/domains/nowhere.example", ok=404)
        # The account gets the domain's DMARC and TLS reports: it stays while the domain does.
        out = yield self.api("POST", "/accounts/remove", {"account": "netadmin"}, ok=400)
        self.assertIn("DMARC account 'netadmin' does not exist", out["error"])
        self.assertEqual(self.file(), before)
        # A domain without addresses (reports to mjl) is removed.
        yield self.api("POST", "/domains/add", {"domain": "example.com", "account": "mjl"})
        self.assertIn("example.com", self.root.watcher.current.Domains)
        out = yield self.api("POST", "/domains/remove", {"domain": "example.com"})
        self.assertIn("removed", out["message"])
        self.assertNotIn("example.com", self.root.watcher.current.Domains)

    @defer.inlineCallbacks
    def test_internationalized_domain(self):
        yield self.api("POST", "/domains/add", {"domain": "xn--bcher-kva.example", "account": "mjl",
                                               "localpart": "info"})
        r, _ = yield self.post_form("/domains/remove", {"domain": "bücher.example"})
        self.assertEqual(r.code, 400)  # still used by mjl
        for path in ("/domains/b%C3%BCcher.example", "/domains/xn--bcher-kva.example"):
            r, content = yield self.get_page(path)
            self.assertEqual(r.code, 200, path)
            self.assertIn("Domain bücher.example".encode(), content)
        r, content = yield self.get_page("/domains")
        self.assertIn(b'href="/admin/domains/b%C3%BCcher.example"', content)
        d = yield self.api("GET", "/domains/b%C3%BCcher.example")
        self.assertEqual(d["ascii"], "xn--bcher-kva.example")
        self.assertIn("xn--bcher-kva.example. 300 IN MX", d["zone"])

    @defer.inlineCallbacks
    def test_dnscheck_over_loopback_dns(self):
        results = yield self.api("GET", "/domains/example.org/dnscheck")
        by = {r["check"]: r for r in results}
        self.assertEqual(by["MX"]["status"], "ok", by["MX"])
        self.assertEqual(by["DMARC"]["status"], "error", by["DMARC"])  # none published
        self.assertTrue({r["status"] for r in results} <= {"ok", "warning", "error"})
        self.assertGreater(len(self.dns.queries), 3)
        # The page shows the same, each row marked with its status.
        r, content = yield self.get_page("/domains/example.org/dnscheck")
        self.assertEqual(r.code, 200)
        self.assertIn(b'class="status-ok"', content)
        self.assertIn(b'class="status-error"', content)


class AccountTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_account_lifecycle(self):
        yield self.api("POST", "/accounts/add", {"account": "bob", "address": "bob@example.org"})
        self.assertIn("bob", self.root.watcher.current.Accounts)
        yield self.api("POST", "/addresses/add", {"account": "bob", "address": "robert@example.org"})
        acc = yield self.api("GET", "/accounts/bob")
        self.assertEqual(acc["addresses"], ["bob@example.org", "robert@example.org"])
        self.assertEqual(acc["settings"]["MaxOutgoingMessagesPerDay"], 1000)
        self.assertEqual(acc["quota_used"], 0)
        yield self.api("POST", "/addresses/remove", {"address": "robert@example.org"})
        out = yield self.api("POST", "/addresses/remove", {"address": "bob@example.org"}, ok=400)
        self.assertIn("only address", out["error"])
        # The password, used by IMAP (the store's credentials).
        yield self.api("POST", "/accounts/password", {"account": "bob", "password": "bob's password"})
        store_acc = yield self.root.store.open_account("bob")
        self.assertTrue((yield store_acc.verify_password("bob's password")))
        yield self.api("POST", "/accounts/password", {"account": "bob", "password": ""}, ok=400)
        yield self.api("POST", "/accounts/password", {"account": "nobody", "password": "x" * 10}, ok=400)
        # Quota and sending limits through configedit.
        out = yield self.api("POST", "/accounts/settings", {
            "account": "bob", "QuotaMessageSize": "1000000", "MaxOutgoingMessagesPerDay": "50",
            "MaxFirstTimeRecipientsPerDay": "10", "NoFirstTimeSenderDelay": "true", "FullName": "Bob <b>"})
        self.assertIn("QuotaMessageSize", out["message"])
        conf = self.root.watcher.current.Accounts["bob"]
        self.assertEqual((conf.QuotaMessageSize, conf.MaxOutgoingMessagesPerDay, conf.MaxFirstTimeRecipientsPerDay,
                          conf.NoFirstTimeSenderDelay, conf.FullName), (1000000, 50, 10, True, "Bob <b>"))
        self.assertIn(b"MaxOutgoingMessagesPerDay = 50", self.file())
        before = self.file()
        out = yield self.api("POST", "/accounts/settings", {"account": "bob", "MaxOutgoingMessagesPerDay": "0"},
                             ok=400)
        self.assertIn("MaxOutgoingMessagesPerDay", out["error"])
        yield self.api("POST", "/accounts/settings", {"account": "bob", "QuotaMessageSize": "lots"}, ok=400)
        yield self.api("POST", "/accounts/settings", {"account": "bob", "NoFirstTimeSenderDelay": "maybe"}, ok=400)
        yield self.api("POST", "/accounts/settings", {"account": "bob", "LoginDisabled": "é\n"}, ok=400)
        self.assertEqual(self.file(), before)
        # Removal: gone from the running config, messages kept.
        yield self.api("POST", "/accounts/remove", {"account": "bob"})
        self.assertNotIn("bob", self.root.watcher.current.Accounts)
        yield self.api("GET", "/accounts/bob", ok=404)
        yield self.api("POST", "/accounts/remove", {"account": "bob"}, ok=400)

    @defer.inlineCallbacks
    def test_admin_password_ends_account_sessions(self):
        cookie, _, _ = yield self.login("other@example.org")
        yield self.api("POST", "/accounts/password", {"account": "other", "password": "new password"})
        r, _ = yield self.call(self.account, "GET", "/api/overview", cookie=cookie)
        self.assertEqual(r.code, 401)


class AliasTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_alias_lifecycle(self):
        yield self.api("POST", "/aliases/add", {"alias": "team@example.org", "addresses": "mjl@example.org"})
        yield self.api("POST", "/aliases/addmembers", {"alias": "team@example.org", "addresses": "other@example.org"})
        yield self.api("POST", "/aliases/update", {"alias": "team@example.org", "postpublic": "true"})
        aliases = yield self.api("GET", "/domains/example.org/aliases")
        self.assertEqual(aliases, [{"address": "team@example.org", "addresses": ["mjl@example.org", "other@example.org"],
                                    "postpublic": True, "allowmsgfrom": False}])
        self.assertTrue(self.root.watcher.current.Domains["example.org"].Aliases["team"].PostPublic)
        before = self.file()
        out = yield self.api("POST", "/aliases/addmembers", {"alias": "team@example.org",
                                                            "addresses": "nobody@example.org"}, ok=400)
        self.assertIn("not a destination", out["error"])
        out = yield self.api("POST", "/aliases/add", {"alias": "mjl@example.org", "addresses": "other@example.org"},
                             ok=400)
        self.assertIn("already used", out["error"])
        yield self.api("POST", "/aliases/remove", {"alias": "nothing@example.org"}, ok=400)
        yield self.api("POST", "/aliases/update", {"alias": "team@example.org", "postpublic": "perhaps"}, ok=400)
        self.assertEqual(self.file(), before)
        yield self.api("POST", "/aliases/rmmembers", {"alias": "team@example.org", "addresses": "mjl@example.org"})
        out = yield self.api("POST", "/aliases/rmmembers", {"alias": "team@example.org",
                                                           "addresses": "other@example.org"}, ok=400)
        self.assertIn("remove the alias instead", out["error"])
        yield self.api("POST", "/aliases/remove", {"alias": "team@example.org"})
        self.assertEqual((yield self.api("GET", "/domains/example.org/aliases")), [])


class ConfigTextTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_text_edit_validated_versioned_and_live(self):
        got = yield self.api("GET", "/config")
        self.assertEqual(got["text"].encode(), self.file())
        version = got["version"]
        # Invalid: the loader's error, the file untouched.
        before = self.file()
        for bad, why in (("[Domains\n", "TOML syntax error"),
                         (got["text"] + '[Accounts.x]\nDomain = "nowhere.example"\n', "unknown domain"),
                         (got["text"] + '[Accounts."../../etc"]\nDomain = "example.org"\n', "invalid account name"),
                         ("", "Domains")):
            out = yield self.api("POST", "/config", {"text": bad, "version": version}, ok=400)
            self.assertIn(why, out["error"])
            self.assertNotIn(self.config_dir, out["error"])  # file names relative to the config dir
            self.assertEqual(self.file(), before)
        # Valid (with CRLF from a browser): written, and the running server uses it.
        new = got["text"] + '\n# added by the web\n[Domains."example.com"]\n'
        out = yield self.api("POST", "/config", {"text": new.replace("\n", "\r\n"), "version": version})
        self.assertEqual(self.file(), new.encode())
        self.assertIn("example.com", self.root.watcher.current.Domains)
        # The old version is stale now: 409, nothing written.
        out2 = yield self.api("POST", "/config", {"text": got["text"], "version": version}, ok=409)
        self.assertIn("changed by someone else", out2["error"])
        self.assertEqual(self.file(), new.encode())
        yield self.api("POST", "/config", {"text": got["text"], "version": out["version"]})
        self.assertEqual(self.file(), got["text"].encode())
        yield self.api("POST", "/config", {"text": got["text"]}, ok=400)  # no version

    @defer.inlineCallbacks
    def test_broken_file_can_be_fixed(self):
        # Edited by hand into a file that does not load: the server keeps its config, the
        # form edits are refused, the text edit replaces it.
        good = self.file()
        with open(self.domains_toml, "wb") as f:
            f.write(b"[Domains\n")
        self.assertFalse(self.root.watcher.check())
        out = yield self.api("POST", "/accounts/add", {"account": "bob", "address": "bob@example.org"}, ok=400)
        self.assertIn("does not load", out["error"])
        got = yield self.api("GET", "/config")
        self.assertEqual(got["text"], "[Domains\n")
        yield self.api("POST", "/config", {"text": good.decode() + '[Domains."example.com"]\n',
                                           "version": got["version"]})
        self.assertIn("example.com", self.root.watcher.current.Domains)

    @defer.inlineCallbacks
    def test_text_page_keeps_the_typed_text(self):
        r, content = yield self.get_page("/config")
        self.assertEqual(r.code, 200)
        self.assertIn(b'<textarea name="text"', content)
        version = (yield self.api("GET", "/config"))["version"]
        r, content = yield self.post_form("/config/save", {"text": "[Domains\n<b>typed</b>", "version": version})
        self.assertEqual(r.code, 400)
        self.assertIn(b"TOML syntax error", content)
        self.assertIn(b"&lt;b&gt;typed&lt;/b&gt;", content)
        self.assertNotIn(b"<b>typed", content)
        r, content = yield self.post_form("/config/save", {"text": "", "version": "0" * 64})
        self.assertEqual(r.code, 409)
        self.assertIn(b'id="conflict"', content)


class LoggingRoutesTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_loglevels(self):
        got = yield self.api("GET", "/loglevels")
        self.assertEqual(got["default"], "info")
        got = yield self.api("POST", "/loglevels", {"pkg": "smtpserver", "level": "debug"})
        self.assertEqual(got["packages"], {"smtpserver": "debug"})
        from moxtw import log as mlog

        self.assertEqual(mlog._wanted.level_for("smtpserver.x"), "debug")
        yield self.api("POST", "/loglevels", {"pkg": "nosuchpkg", "level": "debug"}, ok=400)
        yield self.api("POST", "/loglevels", {"pkg": "smtpserver", "level": "loud"}, ok=400)
        got = yield self.api("POST", "/loglevels", {"pkg": "smtpserver", "remove": "true"})
        self.assertEqual(got["packages"], {})
        r, content = yield self.post_form("/logging/set", {"pkg": "", "level": "warn"})
        self.assertEqual(r.code, 303)
        r, content = yield self.get_page("/logging")
        self.assertIn(b"<td>(default)</td><td>warn</td>", content)
        self.assertIn(b'id="message">log levels changed', content)
        yield self.api("POST", "/loglevels", {"pkg": "", "level": "info"})

    @defer.inlineCallbacks
    def test_routes_read_only_empty(self):
        got = yield self.api("GET", "/routes")
        self.assertEqual(got, {"routes": [], "domains": {}, "accounts": {}, "transports": []})
        r, content = yield self.get_page("/routes")
        self.assertEqual(r.code, 200)
        self.assertIn(b"No transports configured", content)


class RoutesTests(AdminConfigBase):
    extra_static = """
[Transports.smarthost.Submissions]
Host = "smtp.example.net"
Port = 465
Auth = {Username = "relay@example.net", Password = "hunter2 secret"}
"""

    @defer.inlineCallbacks
    def test_routes_and_transports_without_secrets(self):
        got = yield self.api("GET", "/config")
        text = got["text"].replace('[Domains."example.org"]\n', '[Domains."example.org"]\n'
                                   '[[Domains."example.org".Routes]]\nToDomain = [".example.net"]\n'
                                   'Transport = "smarthost"\n')
        text = '[[Routes]]\nMinimumAttempts = 3\nTransport = "smarthost"\n\n' + text
        yield self.api("POST", "/config", {"text": text, "version": got["version"]})
        got = yield self.api("GET", "/routes")
        self.assertEqual(got["routes"], [{"from_domain": [], "to_domain": [], "minimum_attempts": 3,
                                          "transport": "smarthost"}])
        self.assertEqual(got["domains"]["example.org"][0]["to_domain"], [".example.net"])
        self.assertEqual(got["transports"], [{"name": "smarthost", "method": "Submissions",
                                              "details": "smtp.example.net:465, user relay@example.net"}])
        r, content = yield self.get_page("/routes")
        self.assertIn(b"Routes of domain example.org", content)
        self.assertIn(b"smtp.example.net:465", content)
        r, content2 = yield self.call(self.admin, "GET", "/api/routes", cookie=self._admin[0])
        for body in (content, content2):
            self.assertNotIn(b"hunter2", body)


class ConcurrencyTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_parallel_edits_all_applied(self):
        # Each edit runs in its own thread, one after the other under the config lock.
        self._admin = yield self.admin_login()
        names = [f"user{i}@example.org" for i in range(8)]
        results = yield defer.gatherResults([
            self.api("POST", "/addresses/add", {"account": "other", "address": a}) for a in names])
        self.assertEqual(len(results), 8)
        self.assertEqual(sorted(self.root.watcher.current.Accounts["other"].Destinations),
                         sorted(names + ["other@example.org"]))


class PageTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_pages_and_forms(self):
        for path in ("/domains", "/domains/example.org", "/accounts", "/accounts/mjl", "/config", "/logging",
                     "/routes"):
            r, content = yield self.get_page(path)
            self.assertEqual(r.code, 200, path)
            self.assertIn(b'class="adminnav"', content)
            self.assertNotIn(b"<script", content)
        # The account's full name holds markup: escaped.
        r, content = yield self.get_page("/accounts/mjl")
        self.assertIn(b'value="&lt;script&gt;alert(1)&lt;/script&gt; Mjl"', content)
        r, _ = yield self.get_page("/accounts/nobody")
        self.assertEqual(r.code, 404)
        # A form: redirect to the new account's page, which says what happened.
        r, _ = yield self.post_form("/accounts/add", {"account": "carol", "address": "carol@example.org"})
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/admin/accounts/carol"])
        r, content = yield self.get_page("/accounts/carol")
        self.assertIn(b"account carol added", content)
        r, content = yield self.get_page("/accounts/carol")
        self.assertNotIn(b'id="message"', content)  # shown once
        # A refusal: the page again, with the reason, status 400.
        r, content = yield self.post_form("/accounts/add", {"account": "carol", "address": "c2@example.org"})
        self.assertEqual(r.code, 400)
        self.assertIn(b"account &#39;carol&#39; exists", content)
        self.assertIn(b'id="account-add"', content)
        # Checkboxes: unchecked sends only the hidden "false".
        r, _ = yield self.post_form("/aliases/add", {"alias": "team@example.org", "addresses": "carol@example.org"})
        self.assertEqual(r.headers.getRawHeaders(b"location"), [b"/admin/domains/example.org"])
        r, _ = yield self.call(self.admin, "POST", "/aliases/update", cookie=self._admin[0],
                               raw=urlencode([("csrf", self._admin[1]), ("alias", "team@example.org"),
                                              ("postpublic", "true"), ("postpublic", "false"),
                                              ("allowmsgfrom", "false")]).encode(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 303)
        alias = self.root.watcher.current.Domains["example.org"].Aliases["team"]
        self.assertEqual((alias.PostPublic, alias.AllowMsgFrom), (True, False))
        r, content = yield self.get_page("/domains/example.org")
        self.assertIn(b"team@example.org", content)
        self.assertIn(b'id="zone"', content)


class HostileInputTests(AdminConfigBase):
    @defer.inlineCallbacks
    def test_hostile_names_and_bodies(self):
        before = self.file()
        for body in ({"account": "<script>x</script>", "address": "x@example.org"},
                     {"account": "../../etc", "address": "x@example.org"},
                     {"account": "a" * 200, "address": "x@example.org"},
                     {"account": "evil", "address": "<img src=x>@example.org"},
                     {"account": "evil", "address": "x@example.org\r\nBcc: y"}):
            yield self.api("POST", "/accounts/add", body, ok=400)
        yield self.api("POST", "/domains/add", {"domain": "<b>.example", "account": "mjl"}, ok=400)
        yield self.api("POST", "/domains/add", {"domain": "../x", "account": "mjl"}, ok=400)
        yield self.api("POST", "/aliases/add", {"alias": "a@example.org", "addresses": "x@example.org " * 2000},
                       ok=400)
        out = yield self.api("POST", "/accounts/add", {"account": "x" * 5000, "address": "x@example.org"}, ok=400)
        self.assertIn("at most", out["error"])
        self.assertEqual(self.file(), before)
        # Markup in a refused name is escaped on the page.
        r, content = yield self.post_form("/accounts/add", {"account": "<script>x</script>", "address": "x@e"})
        self.assertEqual(r.code, 400)
        self.assertIn(b"&lt;script&gt;x&lt;/script&gt;", content)
        self.assertNotIn(b"<script>x", content)
        # Path traversal and garbage in path names: no such thing.
        for path in ("/api/accounts/..%2F..%2Fetc%2Fpasswd", "/api/domains/..%2Fetc", "/api/domains/%00",
                     "/api/domains/" + "a" * 3000, "/accounts/..%2Fx"):
            r, _ = yield self.call(self.admin, "GET", path, cookie=self._admin[0])
            self.assertIn(r.code, (404, 400), path)
        # Bad UTF-8, bodies over the limit, JSON that is no object.
        cookie, csrf = self._admin
        r, _ = yield self.call(self.admin, "POST", "/api/accounts/add", cookie=cookie, csrf=csrf, raw=b"\xff\xfe",
                               headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.admin, "POST", "/accounts/add", cookie=cookie,
                               raw=b"csrf=" + csrf.encode() + b"&account=%ff",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.code, 400)
        r, _ = yield self.call(self.admin, "POST", "/api/config", cookie=cookie, csrf=csrf,
                               raw=b'{"text": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                               headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 413)
        # Other forms keep the usual 64 KB; domains.toml may be larger.
        r, _ = yield self.call(self.admin, "POST", "/api/accounts/add", cookie=cookie, csrf=csrf,
                               raw=b'{"account": "' + b"x" * 100000 + b'"}', headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 413)
        got = yield self.api("GET", "/config")
        out = yield self.api("POST", "/config", {"text": got["text"] + "#" * 200000 + "\n", "version": got["version"]})
        yield self.api("POST", "/config", {"text": got["text"], "version": out["version"]})
        r, _ = yield self.call(self.admin, "POST", "/api/accounts/add", cookie=cookie, csrf=csrf,
                               raw=b'{"account": ["x"]}', headers={"Content-Type": "application/json"})
        self.assertEqual(r.code, 400)
        self.assertEqual(self.file(), before)

    @defer.inlineCallbacks
    def test_transport_secrets_not_shown(self):
        # A transport with a password (moxtw.toml) is shown without it.
        from moxtw.web.admin_config import _transport
        from moxtw.config.schema import Transport

        t = Transport.model_validate({"Submissions": {"Host": "smtp.example.net", "Auth": {
            "Username": "u@example.net", "Password": "hunter2 secret"}}})
        shown = _transport("smarthost", t)
        self.assertEqual(shown["method"], "Submissions")
        self.assertIn("u@example.net", shown["details"])
        self.assertNotIn("hunter2", json.dumps(shown))
        yield defer.succeed(None)

