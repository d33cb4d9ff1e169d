"""The configuration parts of the admin pages: domains (the DNS records to publish, DKIM
selectors, a DNS check), accounts (addresses, password, quota and sending limits),
aliases, domains.toml edited as text, log levels and the routes and transports.

Every change of domains.toml goes through :func:`moxtw.admin.configedit.apply` (or
``replace_text`` for the whole file): under its lock, validated like a load, written
atomically, in a thread (DKIM keys are generated, files fsynced); then the running
server reloads it at once (``ServerCommands.reload``, as after ``moxtw config ...``).
Refusals (``EditError``) are shown on the page, or answered 400 ``{error}`` by the API;
an edit of the text that started from an older version of the file gets 409.

The routes are those of :class:`moxtw.web.admin.AdminApp` (one Klein app); this module
has what they call: :class:`ConfigAdmin`.
"""

import os
import re
from datetime import timedelta
from urllib.parse import quote

from twisted.internet import threads
from twisted.logger import Logger

from moxtw.admin import configedit, dnscheck
from moxtw.admin import records as rec
from moxtw.ctl import CtlError
from moxtw.dns import normalize
from moxtw.log import LEVELS
from moxtw.sasl.credentials import PasswordError
from moxtw.web import base
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

# A form may carry all of domains.toml (up to the listeners' limit on bodies).
MAX_CONFIG_FORM = base.MAX_BODY
MAX_FIELD = 1000  # characters of a name, address or setting in a form
MAX_FLASH = 1000  # sessions with a message waiting for their next page
MAX_LOG_PACKAGES = 100  # package log levels set at run time

API = [
    ("GET", "/api/domains", "-> [{domain, ascii, disabled, description, accounts, aliases}]"),
    ("GET", "/api/domains/<domain>", "-> {domain, records: [{name, type, value, note}], pending, zone, "
                                     "selectors: [{selector, sign, key_file, hash, expiration}], aliases}"),
    ("GET", "/api/domains/<domain>/dnscheck", "-> [{check, status: ok|warning|error, message}]"),
    ("GET", "/api/domains/<domain>/aliases", "-> [{address, addresses, postpublic, allowmsgfrom}]"),
    ("POST", "/api/domains/add", "{domain, account, localpart} -> {message}: with DKIM keys; a new account "
                                 "is made with localpart@domain"),
    ("POST", "/api/domains/remove", "{domain} -> {message}"),
    ("GET", "/api/accounts", "-> [{name, domain, addresses, login_disabled}]"),
    ("GET", "/api/accounts/<account>", "-> {name, domain, addresses, settings: {...}, quota_used, quota_limit}"),
    ("POST", "/api/accounts/add", "{account, address} -> {message}"),
    ("POST", "/api/accounts/remove", "{account} -> {message}: its messages are kept"),
    ("POST", "/api/accounts/password", "{account, password} -> {message}: ends its web sessions"),
    ("POST", "/api/accounts/settings", "{account, FullName, Description, QuotaMessageSize, "
                                       "MaxOutgoingMessagesPerDay, MaxFirstTimeRecipientsPerDay, "
                                       "NoFirstTimeSenderDelay, LoginDisabled} (each optional) -> {message}"),
    ("POST", "/api/addresses/add", "{address, account} -> {message}; '@domain' is a catchall"),
    ("POST", "/api/addresses/remove", "{address} -> {message}"),
    ("POST", "/api/aliases/add", "{alias, addresses: 'a@x, b@x'} -> {message}"),
    ("POST", "/api/aliases/remove", "{alias} -> {message}"),
    ("POST", "/api/aliases/update", "{alias, postpublic, allowmsgfrom} ('true'/'false', each optional) -> "
                                    "{message}"),
    ("POST", "/api/aliases/addmembers", "{alias, addresses} -> {message}"),
    ("POST", "/api/aliases/rmmembers", "{alias, addresses} -> {message}"),
    ("GET", "/api/config", "-> {text, version}: domains.toml and the version to edit it from"),
    ("POST", "/api/config", "{text, version} -> {message, version}: 400 {error} when it does not load, "
                            "409 when the file changed since version"),
    ("GET", "/api/loglevels", "-> {default, packages: {pkg: level}, levels}"),
    ("POST", "/api/loglevels", "{level, pkg} or {pkg, remove: 'true'} -> {default, packages}: until the "
                               "next start"),
    ("GET", "/api/routes", "-> {routes, domains: {domain: routes}, accounts: {account: routes}, transports}"),
]


def form_limit(action):
    """Bytes a form of ``action`` may have: all of domains.toml for the text edit."""
    return MAX_CONFIG_FORM if action in ("config/set", "config/save") else base.MAX_FORM


def page_url(base_path, name, args=None):
    """The path of an admin page (its name as in :meth:`ConfigAdmin.page`)."""
    args = args or {}
    if name == "domain":
        return f"{base_path}domains/{quote(args['domain'], safe='')}"
    if name == "dnscheck":
        return f"{base_path}domains/{quote(args['domain'], safe='')}/dnscheck"
    if name == "account":
        return f"{base_path}accounts/{quote(args['account'], safe='')}"
    return base_path + name


def _text(fields, name, required=True, limit=MAX_FIELD):
    value = fields.get(name, "")
    if len(value) > limit:
        raise HTTPError(400, f"{name}: at most {limit} characters")
    value = value.strip()
    if required and not value:
        raise HTTPError(400, f"{name} is required")
    return value


def _bool(fields, name):
    """A boolean field, None when absent: true/false (also 1/0, on/off, yes/no)."""
    value = fields.get(name)
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("true", "1", "on", "yes"):
        return True
    if v in ("false", "0", "off", "no", ""):
        return False
    raise HTTPError(400, f"{name}: true or false expected")


def _addresses(fields, name="addresses"):
    """A list of addresses from text separated by commas, spaces or lines."""
    raw = _text(fields, name, limit=64 * 1024)
    out = [a for a in re.split(r"[\s,]+", raw) if a]
    if len(out) > 1000:
        raise HTTPError(400, f"{name}: at most 1000 addresses")
    return out


def _domain_key(dynamic, name):
    """The key of Domains for a domain as given in a path (Unicode or A-label)."""
    try:
        want = normalize(name) if len(name) <= 255 else None
    except Exception:
        want = None
    for key in dynamic.Domains:
        if want is not None and normalize(str(key)) == want:
            return key
    raise HTTPError(404, "no such domain")


def _duration(value):
    if value is None:
        return ""
    seconds = int(value.total_seconds()) if isinstance(value, timedelta) else int(value)
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"


def _routes(routes):
    return [{"from_domain": [str(d) for d in r.FromDomain], "to_domain": [str(d) for d in r.ToDomain],
             "minimum_attempts": r.MinimumAttempts, "transport": r.Transport} for r in routes]


def _transport(name, t):
    """A transport without its secrets (passwords are never shown)."""
    for method in type(t).model_fields:
        m = getattr(t, method)
        if m is not None:
            break
    else:
        return {"name": name, "method": "direct", "details": ""}
    if method in ("Submissions", "Submission", "SMTP"):
        details = f"{m.Host}" + (f":{m.Port}" if m.Port else "")
        if m.Auth is not None:
            details += f", user {m.Auth.Username}"
            if m.Auth.Mechanisms:
                details += f" ({', '.join(m.Auth.Mechanisms)})"
        if m.NoSTARTTLS:
            details += ", no STARTTLS"
        if m.STARTTLSInsecureSkipVerify:
            details += ", certificate not verified"
    elif method == "Socks":
        details = f"{m.Address}, from {', '.join(map(str, m.RemoteIPs))} as {m.RemoteHostname}"
    elif method == "Direct":
        details = ", ".join(w for w, off in (("no IPv4", m.DisableIPv4), ("no IPv6", m.DisableIPv6)) if off)
    else:  # Fail
        details = f"{m.SMTPCode} {m.SMTPMessage}"
    return {"name": name, "method": method, "details": details}


def domain_list(dynamic):
    out = []
    for name, dom in sorted(dynamic.Domains.items()):
        users = sorted(a for a, acc in dynamic.Accounts.items()
                       if acc.Domain == name or any(k.rpartition("@")[2] == name for k in acc.Destinations))
        out.append({"domain": str(name), "ascii": normalize(str(name)), "disabled": dom.Disabled,
                    "description": dom.Description, "accounts": users, "aliases": len(dom.Aliases)})
    return out


def alias_list(dynamic, key):
    return [{"address": f"{lp}@{key}", "addresses": list(a.Addresses), "postpublic": a.PostPublic,
             "allowmsgfrom": a.AllowMsgFrom}
            for lp, a in sorted(dynamic.Domains[key].Aliases.items())]


def domain_detail(static, dynamic, config_dir, data_dir, key):
    """What the domain page shows; reads the DKIM key files (in a thread)."""
    dom = dynamic.Domains[key]
    records, pending = rec.domain_records(static, dynamic, rec.config_path_fn(config_dir), key, data_dir=data_dir)
    selectors = [{"selector": str(s), "sign": str(s) in dom.DKIM.Sign, "key_file": sel.PrivateKeyFile,
                  "hash": sel.Hash, "expiration": _duration(sel.Expiration)}
                 for s, sel in sorted(dom.DKIM.Selectors.items())]
    return {"domain": str(key), "ascii": normalize(str(key)), "disabled": dom.Disabled,
            "description": dom.Description,
            "records": [{"name": r.name, "type": r.rdtype, "value": rec.rdata_text(r), "note": r.note}
                        for r in records],
            "pending": [{"text": p.text, "why": p.why} for p in pending],
            "zone": rec.zone_text(records, pending), "selectors": selectors,
            "aliases": alias_list(dynamic, key)}


def account_list(dynamic):
    return [{"name": n, "domain": str(a.Domain), "addresses": sorted(a.Destinations),
             "login_disabled": a.LoginDisabled} for n, a in sorted(dynamic.Accounts.items())]


def routes_info(static, dynamic):
    return {"routes": _routes(dynamic.Routes),
            "domains": {str(d): _routes(dom.Routes) for d, dom in sorted(dynamic.Domains.items()) if dom.Routes},
            "accounts": {a: _routes(acc.Routes) for a, acc in sorted(dynamic.Accounts.items()) if acc.Routes},
            "transports": [_transport(n, t) for n, t in sorted(static.Transports.items())]}


def _setting_values(fields):
    """Typed values of the account settings present in ``fields``."""
    values = {}
    for field, kind in configedit.ACCOUNT_SETTINGS.items():
        if field not in fields:
            continue
        if kind is bool:
            values[field] = _bool(fields, field)
        elif kind is int:
            text = _text(fields, field, limit=30)
            try:
                values[field] = int(text)
            except ValueError:
                raise HTTPError(400, f"{field}: a number expected") from None
        else:
            values[field] = _text(fields, field, required=False)
    return values


class ConfigAdmin:
    """Pages and API calls about the configuration, for AdminApp. ``server`` is the
    ServerCommands of the control socket: reload of domains.toml and the log levels."""

    def __init__(self, current, config_dir, data_dir, store, resolver, server, sessions, path):
        self.current = current
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.store = store
        self.resolver = resolver
        self.server = server
        self.sessions = sessions  # the SessionStore
        self.path = path
        self._flash = {}  # session id -> (ok, text), shown on the next page

    # -- reading

    async def _get(self, name, args):
        static, dynamic = self.current()
        if name == "domains":
            return domain_list(dynamic)
        if name == "domain":
            key = _domain_key(dynamic, args["domain"])
            return await threads.deferToThread(domain_detail, static, dynamic, self.config_dir, self.data_dir, key)
        if name == "aliases":
            return alias_list(dynamic, _domain_key(dynamic, args["domain"]))
        if name == "dnscheck":
            return await self._dnscheck(_domain_key(dynamic, args["domain"]))
        if name == "accounts":
            return account_list(dynamic)
        if name == "account":
            return await self._account(args["account"])
        if name == "config":
            text, version = await threads.deferToThread(self._read_text)
            return {"text": text, "version": version}
        if name == "loglevels":
            return await self._loglevels({})
        if name == "logging":
            return {"loglevels": await self._loglevels({}), "levels": list(LEVELS)}
        if name == "routes":
            return routes_info(static, dynamic)
        raise HTTPError(404, "not found")

    def _read_text(self):
        try:
            return configedit.read_text(self.config_dir)
        except configedit.EditError as e:
            raise HTTPError(400, str(e)) from None

    async def _dnscheck(self, key):
        """The DNS check (moxtw.admin.dnscheck) in the resolver's threads: its lookups
        block, the reactor must not."""
        if self.resolver is None:
            raise HTTPError(503, "no resolver")
        static, dynamic = self.current()
        results = await self.resolver.run(dnscheck.check_domain, static, dynamic, rec.config_path_fn(self.config_dir),
                                          key, self.resolver.lookup_sync, data_dir=self.data_dir)
        return [{"check": r.check, "status": r.status, "message": r.message} for r in results]

    async def _account(self, name):
        static, dynamic = self.current()
        conf = dynamic.Accounts.get(name)
        if conf is None:
            raise HTTPError(404, "no such account")
        out = {"name": name, "domain": str(conf.Domain), "addresses": sorted(conf.Destinations),
               "settings": {f: getattr(conf, f) for f in configedit.ACCOUNT_SETTINGS},
               "routes": _routes(conf.Routes), "quota_used": None, "quota_limit": None,
               "domains": [str(d) for d in sorted(dynamic.Domains)]}
        if self.store is not None:
            acc = await self.store.open_account(name)
            out["quota_used"] = await acc.quota_used()
            out["quota_limit"] = getattr(acc, "quota", 0) or 0
        return out

    async def _loglevels(self, args):
        if self.server is None:
            raise HTTPError(503, "log levels cannot be changed here")
        try:
            return await self.server.loglevels(args)
        except (CtlError, ValueError) as e:
            raise HTTPError(400, str(e)) from None

    # -- changing

    async def _apply(self, change):
        """Run a configedit change in a thread, then have the server reload now."""
        try:
            message = await threads.deferToThread(configedit.apply, self.config_dir, change)
        except configedit.EditError as e:
            raise HTTPError(400, self._error_text(e)) from None
        await self._reload()
        log.info("web admin config change: {message}", message=message)
        return message

    def _error_text(self, e):
        """A refusal's text, file names relative to the config directory."""
        text = str(e)
        if self.config_dir:
            text = text.replace(os.path.join(self.config_dir, ""), "")
        return text

    async def _reload(self):
        if self.server is not None:
            await self.server.reload({})

    async def _set_text(self, fields):
        # Browsers send a textarea's lines with CRLF (HTML: "normalize newlines").
        text = fields.get("text", "").replace("\r\n", "\n")
        version = _text(fields, "version", limit=100)
        try:
            new = await threads.deferToThread(configedit.replace_text, self.config_dir, text, version)
        except configedit.VersionConflict as e:
            raise HTTPError(409, str(e)) from None
        except configedit.EditError as e:
            raise HTTPError(400, self._error_text(e)) from None
        await self._reload()
        log.info("web admin config change: domains.toml replaced", version=new)
        return {"message": "domains.toml saved", "version": new}

    async def _set_password(self, fields):
        name = _text(fields, "account")
        password = fields.get("password", "")
        if not password or len(password) > 1024:
            raise HTTPError(400, "a password of 1 to 1024 characters is required")
        if name not in self.current()[1].Accounts:
            raise HTTPError(400, f"no account {name!r}")
        acc = await self.store.open_account(name)
        try:
            await acc.set_password(password)
        except PasswordError as e:
            raise HTTPError(400, f"password refused: {e}") from None
        # Its web sessions end, as after the account changes its own password.
        await self.sessions.remove_others("account", name, "")
        log.info("web admin set account password", account=name)
        return f"password of account {name} set"

    async def _action(self, action, fields):
        """Run a change; returns its message."""
        dynamic = self.current()[1]
        if action == "domains/add":
            account = _text(fields, "account")
            return await self._apply(configedit.domain_add(
                _text(fields, "domain"), account, _text(fields, "localpart", required=False) or None,
                new_account=account not in dynamic.Accounts))
        if action == "domains/remove":
            return await self._apply(configedit.domain_rm(_text(fields, "domain")))
        if action == "accounts/add":
            name = _text(fields, "account")
            kept = self.data_dir and name not in dynamic.Accounts and await threads.deferToThread(
                os.path.isdir, os.path.join(self.data_dir, "accounts", name))
            message = await self._apply(configedit.account_add(name, _text(fields, "address")))
            if kept:
                # A removed account's data is kept (moxtw account rm): the new one gets it.
                message += ("; the data of an earlier account of this name is used again (its messages, "
                            "password and app passwords): set a new password")
            return message
        if action == "accounts/remove":
            return await self._apply(configedit.account_rm(_text(fields, "account")))
        if action == "accounts/password":
            return await self._set_password(fields)
        if action == "accounts/settings":
            values = _setting_values(fields)
            return await self._apply(configedit.account_settings(_text(fields, "account"), values))
        if action == "addresses/add":
            return await self._apply(configedit.address_add(_text(fields, "address"), _text(fields, "account")))
        if action == "addresses/remove":
            return await self._apply(configedit.address_rm(_text(fields, "address")))
        if action == "aliases/add":
            return await self._apply(configedit.alias_add(_text(fields, "alias"), _addresses(fields)))
        if action == "aliases/remove":
            return await self._apply(configedit.alias_rm(_text(fields, "alias")))
        if action == "aliases/update":
            return await self._apply(configedit.alias_update(
                _text(fields, "alias"), postpublic=_bool(fields, "postpublic"),
                allowmsgfrom=_bool(fields, "allowmsgfrom")))
        if action == "aliases/addmembers":
            return await self._apply(configedit.alias_addaddr(_text(fields, "alias"), _addresses(fields)))
        if action == "aliases/rmmembers":
            return await self._apply(configedit.alias_rmaddr(_text(fields, "alias"), _addresses(fields)))
        raise HTTPError(404, "not found")

    async def _set_loglevel(self, fields):
        pkg = _text(fields, "pkg", required=False, limit=100)
        if _bool(fields, "remove"):
            if not pkg:
                raise HTTPError(400, "pkg is required")
            return await self._loglevels({"pkg": pkg, "remove": True})
        level = _text(fields, "level", limit=20)
        if pkg:
            packages = (await self._loglevels({}))["packages"]
            if pkg not in packages and len(packages) >= MAX_LOG_PACKAGES:
                # Each is kept (and matched against every package logging) until a restart.
                raise HTTPError(400, f"at most {MAX_LOG_PACKAGES} package log levels: remove one first")
        return await self._loglevels({"pkg": pkg, "level": level})

    # -- the JSON API

    async def api_get(self, request, name, args):
        if name == "config":
            request.moxtw_no_compress = True  # may hold secrets (webhook Authorization): no BREACH risk
        return base.json_response(request, await self._get(name, args))

    async def api_action(self, request, action, fields):
        if action == "config/set":
            return base.json_response(request, await self._set_text(fields))
        if action == "loglevels/set":
            return base.json_response(request, await self._set_loglevel(fields))
        return base.json_response(request, {"message": await self._action(action, fields)})

    # -- pages

    def _targets(self, action, fields):
        """(page after success, page after a refusal) of a form, as (name, args)."""
        group, _, what = action.partition("/")
        if group == "domains":
            domain = ("domain", {"domain": fields.get("domain", "")[:MAX_FIELD].strip()})
            return (domain, ("domains", {})) if what == "add" else (("domains", {}), domain)
        if group in ("accounts", "addresses"):
            account = ("account", {"account": fields.get("account", "")[:MAX_FIELD].strip()})
            if action == "accounts/add":
                return account, ("accounts", {})
            if action == "accounts/remove":
                return ("accounts", {}), account
            return account, account
        if group == "aliases":
            domain = ("domain", {"domain": fields.get("alias", "")[:MAX_FIELD].rpartition("@")[2].strip()})
            return domain, domain
        if group == "logging":
            return ("logging", {}), ("logging", {})
        return ("config", {}), ("config", {})

    async def page_action(self, request, session, action, fields):
        """A form's POST: the change, then a redirect to the page to see it (with its
        message), or that page again with the refusal."""
        done, refused = self._targets(action, fields)
        try:
            if action == "config/save":
                message = (await self._set_text(fields))["message"]
            elif action == "logging/set":
                await self._set_loglevel(fields)
                message = "log levels changed"
            elif action == "logging/remove":
                await self._set_loglevel(dict(fields, remove="true"))
                message = "log level removed"
            else:
                message = await self._action(action, fields)
        except HTTPError as e:
            if e.code not in (400, 409):
                raise
            request.setResponseCode(e.code)
            extra = {}
            if action == "config/save":
                # The text stays as typed; the version stays the one it was based on.
                extra = {"text": fields.get("text", "").replace("\r\n", "\n"), "version": fields.get("version", ""),
                         "conflict": e.code == 409}
            try:
                return await self.page(request, session, refused[0], refused[1], error=e.text, extra=extra)
            except HTTPError:
                raise e from None
        if done[0] == "domain":
            # The key as configured (the form may have had the A-label or other case).
            try:
                done = ("domain", {"domain": str(_domain_key(self.current()[1], done[1]["domain"]))})
            except HTTPError:
                done = ("domains", {})
        if len(self._flash) >= MAX_FLASH:
            self._flash.clear()
        self._flash[session.id] = message
        request.setResponseCode(303)
        request.setHeader(b"location", page_url(self.path, *done).encode("ascii"))
        return b""

    async def page(self, request, session, name, args, error=None, extra=None):
        message = self._flash.pop(session.id, None) if not error else None
        data = await self._get(name, args)
        if name == "config" and extra:
            data = dict(data, **extra)
        titles = {"domains": "Domains", "domain": "Domain " + args.get("domain", ""),
                  "dnscheck": "DNS check of " + args.get("domain", ""), "accounts": "Accounts",
                  "account": "Account " + args.get("account", ""), "config": "domains.toml",
                  "logging": "Log levels", "routes": "Routes and transports"}
        return base.render(request, f"admin_{name}.html", title=titles[name], d=data, args=args,
                           message=message, error=error, csrf=session.csrf, base=self.path,
                           header="Admin " + str(self.current()[0].Hostname))


__all__ = ["API", "ConfigAdmin", "form_limit"]
