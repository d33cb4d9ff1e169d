"""Sender reputation at delivery, per account, from the account's own classified messages.

The account's ``$junk``/``$notjunk`` messages leave their evidence in the ``reputation``
table (kept by triggers, store schema 12): From address, From domain and organisational
domain (each with whether DMARC validated it), verified DKIM domains, validated MAIL FROM
and EHLO, and the remote IP masked three ways. :func:`analyze` asks, in mox's order and
with mox's windows and thresholds, until a question finds messages:

1. the same From address (3 years, last 2 messages); with an unvalidated From, also
   whether validated messages came from it (then it is likely forged);
2. whether we sent to that address (3 years): good;
3. the From domain, then the organisational domain (2 years, last 20): more than 80%
   good accepts, all junk from at least 3 addresses rejects; and whether we sent to the
   domain;
4. the verified DKIM domains and the validated MAIL FROM address/domain or EHLO name
   (half a year, last 50 each);
5. the remote IP /32, /26, /21 (IPv6 /64, /48, /32), a quarter year, last 50, needing 2,
   5 and 10 messages to be conclusive.

Every question is one bounded range of an index, so the cost does not depend on the size
of the account. Blocking (SQLite): run on the account's reader thread.
"""

from dataclasses import dataclass

YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Reputation:
    """``junk``: True, False, or None (no signal); ``conclusive``: strong enough to
    decide; ``method``: which evidence answered (mox's names); ``text``: why."""

    junk: object
    conclusive: bool
    method: str
    text: str
    messages: int = 0


def _rows(conn, kind, key, since, limit):
    return conn.execute(
        "SELECT junk, localpart FROM reputation WHERE kind = ? AND key = ? AND received >= ?"
        " ORDER BY received DESC LIMIT ?", (kind, key, int(since), limit)).fetchall()


def _sent_to(conn, column, value, since):
    return conn.execute(
        f"SELECT 1 FROM outgoing WHERE {column} = ? AND submitted >= ? LIMIT 1", (value, int(since))
    ).fetchone() is not None


def _last_two_junk(rows):
    # The last message, or the last two, junk: junk. One good message among them: good.
    return bool(rows[0]["junk"]) and (len(rows) == 1 or bool(rows[1]["junk"]))


def analyze(conn, m, now):
    """The :class:`Reputation` of an incoming message. ``m``: the message's fact columns
    (``moxtw.store.account.facts_columns``), ``now``: Unix time."""
    validated = int(bool(m.get("msgfrom_validated")))
    domain = m.get("msgfrom_domain", "")
    org = m.get("msgfrom_org_domain", "")
    if domain:
        full = f"{m.get('msgfrom_localpart', '')}@{domain}"
        rows = _rows(conn, f"from{validated}", full, now - 3 * YEAR, 2)
        if rows:
            return Reputation(_last_two_junk(rows), bool(validated), "msgfromfull",
                              "reputation of exact message-from address", len(rows))
        if not validated:
            rows = _rows(conn, "from1", full, now - 3 * YEAR, 2)
            if rows:
                # Validated messages came from this address before, this one is not:
                # likely forged; conclusive when that history is junk too.
                return Reputation(True, _last_two_junk(rows), "msgfromfull",
                                  "unvalidated message with validated historic messages from the address", len(rows))
        if _sent_to(conn, "recipient", full.lower(), now - 3 * YEAR):
            return Reputation(False, True, "msgtofull", "message-from address was a recipient of ours")
        for kind, key, method, source in (
                ("fromdom", domain, "msgfromdomain", "domain of message-from address"),
                ("orgdom", org, "msgfromorgdomain", "organizational domain of message-from address")):
            if not key:
                continue
            rows = _rows(conn, f"{kind}{validated}", key, now - 2 * YEAR, 20)
            if rows:
                good = sum(1 for r in rows if not r["junk"])
                if 100 * good / len(rows) > 80:
                    return Reputation(False, True, method,
                                      f"positive reputation of {source}, {len(rows)} messages", len(rows))
                if good == 0:
                    localparts = {r["localpart"] for r in rows}
                    return Reputation(True, len(localparts) >= 3, method,
                                      f"negative reputation of {source} from {len(localparts)} addresses, "
                                      f"{len(rows)} messages", len(rows))
                return Reputation(None, False, method, f"mixed signals for {source}, {len(rows)} messages",
                                  len(rows))
            if not validated:
                rows = _rows(conn, f"{kind}1", key, now - 2 * YEAR, 2)
                if rows:
                    return Reputation(True, _last_two_junk(rows), method,
                                      f"unvalidated message while {source} sent validated ones", len(rows))
            column = "recipient_domain" if kind == "fromdom" else "recipient_org_domain"
            if _sent_to(conn, column, key, now - 2 * YEAR):
                return Reputation(False, True, method.replace("from", "to", 1), f"{source} had recipients of ours")

    # Verified DKIM domains and the validated SPF identity (RFC 6376 6.1: only passing
    # signatures count; RFC 7208 2.7).
    signals, names, most = [], [], 0
    for dom in m.get("dkim_domains_list", ()):
        rows = _rows(conn, "dkim", dom, now - YEAR // 2, 50)
        if rows:
            signals.append(sum(r["junk"] for r in rows) / len(rows))
            names.append(dom)
            most = max(most, len(rows))
    rows = []
    spf_name = ""
    if m.get("mailfrom_validated") and m.get("mailfrom_domain"):
        spf_name = m["mailfrom_domain"]
        rows = _rows(conn, "mfrom", f"{m.get('mailfrom_localpart', '')}@{spf_name}", now - YEAR // 2, 50)
        if not rows:
            rows = _rows(conn, "mfromdom", spf_name, now - YEAR // 2, 50)
    if not rows and m.get("ehlo_validated") and m.get("ehlo_domain"):
        spf_name = m["ehlo_domain"]
        rows = _rows(conn, "ehlo", spf_name, now - YEAR // 2, 50)
    if rows:
        signals.append(sum(r["junk"] for r in rows) / len(rows))
        names.append(spf_name)
        most = max(most, len(rows))
    if signals:
        ham = [n for n, p in zip(names, signals) if p < 0.1]
        spam = [n for n, p in zip(names, signals) if p > 0.9]
        if ham and not spam:
            return Reputation(False, True, "dkimspf", f"positive dkim/spf reputation of {', '.join(ham)}", most)
        if spam and not ham:
            return Reputation(True, most > 1, "dkimspf", f"negative dkim/spf reputation of {', '.join(spam)}", most)
        return Reputation(None, False, "dkimspf",
                          f"mixed dkim/spf reputation: good {', '.join(ham) or '-'}, junk {', '.join(spam) or '-'}",
                          most)

    # The sending IP and its neighbours: wider masks need more messages.
    v6 = ":" in m.get("remote_ip", "")
    for kind, need, mask in (("ip1", 2, "/64" if v6 else "/32"), ("ip2", 5, "/48" if v6 else "/26"),
                             ("ip3", 10, "/32" if v6 else "/21")):
        key = m.get(f"remote_ip_masked{kind[-1]}", "")
        if not key:
            continue
        rows = _rows(conn, kind, key, now - YEAR // 4, 50)
        if rows:
            pspam = sum(r["junk"] for r in rows) / len(rows)
            junk = False if pspam < 0.25 else True if pspam > 0.75 else None
            conclusive = len(rows) >= need and (pspam <= 0.1 or pspam >= 0.9)
            return Reputation(junk, conclusive, kind, f"reputation of ip {key}{mask}, spam score {pspam:.2f}",
                              len(rows))
    return Reputation(None, False, "none", "no address, dkim/spf or ip reputation")


__all__ = ["Reputation", "analyze"]
