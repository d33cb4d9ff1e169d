"""Changes to domains.toml from the command line (and later the admin pages): accounts,
addresses, domains and aliases, as mox's ``config account|address|domain|alias``.

Each change is a function that edits the tomlkit document (comments and layout of the
rest survive) and raises :class:`EditError` with a clear message for bad input.
:func:`apply` runs one under a lock file, validates the result as a whole (the same
checks as loading: addresses in one account only, references to accounts and domains)
and replaces the file atomically only when it is valid; a running server picks it up
(the command line also asks it to reload at once through the control socket).
"""

import fcntl
import os
import re
import secrets
import stat
import tomllib
from contextlib import contextmanager

import tomlkit
from pydantic import ValidationError

from moxtw.config.errors import ConfigError
from moxtw.config.load import DYNAMIC_FILE, STATIC_FILE, load, load_static, validate_dynamic, write_atomic, write_dynamic
from moxtw.config.schema import Ruleset
from moxtw.dkim.keys import generate_ed25519, generate_rsa
from moxtw.dns import normalize
from moxtw.smtp.address import AddressError, parse_address, parse_domain
from moxtw.store.errors import MailboxNameError
from moxtw.store.model import check_new_mailbox_name, normalize_mailbox_name

LOCK_FILE = ".domains.toml.lock"


class EditError(ValueError):
    """A change refused; the file is untouched."""


@contextmanager
def _locked(config_dir):
    fd = os.open(os.path.join(config_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def apply(config_dir, change):
    """Run ``change(doc, config)`` on domains.toml and write it when valid; returns the
    change's result. ``config`` is the loaded configuration before the change (for
    lookups). EditError for refused input, ConfigError when the result is invalid."""
    with _locked(config_dir):
        try:
            cfg = load(config_dir)
            static = load_static(cfg.static_path)
        except ConfigError as e:
            raise EditError("the configuration does not load: " + "; ".join(e.errors)) from None
        result = []

        def mutate(doc):
            result.append(change(doc, cfg))

        try:
            write_dynamic(cfg.dynamic_path, static, mutate)
        except BaseException as e:
            cleanup = getattr(change, "cleanup", None)
            if cleanup is not None:
                cleanup()
            if isinstance(e, ConfigError):
                raise EditError("; ".join(e.errors)) from None
            if isinstance(e, ValueError) and not isinstance(e, EditError):
                # tomlkit refusing the edit of this file's layout: an answer, not a crash.
                raise EditError(f"domains.toml cannot be changed this way as it is written: {e}; "
                                "edit it as text") from None
            raise
        return result[0] if result else None


# -- lookups on the loaded config ------------------------------------------------------------


def _domain_key(cfg, name):
    """The key of Domains for a domain (Unicode or A-label), or EditError."""
    try:
        want = normalize(name)
    except Exception:
        raise EditError(f"invalid domain {name!r}") from None
    for key in cfg.dynamic.Domains:
        if normalize(str(key)) == want:
            return key
    raise EditError(f"domain {name!r} is not configured (add it with 'moxtw config domain add')")


def _address(cfg, text, catchall=False):
    """``(localpart, domain key)`` of an address at a configured domain. With
    ``catchall``, "@domain" is accepted (localpart "")."""
    if catchall and text.startswith("@"):
        return "", _domain_key(cfg, text[1:])
    try:
        addr = parse_address(text)
    except AddressError as e:
        raise EditError(str(e)) from None
    if not addr.localpart:
        raise EditError(f"invalid address {text!r}: empty localpart")
    domain = _domain_key(cfg, addr.domain.unicode)
    dom = cfg.dynamic.Domains[domain]
    for sep in dom.catchall_separators():
        if sep in addr.localpart:
            raise EditError(f"localpart of {text!r} contains the domain's catchall separator {sep!r}")
    return addr.localpart, domain


def _canon(cfg, localpart, domain):
    dom = cfg.dynamic.Domains.get(domain)
    if dom is None or not dom.LocalpartCaseSensitive:
        localpart = localpart.lower()
    return f"{localpart}@{domain}"


def _owner(cfg, localpart, domain):
    """What already uses the address: "account NAME", "alias ...", or None."""
    canon = _canon(cfg, localpart, domain)
    for name, acc in cfg.dynamic.Accounts.items():
        for key in acc.Destinations:
            lp, _, d = key.rpartition("@")
            if _canon(cfg, lp, d) == canon:
                return f"account {name!r}"
    for dname, dom in cfg.dynamic.Domains.items():
        for lp in dom.Aliases:
            if _canon(cfg, lp, dname) == canon:
                return "an alias"
        for kind in ("DMARC", "TLSRPT"):
            rep = getattr(dom, kind)
            if rep is not None and _canon(cfg, rep.Localpart, rep.Domain or dname) == canon:
                return f"the {kind} reporting address of {dname}"
    return None


def _table(parent, key):
    if key not in parent:
        parent[key] = tomlkit.inline_table() if isinstance(parent, tomlkit.items.InlineTable) else tomlkit.table()
    return parent[key]


def _inline(value):
    """A tomlkit table (and the tables in it) as an inline table."""
    if not isinstance(value, tomlkit.items.Table):
        return value
    out = tomlkit.inline_table()
    for k, v in value.items():
        out[k] = _inline(v)
    return out


def _put(parent, key, table):
    """``parent[key] = table``, inline when ``parent`` is an inline table (domains.toml may
    write ``Destinations = {"a@x" = {}}``: a table in it is no TOML, tomlkit refuses)."""
    parent[key] = _inline(table) if isinstance(parent, tomlkit.items.InlineTable) else table


# -- accounts ------------------------------------------------------------------------


def check_account_name(name):
    """EditError unless ``name`` can name an account (and its directory under the data
    directory): ASCII letters, digits, '.', '_' and '-', not starting with '.' or '-'."""
    if not name or len(name) > 128 or not name.isascii() or not all(c.isalnum() or c in "._-" for c in name) \
            or name[0] in ".-":
        raise EditError(f"invalid account name {name[:128]!r}: letters, digits, '.', '_' and '-' only")


def account_add(name, address):
    def change(doc, cfg):
        check_account_name(name)
        if name in cfg.dynamic.Accounts:
            raise EditError(f"account {name!r} exists")
        lp, domain = _address(cfg, address)
        used = _owner(cfg, lp, domain)
        if used:
            raise EditError(f"address {address} is already used by {used}")
        acc = tomlkit.table()
        acc["Domain"] = domain
        dests = tomlkit.table()
        dests[f"{lp}@{domain}"] = tomlkit.table()
        acc["Destinations"] = dests
        _put(_table(doc, "Accounts"), name, acc)
        return f"account {name} added with address {lp}@{domain}"

    return change


def account_rm(name):
    def change(doc, cfg):
        if name not in cfg.dynamic.Accounts:
            raise EditError(f"no account {name!r}")
        # A hold rule naming it would hold the mail of a later account of that name.
        rules = [i for i, r in enumerate(cfg.dynamic.QueueHoldRules) if r.Account == name]
        if rules:
            raise EditError(f"account {name!r} is named by queue hold rule(s) {', '.join(map(str, rules))}: "
                            "remove them first")
        del doc["Accounts"][name]
        return f"account {name} removed from the configuration"

    return change


# Account fields the admin pages edit, with their type; the schema checks the values
# (MaxOutgoingMessagesPerDay >= 1, ...) when the result is validated.
ACCOUNT_SETTINGS = {
    "FullName": str,
    "Description": str,
    "QuotaMessageSize": int,
    "MaxOutgoingMessagesPerDay": int,
    "MaxFirstTimeRecipientsPerDay": int,
    "NoFirstTimeSenderDelay": bool,
    "LoginDisabled": str,
}
MAX_SETTING_TEXT = 1000


def account_settings(name, values):
    """Set fields of :data:`ACCOUNT_SETTINGS` of account ``name``; ``values`` maps field
    names to values of their type. Fields with their current value are left alone."""
    def change(doc, cfg):
        acc = cfg.dynamic.Accounts.get(name)
        if acc is None:
            raise EditError(f"no account {name!r}")
        t = doc["Accounts"][name]
        changed = []
        for field, value in values.items():
            kind = ACCOUNT_SETTINGS.get(field)
            if kind is None:
                raise EditError(f"{field[:40]!r} is not an account setting this edits")
            if type(value) is not kind:
                raise EditError(f"{field}: {kind.__name__} expected")
            if kind is str and len(value) > MAX_SETTING_TEXT:
                raise EditError(f"{field}: at most {MAX_SETTING_TEXT} characters")
            if kind is int and not -2 ** 63 <= value < 2 ** 63:
                raise EditError(f"{field}: out of range")
            if getattr(acc, field) == value:
                continue
            t[field] = value
            changed.append(field)
        if not changed:
            return f"account {name}: nothing changed"
        return f"account {name}: {', '.join(changed)} changed"

    return change


# -- addresses -----------------------------------------------------------------------


def address_add(address, account):
    def change(doc, cfg):
        if account not in cfg.dynamic.Accounts:
            raise EditError(f"no account {account!r}")
        lp, domain = _address(cfg, address, catchall=True)
        used = _owner(cfg, lp, domain)
        if used:
            raise EditError(f"address {address} is already used by {used}")
        acc = doc["Accounts"][account]
        _put(_table(acc, "Destinations"), f"{lp}@{domain}", tomlkit.table())
        return f"address {lp}@{domain} added to account {account}"

    return change


def address_rm(address):
    def change(doc, cfg):
        lp, domain = _address(cfg, address, catchall=True)
        canon = _canon(cfg, lp, domain)
        for name, acc in cfg.dynamic.Accounts.items():
            for key in acc.Destinations:
                klp, _, kd = key.rpartition("@")
                if _canon(cfg, klp, kd) == canon:
                    if len(acc.Destinations) == 1:
                        raise EditError(f"{key} is the only address of account {name!r}: remove the account instead")
                    del doc["Accounts"][name]["Destinations"][key]
                    return f"address {key} removed from account {name}"
        raise EditError(f"no account has address {address}")

    return change


# -- domains -------------------------------------------------------------------------


def domain_add(domain, account, localpart=None, config_dir=None, year=None, new_account=False):
    """Add a domain with new DKIM keys (ed25519 and RSA-2048) and its DMARC and TLS
    reports delivered to ``account``; with ``localpart``, that address is added to the
    account. With ``new_account`` (mox's "config domain add" for an account that does not
    exist yet), the account is made with localpart@domain as its address. Key files are
    removed again if the change is refused."""
    written = []

    def change(doc, cfg):
        try:
            d = parse_domain(domain)
        except AddressError as e:
            raise EditError(str(e)) from None
        name = d.unicode
        for key in cfg.dynamic.Domains:
            if normalize(str(key)) == normalize(name):
                raise EditError(f"domain {name!r} exists")
        if new_account:
            check_account_name(account)
            if account in cfg.dynamic.Accounts:
                raise EditError(f"account {account!r} exists")
            if not localpart:
                raise EditError("a new account needs a localpart: its address at the new domain")
        elif account not in cfg.dynamic.Accounts:
            raise EditError(f"no account {account!r}")
        from datetime import datetime, timezone

        y = year or datetime.now(timezone.utc).year
        dkim_dir = os.path.join(cfg.config_dir, "dkim")
        os.makedirs(dkim_dir, mode=0o700, exist_ok=True)
        selectors = tomlkit.table()
        for suffix, kind, pem in (("a", "ed25519", generate_ed25519()), ("b", "rsa2048", generate_rsa(2048))):
            # A key file of an earlier domain of this name (removed, its key files kept)
            # is left alone: the new key gets the next free name.
            for n in range(1, 101):
                extra = "" if n == 1 else f"-{n}"
                rel = f"dkim/{d.ascii}.{y}{suffix}{extra}.{kind}.privatekey.pkcs8.pem"
                path = os.path.join(cfg.config_dir, rel)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                break
            else:
                raise EditError(f"{path} exists: remove old key files of {d.ascii} in the dkim directory")
            written.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                _share_like_config(f.fileno(), cfg.config_dir)
                os.fsync(f.fileno())
            sel = tomlkit.table()
            sel["PrivateKeyFile"] = rel
            sel["Expiration"] = "72h"
            selectors[f"{y}{suffix}"] = sel
        dom = tomlkit.table()
        dom["LocalpartCatchallSeparator"] = "+"
        dkim = tomlkit.table()
        dkim["Sign"] = [f"{y}a", f"{y}b"]
        dkim["Selectors"] = selectors
        dom["DKIM"] = dkim
        for kind, lp, mailbox in (("DMARC", "dmarcreports", "DMARC"), ("TLSRPT", "tlsreports", "TLSRPT")):
            rep = tomlkit.table()
            rep["Localpart"] = lp
            rep["Account"] = account
            rep["Mailbox"] = mailbox
            dom[kind] = rep
        _put(_table(doc, "Domains"), name, dom)
        msg = f"domain {name} added; DKIM selectors {y}a (ed25519) and {y}b (RSA)"
        if localpart:
            if "@" in localpart:
                raise EditError(f"invalid localpart {localpart!r}")
            try:
                parse_address(f"{localpart}@{d.ascii}")
            except AddressError as e:
                raise EditError(str(e)) from None
            if new_account:
                acc = tomlkit.table()
                acc["Domain"] = name
                dests = tomlkit.table()
                dests[f"{localpart}@{name}"] = tomlkit.table()
                acc["Destinations"] = dests
                _put(_table(doc, "Accounts"), account, acc)
                msg += f"; account {account} added with address {localpart}@{name}"
            else:
                _put(_table(doc["Accounts"][account], "Destinations"), f"{localpart}@{name}", tomlkit.table())
                msg += f"; address {localpart}@{name} added to account {account}"
        return msg

    def run(doc, cfg):
        try:
            return change(doc, cfg)
        except BaseException:
            _remove(written)
            raise

    run.cleanup = lambda: _remove(written)
    return run


def _share_like_config(fd, config_dir):
    """A new key file made by root gets the config directory's group and group read, as
    the server gives every config file at start (moxtw.privileges.share_config): the
    server, running as its own user, reads it at the reload without a restart."""
    st = os.stat(config_dir)
    if os.getuid() == 0 and st.st_gid != 0 and st.st_mode & stat.S_IRGRP:
        os.fchown(fd, -1, st.st_gid)
        os.fchmod(fd, 0o640)


def _remove(paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    paths.clear()


def domain_rm(domain):
    def change(doc, cfg):
        name = _domain_key(cfg, domain)
        users = [a for a, acc in cfg.dynamic.Accounts.items()
                 if acc.Domain == name or any(k.rpartition("@")[2] == name for k in acc.Destinations)]
        if users:
            raise EditError(f"domain {name} is still used by account(s) {', '.join(users)}: remove their "
                            "addresses at it (and change their Domain) first")
        del doc["Domains"][name]
        return f"domain {name} removed (its DKIM key files are kept)"

    return change


# -- aliases -------------------------------------------------------------------------


def _alias_key(cfg, alias):
    lp, domain = _address(cfg, alias)
    dom = cfg.dynamic.Domains[domain]
    canon = _canon(cfg, lp, domain)
    for key in dom.Aliases:
        if _canon(cfg, key, domain) == canon:
            return key, domain
    return None, (lp, domain)


def _members(cfg, addresses):
    out = []
    for a in addresses:
        lp, domain = _address(cfg, a)
        out.append(f"{lp}@{domain}")
    if not out:
        raise EditError("an alias needs at least one member address")
    return out


def alias_list(cfg, domain):
    name = _domain_key(cfg, domain)
    return [f"{lp}@{name}" for lp in cfg.dynamic.Domains[name].Aliases]


def alias_print(cfg, alias):
    key, domain = _alias_key(cfg, alias)
    if key is None:
        raise EditError(f"no alias {alias}")
    a = cfg.dynamic.Domains[domain].Aliases[key]
    return {"address": f"{key}@{domain}", "addresses": list(a.Addresses), "postpublic": a.PostPublic,
            "allowmsgfrom": a.AllowMsgFrom}


def alias_add(alias, addresses):
    def change(doc, cfg):
        key, where = _alias_key(cfg, alias)
        if key is not None:
            raise EditError(f"alias {alias} exists")
        lp, domain = where
        used = _owner(cfg, lp, domain)
        if used:
            raise EditError(f"address {alias} is already used by {used}")
        t = tomlkit.table()
        t["Addresses"] = _members(cfg, addresses)
        _put(_table(doc["Domains"][domain], "Aliases"), lp, t)
        return f"alias {lp}@{domain} added"

    return change


def alias_update(alias, postpublic=None, allowmsgfrom=None):
    """Change PostPublic and AllowMsgFrom. (Letting members list the members is not
    built, so there is no option for it.)"""
    def change(doc, cfg):
        key, domain, _ = _existing_alias(cfg, alias)
        t = doc["Domains"][domain]["Aliases"][key]
        for field, value in (("PostPublic", postpublic), ("AllowMsgFrom", allowmsgfrom)):
            if value is not None:
                t[field] = bool(value)
        return f"alias {key}@{domain} updated"

    return change


def alias_rm(alias):
    def change(doc, cfg):
        key, domain, _ = _existing_alias(cfg, alias)
        del doc["Domains"][domain]["Aliases"][key]
        return f"alias {key}@{domain} removed"

    return change


def _existing_alias(cfg, alias):
    """(localpart key, domain, current members) of an alias, or EditError."""
    key, domain = _alias_key(cfg, alias)
    if key is None:
        raise EditError(f"no alias {alias}")
    return key, domain, list(cfg.dynamic.Domains[domain].Aliases[key].Addresses)


def alias_addaddr(alias, addresses):
    def change(doc, cfg):
        key, domain, current = _existing_alias(cfg, alias)
        have = {a.lower() for a in current}
        new = [a for a in _members(cfg, addresses) if a.lower() not in have]
        if not new:
            raise EditError("every address is a member already")
        doc["Domains"][domain]["Aliases"][key]["Addresses"] = current + new
        return f"{len(new)} member(s) added to {key}@{domain}"

    return change


def alias_rmaddr(alias, addresses):
    def change(doc, cfg):
        key, domain, current = _existing_alias(cfg, alias)
        drop = {a.lower() for a in _members(cfg, addresses)}
        missing = drop - {a.lower() for a in current}
        if missing:
            raise EditError(f"not members: {', '.join(sorted(missing))}")
        left = [a for a in current if a.lower() not in drop]
        if not left:
            raise EditError("an alias keeps at least one member: remove the alias instead")
        doc["Domains"][domain]["Aliases"][key]["Addresses"] = left
        return f"{len(current) - len(left)} member(s) removed from {key}@{domain}"

    return change


# -- domains.toml as text ------------------------------------------------------------


class VersionConflict(EditError):
    """domains.toml changed since the version an edit started from."""


def text_version(data):
    """The version of domains.toml content (bytes): its SHA-256, hex."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_text(config_dir):
    """``(text, version)`` of domains.toml, for editing it as a whole with
    :func:`replace_text`. EditError when it is not UTF-8."""
    with open(os.path.join(config_dir, DYNAMIC_FILE), "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8"), text_version(data)
    except UnicodeDecodeError:
        raise EditError("domains.toml is not UTF-8: edit it on the server") from None


def replace_text(config_dir, text, version):
    """Replace domains.toml with ``text`` when it still has ``version`` (else
    VersionConflict) and the text loads (else EditError with the loader's errors, the
    file untouched); written atomically under the lock of :func:`apply`. A file that does
    not load can be replaced with one that does. Returns the new version."""
    path = os.path.join(config_dir, DYNAMIC_FILE)
    with _locked(config_dir):
        with open(path, "rb") as f:
            old = f.read()
        # Bytes: compare_digest refuses str with non-ASCII characters (TypeError).
        if not secrets.compare_digest(text_version(old).encode(), str(version).encode("utf-8", "replace")):
            raise VersionConflict("domains.toml was changed by someone else since you loaded it: load it "
                                  "again and redo your change")
        try:
            static = load_static(os.path.join(config_dir, STATIC_FILE))
            dynamic = validate_dynamic(text, path, static)
        except ConfigError as e:
            raise EditError("; ".join(e.errors)) from None
        try:
            before = set(tomllib.loads(old.decode("utf-8")).get("Accounts", {}))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
            before = set()
        for name in dynamic.Accounts:
            if name not in before:
                check_account_name(name)
        write_atomic(path, text)
        return text_version(text.encode("utf-8"))


# -- an account's own settings (the account web pages) ----------------------------------

MAX_FULL_NAME = 256
MAX_RULESETS = 100  # per destination
MAX_REGEXP = 1000  # characters of one regular expression

RULESET_FIELDS = ("SMTPMailFromRegexp", "MsgFromRegexp", "VerifiedDomain", "HeadersRegexp", "IsForward",
                  "ListAllowDomain", "AcceptRejectsToMailbox", "Mailbox", "Comment")


def account_full_name(account, full_name):
    """Set an account's FullName ("" removes it)."""
    def change(doc, cfg):
        if account not in cfg.dynamic.Accounts:
            raise EditError(f"no account {account!r}")
        name = full_name.strip()
        if len(name) > MAX_FULL_NAME or any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029"
                                            for c in name):
            raise EditError(f"a full name has at most {MAX_FULL_NAME} characters and no control characters")
        acc = doc["Accounts"][account]
        if name:
            acc["FullName"] = name
        elif "FullName" in acc:
            del acc["FullName"]
        return f"full name of account {account} set"

    return change


def _destination_key(cfg, account, address):
    acc = cfg.dynamic.Accounts.get(account)
    if acc is None:
        raise EditError(f"no account {account!r}")
    if address in acc.Destinations:
        return address
    want = address.lower()
    for key in acc.Destinations:
        if key.lower() == want:
            return key
    raise EditError(f"account {account!r} has no address {address!r}")


def check_ruleset(values):
    """A ruleset as a dict of schema field names, validated alone (EditError with the
    reason, e.g. an invalid regular expression); returns the dict without empty fields,
    as it is written."""
    unknown = set(values) - set(RULESET_FIELDS)
    if unknown:
        raise EditError(f"unknown ruleset fields: {', '.join(sorted(unknown))}")
    out = {}
    for k in RULESET_FIELDS:
        v = values.get(k)
        if v in (None, "", {}, False):
            continue
        if k == "HeadersRegexp":
            if not isinstance(v, dict) or not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
                raise EditError("HeadersRegexp: header regular expressions to value regular expressions")
            if len(v) > 20:
                raise EditError("HeadersRegexp: at most 20 header rules")
            for a, b in v.items():
                if not a or not b:
                    raise EditError("HeadersRegexp: a header rule needs a field and a value expression")
                for r in (a, b):
                    _check_regexp_text("HeadersRegexp", r)
        elif k == "IsForward":
            v = bool(v)
        elif not isinstance(v, str):
            raise EditError(f"{k}: text expected")
        elif k.endswith("Regexp"):
            _check_regexp_text(k, v)
        elif len(v) > 1000:
            raise EditError(f"{k}: at most 1000 characters")
        out[k] = v
    if not out.get("Mailbox"):
        raise EditError("a ruleset needs a mailbox to deliver to")
    for k in ("Mailbox", "AcceptRejectsToMailbox"):
        if k in out:
            out[k] = _mailbox_name(k, out[k])
    try:
        Ruleset(**out)
    except ValidationError as e:
        raise EditError("; ".join(_pydantic_message(err) for err in e.errors())) from None
    return out


def _check_regexp_text(field, value):
    if len(value) > MAX_REGEXP:
        raise EditError(f"{field}: a regular expression has at most {MAX_REGEXP} characters")
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as e:
        raise EditError(f"{field}: invalid regular expression {value!r}: {e}") from None
    if _nested_repeat(value):
        # Rulesets are matched at delivery, on the reactor, and Python's re holds the
        # interpreter while matching: "(a+)+$" against 40 characters of a header a
        # sender chose would stop the whole server (catastrophic backtracking).
        raise EditError(f"{field}: {value!r} repeats a repetition (like (a+)+), which can take exponential "
                        "time: make the inner part atomic, (?>...), or possessive, ++")


def _nested_repeat(value):
    """Whether the expression has a repetition (of more than one) inside another,
    outside atomic groups and possessive repetitions."""
    import re._compiler  # noqa: F401 - compiles one parsed part below
    import re._constants as c
    import re._parser as p

    repeats = (c.MAX_REPEAT, c.MIN_REPEAT)
    single = (c.LITERAL, c.NOT_LITERAL, c.IN, c.ANY, c.CATEGORY)

    def delimited(sub):
        """A repeated body whose iterations are told apart by a literal that none of its
        own repetitions (each of one character class) can match: "(-[a-z]+)*"."""
        while len(sub) == 1 and sub[0][0] is c.SUBPATTERN:
            sub = sub[0][1][3]
        lits = [av for op, av in sub if op is c.LITERAL]
        inner = [av for op, av in sub if op in repeats]
        if not lits or len(inner) != len([1 for op, _ in sub if op not in (c.LITERAL, c.IN, c.CATEGORY,
                                                                                c.NOT_LITERAL, c.ANY)]):
            return False  # groups, branches or other parts in the body: not told apart simply
        for _lo, _hi, isub in inner:
            if len(isub) != 1 or isub[0][0] not in single:
                return False
        for ch in lits:
            text = chr(ch)
            if not any(re._compiler.compile(p.SubPattern(sub.state, [isub[0]])).fullmatch(text)
                       for _lo, _hi, isub in inner):
                return True
        return False

    def walk(items, inside):
        for op, av in items:
            if op in repeats:
                lo, hi, sub = av
                many = hi is c.MAXREPEAT or hi > 1
                if many and inside and lo != hi:
                    return True
                if walk(sub, inside or (many and not delimited(sub))):
                    return True
            elif op in (getattr(c, "POSSESSIVE_REPEAT", None), getattr(c, "ATOMIC_GROUP", None)):
                continue  # no backtracking into them
            elif op is c.SUBPATTERN:
                if walk(av[3], inside):
                    return True
            elif op is c.BRANCH:
                if any(walk(b, inside) for b in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT):
                if walk(av[1], inside):
                    return True
            elif op is c.GROUPREF_EXISTS:
                if any(b is not None and walk(b, inside) for b in av[1:]):
                    return True
        return False

    try:
        return walk(p.parse(value), False)
    except Exception:  # noqa: BLE001 - compiled above; a parser we cannot walk: allowed
        return False


def _mailbox_name(field, name):
    try:
        name = normalize_mailbox_name(name)
        check_new_mailbox_name(name)
    except (MailboxNameError, ValueError) as e:
        raise EditError(f"{field}: invalid mailbox name {name!r}: {e}") from None
    return name


def _pydantic_message(err):
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{loc}: {msg}" if loc else msg


class RulesetsChanged(EditError):
    """The rulesets were changed by someone else since the edit started from them."""


def rulesets_version(rulesets):
    """A version of a destination's rulesets (as :func:`ruleset_dict` gives them), to
    detect concurrent edits: SHA-256 of their canonical JSON, shortened."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(rulesets, sort_keys=True).encode()).hexdigest()[:32]


def destination_set(account, address, mailbox=None, rulesets=None, based_on=None):
    """Replace the default Mailbox and/or the Rulesets (a list of dicts, each checked by
    :func:`check_ruleset`, in order) of one of ``account``'s own destinations. With
    ``based_on`` (the version of the rulesets the new list was made from), refused with
    RulesetsChanged when the file's rulesets differ by now (checked under the lock)."""
    def change(doc, cfg):
        key = _destination_key(cfg, account, address)
        dest_conf = cfg.dynamic.Accounts[account].Destinations[key]
        if based_on is not None and rulesets_version([ruleset_dict(rs) for rs in dest_conf.Rulesets]) != based_on:
            raise RulesetsChanged(f"the rulesets of {key} were changed meanwhile: reload the page and redo "
                                  "your change")
        if dest_conf.SMTPError:
            raise EditError(f"{key} refuses mail (SMTPError): it has no mailbox or rulesets")
        dests = doc["Accounts"][account]["Destinations"]
        dest = dests[key]
        if mailbox is not None:
            box = _mailbox_name("Mailbox", mailbox) if mailbox.strip() else ""
            if box and box != "Inbox":
                dest["Mailbox"] = box
            elif "Mailbox" in dest:
                del dest["Mailbox"]
        if rulesets is not None:
            if len(rulesets) > MAX_RULESETS:
                raise EditError(f"at most {MAX_RULESETS} rulesets per address")
            checked = [check_ruleset(rs) for rs in rulesets]
            if checked:
                aot = tomlkit.aot()
                for rs in checked:
                    t = tomlkit.table()
                    for k, v in rs.items():
                        if k == "HeadersRegexp":
                            h = tomlkit.inline_table()
                            h.update(v)
                            t[k] = h
                        else:
                            t[k] = v
                    aot.append(t)
                dest["Rulesets"] = aot
            elif "Rulesets" in dest:
                del dest["Rulesets"]
        return f"destination {key} of account {account} updated"

    return change


def ruleset_dict(rs):
    """A loaded Ruleset as the dict :func:`destination_set` takes."""
    out = {}
    for k in RULESET_FIELDS:
        v = getattr(rs, k)
        if v not in (None, "", {}, False):
            out[k] = dict(v) if k == "HeadersRegexp" else (str(v) if not isinstance(v, bool) else v)
    return out
