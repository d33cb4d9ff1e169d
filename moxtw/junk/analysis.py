"""The junk decision for an incoming message and one account (mox's order).

:func:`decide` runs for each account a message is delivered to, when the account has a
``JunkFilter`` configured:

1. Reputation (:mod:`moxtw.junk.reputation`): a conclusive answer decides.
2. Without conclusive reputation: an SPF fail or softfail of the MAIL FROM domain
   rejects; a mild junk signal with a failed iprev rejects.
3. The Bayesian filter (:mod:`moxtw.junk.bayes`) on the message's words: junk above the
   threshold (a stricter 0.25 when iprev failed, without TLS, or when the recipient is
   not in To/Cc and the ruleset is no forward).
4. Accepted so far and DNSBLs configured: a listed IP rejects (mox: block lists only
   when reputation gave no answer).

A rejection is answered with a neutral temporary error (451 4.7.1): the sender never
learns whether it was a real error or a judgement, and a legitimate one gets a DSN after
the retries (with ``SubjectPass``, a DMARC-validated first-time sender refused for a
listed IP or moderately spammy content gets a 550 with a token instead). The reason
and numbers are logged and counted in ``junk_decisions_total{reason,result}``.
"""

import json
import os
import time
from dataclasses import dataclass

from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw import metrics

log = Logger(namespace="moxtw.junk")

STRICT_THRESHOLD = 0.25
MAX_ANALYSED = 4 * 1024 * 1024  # bytes of a message given to the word extraction


@dataclass(frozen=True)
class Decision:
    accept: bool
    reason: str  # method of the reputation, or spf-policy, iprev, junk-content, dnsbl, ...
    text: str
    first_time: bool  # no conclusive reputation: a first-time sender (delayed)
    junk_score: object = None  # the Bayesian probability, when computed
    mailbox: str = ""  # accepted into this mailbox instead (a ruleset's AcceptRejectsToMailbox)
    reply: object = None  # (code, enhanced, text) instead of the neutral 451 (subject pass)
    token: str = ""  # the subject pass token of ``reply``


def filter_path(account_dir):
    return os.path.join(account_dir, "junkfilter.db")


def _rcpt_in_headers(rcptto, headers):
    """Whether the envelope recipient is one of the To/Cc addresses (as an address, not a
    substring: "me@example.com" is not in "notme@example.com")."""
    import re

    rcpt = re.escape(rcptto.lower())
    pattern = re.compile(r"(?:^|[\s<,:;\"(])" + rcpt + r"(?:$|[\s>,;\")])")
    for name in ("to", "cc"):
        for value in headers.get(name, ()):
            if pattern.search(value.lower()):
                return True
    return False


async def decide(acc, account_conf, cols, data, *, remote_ip, tls, rcptto, headers, forward, resolver=None,
                 dnsbl_zones=(), now=None):
    """The :class:`Decision` for one account. ``cols``: the message's fact columns
    (``moxtw.store.account.facts_columns``); ``headers``: lower-cased header name ->
    values (To, Cc); ``forward``: the ruleset has IsForward."""
    from moxtw.junk import reputation

    started = time.monotonic()
    now = time.time() if now is None else now
    m = dict(cols)
    m["dkim_domains_list"] = json.loads(cols.get("dkim_domains") or "[]")
    rep = await acc.read(lambda conn: reputation.analyze(conn, m, now))
    decision = await _decide(acc, account_conf, rep, cols, data, remote_ip=remote_ip, tls=tls, rcptto=rcptto,
                             headers=headers, forward=forward, resolver=resolver, dnsbl_zones=dnsbl_zones)
    metrics.JUNK_ANALYSIS_SECONDS.observe(time.monotonic() - started)
    metrics.JUNK_DECISIONS.labels(reason=decision.reason, result="accept" if decision.accept else "reject").inc()
    log.info("junk analysis", account=acc.name, accept=decision.accept, reason=decision.reason,
             reputation=rep.method, conclusive=rep.conclusive,
             isjunk="" if rep.junk is None else str(rep.junk).lower(),
             score="" if decision.junk_score is None else f"{decision.junk_score:.3f}", why=decision.text)
    return decision


async def _decide(acc, conf, rep, cols, data, *, remote_ip, tls, rcptto, headers, forward, resolver, dnsbl_zones):
    if rep.conclusive:
        return Decision(not rep.junk, rep.method, rep.text, first_time=False)
    weak = rep.method in ("dkimspf", "ip1", "ip2", "ip3", "none")
    if weak and cols.get("spf_result") in ("fail", "softfail"):
        return Decision(False, "spf-policy", f"{rep.text}; no earlier message and spf {cols['spf_result']}",
                        first_time=True)
    iprev_bad = weak and cols.get("iprev_result") not in ("pass",)
    if iprev_bad and rep.junk:
        return Decision(False, "iprev", f"{rep.text}; a junk signal and no forward-confirmed reverse name",
                        first_time=True)
    sp_key = None
    from_address = ""
    # Subject passes only for a DMARC-validated From address: the token vouches for that
    # address, and anyone who saw it (a reply's Subject, the DSN) could else spoof it.
    # A Period of 0 is no subject pass (mox).
    if conf.SubjectPass is not None and conf.SubjectPass.Period.total_seconds() > 0 \
            and cols.get("msgfrom_domain") and cols.get("msgfrom_validated"):
        from moxtw.junk import subjectpass

        from_address = f"{cols.get('msgfrom_localpart', '')}@{cols['msgfrom_domain']}"
        sp_key = await acc.subjectpass_key()
        subject = (headers.get("subject") or [""])[0]
        ok, why = subjectpass.verify(sp_key, subject, from_address, conf.SubjectPass.Period.total_seconds(),
                                     time.time())
        if ok:
            return Decision(True, "subjectpass", f"{rep.text}; valid subject pass token", first_time=False)
        log.debug("subject pass: {why}", why=why, account=acc.name)
    score = None
    reason, text = "no-bad-signals", rep.text
    jf = conf.JunkFilter
    if jf is not None:
        from moxtw.junk import bayes, words

        params = bayes.Params.from_config(jf)
        threshold = params.threshold
        strict = ""
        if iprev_bad and threshold > STRICT_THRESHOLD:
            threshold, strict = STRICT_THRESHOLD, " (stricter: no forward-confirmed reverse name)"
        elif not tls and threshold > STRICT_THRESHOLD:
            threshold, strict = STRICT_THRESHOLD, " (stricter: no TLS)"
        elif not forward and rcptto and threshold > STRICT_THRESHOLD and not _rcpt_in_headers(rcptto, headers):
            threshold, strict = STRICT_THRESHOLD, " (stricter: recipient not in To/Cc)"
        path = filter_path(acc.path)

        def classify():
            f = bayes.Filter(path, params)
            f.open()
            try:
                ws = words.message_words(data[:MAX_ANALYSED], onegrams=params.onegrams, twograms=params.twograms,
                                         threegrams=params.threegrams)
                return f.classify(ws)
            finally:
                f.close()

        result = await threads.deferToThread(classify)
        score = result.probability
        significant = getattr(result, "significant", bool(result.top))
        accept = score <= threshold or (not significant and not iprev_bad)
        top = ", ".join(f"{w} {p:.2f}" for w, p in list(result.top)[:10])
        log.debug("junk words: {top}", top=top, account=acc.name)
        reason = "junk-content" if not strict else "junk-content-strict"
        text = (f"{rep.text}; content {'not junk' if accept else 'junk'}"
                f"{'' if significant else ' (not significant)'}, score {score:.2f}, threshold {threshold:.2f}{strict}")
        if not accept:
            # Only moderately spammy: 0.2 or more under the configured Threshold, so
            # refused by the stricter one. (Under the threshold in force it would have
            # been accepted: mox compares with that one, and never gives this token.)
            if sp_key is not None and rep.method == "none" and score < params.threshold - 0.2:
                return _give_subjectpass(sp_key, from_address, reason, text, score)
            return Decision(False, reason, text, first_time=True, junk_score=score)
    if dnsbl_zones and resolver is not None:
        from moxtw import dnsbl

        listed = await dnsbl.listed(resolver, dnsbl_zones, remote_ip)
        if listed is not None:
            zone, why = listed
            text = f"{text}; ip {remote_ip} listed in {zone}" + (f": {why}" if why else "")
            if sp_key is not None and rep.method == "none":
                return _give_subjectpass(sp_key, from_address, "dnsbl", text, score)
            return Decision(False, "dnsbl", text, first_time=True, junk_score=score)
        reason = "dnsbl-pass" if reason == "no-bad-signals" else reason
    return Decision(True, reason, text, first_time=True, junk_score=score)


def _give_subjectpass(key, address, reason, text, score):
    """A refusal that tells a DMARC-validated first-time sender, whose message is only
    moderately spammy or whose IP is listed, how to get through: a token for the
    Subject (mox's subjectpass). Permanent (550 5.7.1), so the sender's DSN with the
    token arrives at once rather than after days of retries."""
    from moxtw.junk import subjectpass

    token = subjectpass.generate(key, address, time.time())
    return Decision(False, reason + "-subjectpass", f"{text}; subject pass token given", first_time=True,
                    junk_score=score, reply=(550, "7.1", subjectpass.explanation([token])), token=token)


def decide_deferred(*args, **kwargs):
    return defer.Deferred.fromCoroutine(decide(*args, **kwargs))


__all__ = ["Decision", "decide", "decide_deferred", "filter_path"]
