"""Hold rules (domains.toml QueueHoldRules): which newly queued recipients start on hold."""


def _domain(value):
    return value.strip().lower().rstrip(".")


def matcher(rules, account, sender_domain):
    """A function of a recipient address telling whether it is held, or False when no
    rule can match this message. A rule matches when all its non-empty fields do."""
    account = account or ""
    sender_domain = _domain(sender_domain or "")
    candidates = [
        r for r in rules
        if (not r.Account or r.Account == account)
        and (not r.SenderDomain or _domain(r.SenderDomain) == sender_domain)
    ]
    if not candidates:
        return False

    def held(recipient):
        domain = _domain(recipient.rpartition("@")[2])
        return any(not r.RecipientDomain or _domain(r.RecipientDomain) == domain for r in candidates)

    return held
