"""Settings that moxtw accepts (mox's config files load unchanged) but that have no
effect in this version: loading a config that sets one to something other than its
default gives a warning naming it, so nobody believes a setting protects them when it
does nothing. The list shrinks as the features are built; a test proves that every
other field of the schema is used.

Paths are key paths in moxtw.toml (``STATIC``) and domains.toml (``DYNAMIC``); ``*``
stands for any key of a table (a listener, an account, ...) or any item of a list. A
path covers everything under it.
"""

from moxtw.config import schema as _schema
from moxtw.config.introspect import base_type

STATIC = {
    ("CheckUpdates",): "moxtw never checks for updates (nothing reaches out on its own)",
    ("InitialMailboxes",): "new accounts get the standard mailboxes",
    ("Listeners", "*", "TLS", "MinVersion"): "TLS 1.2 is the minimum on every listener",
    ("Listeners", "*", "TLS", "ClientAuthDisabled"): "TLS client certificates are not asked for",
    ("Listeners", "*", "SMTP", "NoRequireTLS"): "REQUIRETLS cannot be turned off yet",
    ("Listeners", "*", "SMTP", "TLSSessionTicketsDisabled"): "TLS session tickets cannot be turned off yet",
    ("Listeners", "*", "Submissions", "EnabledOnHTTPS"): "SMTP on the HTTPS port is not built yet",
    ("Listeners", "*", "IMAPS", "EnabledOnHTTPS"): "IMAP on the HTTPS port is not built yet",
    ("Listeners", "*", "PprofHTTP"): "there is no profiling listener",
    ("Listeners", "*", "MTASTSHTTPS", "Forwarded"): "no access log or rate limit uses the client IP yet",
    ("Listeners", "*", "WebserverHTTP", "RateLimitDisabled"): "the webserver is not built yet",
    ("Listeners", "*", "WebserverHTTPS", "RateLimitDisabled"): "the webserver is not built yet",
    ("Transports", "*", "Socks", "RemoteIPs"): "the proxy's IPs are not used for SPF checks yet",
}

DYNAMIC = {
    ("Domains", "*", "Aliases", "*", "ListMembers"): "alias members cannot list the members yet",
    ("Accounts", "*", "Destinations", "*", "FullName"): "no web interface or message composition uses it yet",
    ("Accounts", "*", "Destinations", "*", "MessageAuthRequiredSMTPError"): "not built yet",
    ("Accounts", "*", "Introbox"): "not built yet",
    ("Accounts", "*", "FromIDLoginAddresses"): "unique ids in the MAIL FROM of submitted mail are not built yet",
    ("Accounts", "*", "IMAPCapabilitiesDisabled"): "IMAP capabilities cannot be turned off per account yet",
    ("Accounts", "*", "KeepRetiredMessagePeriod"): "retired messages are not kept yet",
    ("Accounts", "*", "KeepRetiredWebhookPeriod"): "webhooks are not built yet",
    ("Accounts", "*", "OutgoingWebhook"): "webhooks are not built yet",
    ("Accounts", "*", "IncomingWebhook"): "webhooks are not built yet",
    ("WebDomainRedirects",): "the webserver is not built yet",
    ("WebHandlers",): "the webserver is not built yet",
}

# Webmail, webapi and autoconfig answer 503 (moxtw.unavailable) at their paths; whether
# they would trust X-Forwarded-* does not matter yet. (The account and admin pages use
# their Path and Forwarded.)
for _kind in ("WebmailHTTP", "WebmailHTTPS", "WebAPIHTTP", "WebAPIHTTPS", "AutoconfigHTTPS"):
    for _name in ("Forwarded",):
        if _name in base_type(_schema.Listener.model_fields[_kind].annotation).model_fields:
            STATIC[("Listeners", "*", _kind, _name)] = "the web interfaces are not built yet"

# Fields that do nothing by design: notes for the reader of the file.
DOCUMENTATION = {
    ("Accounts", "*", "Destinations", "*", "Rulesets", "*", "Comment"),
    ("Domains", "*", "Description"),
    ("Accounts", "*", "Description"),
}


def not_built(static, dynamic):
    """[(file, dotted key path, why)] for settings in ``static``/``dynamic`` (loaded
    models) that differ from their default and have no effect in this version."""
    found = []
    for fname, model, table in (("moxtw.toml", static, STATIC), ("domains.toml", dynamic, DYNAMIC)):
        if model is None:
            continue
        for path, why in table.items():
            for keys in _set_at(model, path, ()):
                found.append((fname, ".".join(str(k) for k in keys), why))
    return found


def _set_at(obj, path, keys):
    """Key paths under ``obj`` matching ``path`` whose last field is set to a value other
    than its default."""
    head, rest = path[0], path[1:]
    if head == "*":
        items = obj.items() if isinstance(obj, dict) else enumerate(obj or ())
        for k, v in items:
            yield from _set_at(v, rest, keys + (k,))
        return
    fields = getattr(type(obj), "model_fields", None)
    if fields is None:
        return
    name = next((n for n, f in fields.items() if (f.alias or n) == head), None)
    if name is None:
        raise KeyError(f"{head} is not a field of {type(obj).__name__}")
    value = getattr(obj, name)
    if rest:
        if value is not None:
            yield from _set_at(value, rest, keys + (head,))
        return
    f = fields[name]
    default = f.get_default(call_default_factory=True)
    if name in obj.model_fields_set and value != default and value not in (None, "", [], {}):
        yield keys + (head,)
