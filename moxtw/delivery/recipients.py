"""Which local account (and mailbox) an incoming recipient address belongs to.

Follows mox's rules, from domains.toml: the domain must be configured (and not disabled);
the localpart is cut at the domain's catchall separator ("+": you+tag@ -> you@) and
compared case-insensitively unless the domain says otherwise; then, in order: an account
Destination with the full address, an alias (list) of the domain, postmaster@ and abuse@
(always accepted: RFC 5321 4.5.1, RFC 2142), and the domain's catchall Destination
("@domain"). postmaster@ the host name is accepted too.
"""

from dataclasses import dataclass, field

from moxtw.config.load import canonical_address


class NotLocal(Exception):
    """The domain is not one of ours: relaying is not allowed."""


class DomainDisabled(Exception):
    """The domain is configured but disabled: mail is refused temporarily."""


@dataclass(frozen=True)
class Recipient:
    address: str  # canonical address that matched (after separator and case rules)
    account: str  # account the mail goes to
    mailbox: str  # default mailbox of the destination
    destination: object = field(default=None, compare=False, repr=False)  # config Destination
    alias: str = ""  # alias address when this recipient came from an alias expansion
    postmaster: bool = False
    report: str = ""  # "dmarc" or "tlsrpt" for a reporting address (reports are parsed)
    disabled: bool = False  # alias member in a disabled domain: no account, try again later


@dataclass(frozen=True)
class AliasRecipient:
    address: str
    alias: object = field(compare=False, repr=False)  # config Alias
    members: tuple = ()  # member addresses


class _Index:
    """Destination lookups for one Dynamic config, built once per config object."""

    def __init__(self, dynamic):
        self.dynamic = dynamic
        self.destinations = {}
        for name, acc in dynamic.Accounts.items():
            for key, dest in acc.Destinations.items():
                lp, _, dom = key.rpartition("@")
                addr = canonical_address(dynamic, lp, dom) if lp else "@" + dom
                self.destinations[addr] = (name, dest)
        # Reporting addresses (DMARC RFC 7489 7, TLSRPT RFC 8460): localpart at the
        # configured domain, or at this domain.
        self.reports = {}
        for dname, dconf in dynamic.Domains.items():
            for kind, conf in (("dmarc", dconf.DMARC), ("tlsrpt", dconf.TLSRPT)):
                if conf is None:
                    continue
                dom = (conf.Domain or dname).lower()
                self.reports[f"{conf.Localpart.lower()}@{dom}"] = (kind, conf.Account, conf.Mailbox)


_cache = {}


def _index(dynamic):
    idx = _cache.get(id(dynamic))
    if idx is None or idx.dynamic is not dynamic:
        _cache.clear()  # one live config at a time; drop indexes of replaced configs
        idx = _cache[id(dynamic)] = _Index(dynamic)
    return idx


def strip_separator(domain_conf, localpart):
    seps = list(domain_conf.LocalpartCatchallSeparators)
    if domain_conf.LocalpartCatchallSeparator:
        seps.append(domain_conf.LocalpartCatchallSeparator)
    for sep in seps:
        if sep in localpart:
            localpart = localpart.split(sep, 1)[0]
    return localpart


def resolve(static, dynamic, localpart, domain):
    """Resolve ``localpart@domain`` (domain lower-case unicode).

    Returns a Recipient or an AliasRecipient, None for an unknown address in one of our
    domains; raises NotLocal or DomainDisabled.
    """
    dconf = dynamic.Domains.get(domain)
    if dconf is None:
        if domain == str(static.Hostname).lower() and localpart.lower() == "postmaster":
            return _postmaster(static, f"postmaster@{domain}")
        host = static.HostTLSRPT
        if (host is not None and domain == str(static.Hostname).lower()
                and localpart.lower() == host.Localpart.lower()):
            return Recipient(f"{localpart.lower()}@{domain}", host.Account, host.Mailbox, None, report="tlsrpt")
        raise NotLocal(domain)
    if dconf.Disabled:
        raise DomainDisabled(domain)
    idx = _index(dynamic)
    report = idx.reports.get(f"{localpart.lower()}@{domain}")
    if report is not None:
        kind, account, mailbox = report
        return Recipient(f"{localpart.lower()}@{domain}", account, mailbox, None, report=kind)
    base = strip_separator(dconf, localpart)
    addr = canonical_address(dynamic, base, domain)
    hit = idx.destinations.get(addr)
    if hit is not None:
        name, dest = hit
        return Recipient(addr, name, dest.Mailbox, dest)
    alias = dconf.Aliases.get(base.lower())
    if alias is not None:
        return AliasRecipient(f"{base.lower()}@{domain}", alias, tuple(alias.Addresses))
    if base.lower() in ("postmaster", "abuse"):
        return _postmaster(static, f"{base.lower()}@{domain}")
    hit = idx.destinations.get("@" + domain)
    if hit is not None:
        name, dest = hit
        return Recipient(addr, name, dest.Mailbox, dest)
    return None


def _postmaster(static, address):
    return Recipient(address, static.Postmaster.Account, static.Postmaster.Mailbox, None, postmaster=True)


def expand(static, dynamic, rcpt):
    """The account Recipients for a resolved recipient (alias members resolved; members
    that are not local accounts are skipped: aliases deliver locally only). A member in a
    disabled domain is a Recipient with ``disabled`` set: its delivery fails temporarily,
    so the message waits for the domain instead of passing that member by."""
    if isinstance(rcpt, Recipient):
        return [rcpt]
    out = []
    for member in rcpt.members:
        lp, _, dom = member.rpartition("@")
        try:
            r = resolve(static, dynamic, lp, dom)
        except NotLocal:
            continue
        except DomainDisabled:
            # As configured: the domain's case rules apply when it is resolved again.
            out.append(Recipient(member, "", "", None, alias=rcpt.address, disabled=True))
            continue
        if isinstance(r, Recipient):
            out.append(Recipient(r.address, r.account, r.mailbox, r.destination, alias=rcpt.address))
    return out


def account_addresses(dynamic, account):
    """The addresses an account may use as From: its destinations that are addresses,
    plus any localpart at domains where it has the catchall destination."""
    acc = dynamic.Accounts.get(account)
    if acc is None:
        return set(), set()
    addresses = set()
    catchall_domains = set()
    for key in acc.Destinations:
        lp, _, dom = key.rpartition("@")
        if lp:
            addresses.add(canonical_address(dynamic, lp, dom))
        else:
            catchall_domains.add(dom)
    return addresses, catchall_domains


def may_send_as(dynamic, account, localpart, domain):
    """Whether ``account`` may use ``localpart@domain`` as From or Sender (submission)."""
    addresses, catchall_domains = account_addresses(dynamic, account)
    if domain in catchall_domains:
        return True
    dconf = dynamic.Domains.get(domain)
    if dconf is None:
        return False
    base = strip_separator(dconf, localpart)
    if canonical_address(dynamic, base, domain) in addresses:
        return True
    # Aliases with AllowMsgFrom let members send as the alias address.
    alias = dconf.Aliases.get(base.lower())
    if alias is not None and alias.AllowMsgFrom:
        for member in alias.Addresses:
            mlp, _, mdom = member.rpartition("@")
            if canonical_address(dynamic, mlp, mdom) in addresses:
                return True
    return False
