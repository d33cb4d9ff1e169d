"""The account's own delivery settings on the account pages: its full name, and per
destination address the default mailbox and the rulesets (mox's Rulesets: match on SMTP
MAIL FROM, message From, a domain verified by SPF/DKIM, header fields; deliver to a
mailbox; the junk-analysis options IsForward, ListAllowDomain, AcceptRejectsToMailbox).

Every change goes through :func:`moxtw.admin.configedit.apply` (validated, domains.toml
replaced atomically, comments kept) in a thread, then the running server reloads the
file at once. A change names the destination by address and the ruleset by its index;
an account can only name its own destinations (configedit refuses others).
"""

import json

from twisted.internet import threads

from moxtw.admin import configedit
from moxtw.web.base import HTTPError

# Form/JSON field names of a ruleset, and the schema field each sets.
FORM_FIELDS = {
    "smtp_mail_from_regexp": "SMTPMailFromRegexp",
    "msg_from_regexp": "MsgFromRegexp",
    "verified_domain": "VerifiedDomain",
    "headers": "HeadersRegexp",
    "is_forward": "IsForward",
    "list_allow_domain": "ListAllowDomain",
    "accept_rejects_to_mailbox": "AcceptRejectsToMailbox",
    "mailbox": "Mailbox",
    "comment": "Comment",
}


def destinations(conf):
    """The account's destinations for pages and the API: [{address, mailbox, smtp_error,
    rulesets: [{the FORM_FIELDS names, index}]}]."""
    out = []
    for address in sorted(conf.Destinations):
        dest = conf.Destinations[address]
        rulesets = []
        for i, rs in enumerate(dest.Rulesets):
            d = configedit.ruleset_dict(rs)
            item = {f: d.get(k, False if k == "IsForward" else ({} if k == "HeadersRegexp" else ""))
                    for f, k in FORM_FIELDS.items()}
            item["index"] = i
            item["headers_text"] = headers_text(item["headers"])
            rulesets.append(item)
        version = configedit.rulesets_version([configedit.ruleset_dict(rs) for rs in dest.Rulesets])
        out.append({"address": address, "mailbox": dest.Mailbox or "Inbox", "smtp_error": dest.SMTPError,
                    "rulesets": rulesets, "version": version})
    return out


def headers_text(headers):
    return "\n".join(f"{k}: {v}" for k, v in headers.items())


def parse_headers(text):
    """Header rules from text, one "field-regexp: value-regexp" per line (the first ": "
    separates; a JSON object is taken as is)."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise HTTPError(400, "headers: invalid JSON object") from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            raise HTTPError(400, "headers: an object of strings expected")
        return value
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise HTTPError(400, f"headers: line {line[:80]!r} is not 'field-regexp: value-regexp'")
        out[key.strip()] = value.strip()
    return out


def ruleset_from_fields(fields):
    """The schema dict of a ruleset from form or JSON fields."""
    rs = {}
    for f, k in FORM_FIELDS.items():
        v = fields.get(f, "")
        if k == "HeadersRegexp":
            rs[k] = parse_headers(v)
        elif k == "IsForward":
            rs[k] = v.lower() in ("1", "on", "true", "yes")
        else:
            rs[k] = v.strip()
    return rs


def _index(fields, count, name="index"):
    try:
        i = int(fields.get(name, ""))
    except ValueError:
        raise HTTPError(400, f"{name}: a ruleset number expected") from None
    if not 0 <= i < count:
        raise HTTPError(404, "no such ruleset")
    return i


class Rules:
    """The changes, for one server: ``config_dir`` of domains.toml, ``current()`` giving
    (static, dynamic), ``reload()`` making the server read the file now."""

    def __init__(self, config_dir, current, reload):
        self.config_dir = config_dir
        self.current = current
        self.reload = reload

    def _conf(self, account):
        conf = self.current()[1].Accounts.get(account)
        if conf is None:
            raise HTTPError(404, "account no longer exists")
        return conf

    def _dest(self, account, fields):
        conf = self._conf(account)
        address = fields.get("address", "")
        for key in conf.Destinations:
            if key.lower() == address.lower():
                return key, conf.Destinations[key]
        raise HTTPError(404, "no such address in this account")

    async def _apply(self, change):
        if self.config_dir is None:
            raise HTTPError(503, "configuration changes are not possible on this server")
        try:
            msg = await threads.deferToThread(configedit.apply, self.config_dir, change)
        except configedit.RulesetsChanged as e:
            raise HTTPError(409, str(e)) from None
        except configedit.EditError as e:
            raise HTTPError(400, str(e)) from None
        if self.reload is not None:
            self.reload()
        return msg

    async def set_full_name(self, account, fields):
        return await self._apply(configedit.account_full_name(account, fields.get("full_name", "")))

    async def set_mailbox(self, account, fields):
        key, _ = self._dest(account, fields)
        return await self._apply(configedit.destination_set(account, key, mailbox=fields.get("mailbox", "")))

    def _rulesets(self, dest, fields):
        """The rulesets an edit starts from, and their version. A ``version`` sent with
        the edit (the pages send the one they showed) must still be current: an index
        from a stale page would name another ruleset (409)."""
        rulesets = [configedit.ruleset_dict(rs) for rs in dest.Rulesets]
        version = configedit.rulesets_version(rulesets)
        sent = fields.get("version", "")
        if sent and sent != version:
            raise HTTPError(409, "the rulesets were changed meanwhile: reload the page and redo your change")
        return rulesets, version

    def _set_rulesets(self, account, key, rulesets, version):
        return self._apply(configedit.destination_set(account, key, rulesets=rulesets, based_on=version))

    async def save_ruleset(self, account, fields):
        """Add a ruleset (no ``index``) or replace the one at ``index``."""
        key, dest = self._dest(account, fields)
        rulesets, version = self._rulesets(dest, fields)
        new = ruleset_from_fields(fields)
        if fields.get("index", "") == "":
            rulesets.append(new)
        else:
            rulesets[_index(fields, len(rulesets))] = new
        return await self._set_rulesets(account, key, rulesets, version)

    async def remove_ruleset(self, account, fields):
        key, dest = self._dest(account, fields)
        rulesets, version = self._rulesets(dest, fields)
        del rulesets[_index(fields, len(rulesets))]
        return await self._set_rulesets(account, key, rulesets, version)

    async def move_ruleset(self, account, fields):
        """Move the ruleset at ``index`` "up" or "down" (``direction``), or to ``to``."""
        key, dest = self._dest(account, fields)
        rulesets, version = self._rulesets(dest, fields)
        i = _index(fields, len(rulesets))
        if fields.get("to", "") != "":
            j = _index(fields, len(rulesets), "to")
        else:
            j = {"up": i - 1, "down": i + 1}.get(fields.get("direction", ""))
            if j is None:
                raise HTTPError(400, "direction: up or down")
            j = max(0, min(j, len(rulesets) - 1))
        rulesets.insert(j, rulesets.pop(i))
        return await self._set_rulesets(account, key, rulesets, version)
