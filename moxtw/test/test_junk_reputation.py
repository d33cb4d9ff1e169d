"""Reputation analysis (moxtw.junk.reputation) on a real account store: each evidence step
with classified messages delivered with their facts, evidence kept by the schema's
triggers through flag changes, moves out of Rejects and removals, bounded index queries,
and the upgrade of an existing account."""

import time

from twisted.internet import defer
from twisted.trial import unittest

from moxtw import store
from moxtw.junk import reputation
from moxtw.store import DeliveryFacts
from moxtw.store.account import facts_columns

NOW = time.time()


def msg(frm="a@example.org", subject="hi", mid=None):
    mid = mid or f"<{subject}.{frm}@x>"
    return (f"From: {frm}\r\nTo: me@example.com\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n\r\n"
            f"body\r\n").encode()


def facts(frm="a@example.org", validated=True, ip="192.0.2.10", dkim=(), mailfrom=None, spf="pass",
          ehlo="mail.example.org"):
    lp, _, dom = frm.partition("@")
    org = ".".join(dom.split(".")[-2:])
    return DeliveryFacts(remote_ip=ip, ehlo_domain=ehlo, mailfrom=mailfrom or frm, rcptto="me@example.com",
                         msgfrom_localpart=lp, msgfrom_domain=dom, msgfrom_org_domain=org,
                         msgfrom_validated=validated, mailfrom_validated=spf == "pass", spf_result=spf,
                         dkim_domains=tuple(dkim), dmarc_result="pass" if validated else "none",
                         iprev_result="pass")


class ReputationBase(unittest.TestCase):
    """An account store with helpers to deliver classified messages and analyze."""

    @defer.inlineCallbacks
    def setUp(self):
        self.store = store.Store(self.mktemp())
        self.acc = yield self.store.open_account("mjl")
        self.addCleanup(self.store.close)
        self.n = 0

    @defer.inlineCallbacks
    def deliver(self, flag=None, mailbox="Inbox", **kw):
        self.n += 1
        frm = kw.get("frm", "a@example.org")
        f = facts(**kw)
        m = yield self.acc.deliver(mailbox, msg(frm, f"s{self.n}"), flags=[flag] if flag else [], facts=f)
        return m

    @defer.inlineCallbacks
    def analyze(self, **kw):
        cols = dict(facts_columns(facts(**kw)))
        import json
        cols["dkim_domains_list"] = json.loads(cols["dkim_domains"])
        r = yield self.acc.read(lambda conn: reputation.analyze(conn, cols, NOW + 10))
        return r



class ReputationTests(ReputationBase):
    @defer.inlineCallbacks
    def test_nothing_known(self):
        r = yield self.analyze()
        self.assertEqual((r.junk, r.conclusive, r.method), (None, False, "none"))
        # Unclassified messages are no evidence.
        yield self.deliver()
        r = yield self.analyze()
        self.assertEqual(r.method, "none")

    @defer.inlineCallbacks
    def test_known_good_and_junk_sender(self):
        yield self.deliver("$notjunk")
        r = yield self.analyze()
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgfromfull"))
        yield self.deliver("$junk", frm="spam@bad.example")
        r = yield self.analyze(frm="spam@bad.example")
        self.assertEqual((r.junk, r.conclusive), (True, True))
        # One good message among the last two: not junk (mox: could be a mistake).
        yield self.deliver("$junk")
        r = yield self.analyze()
        self.assertEqual((r.junk, r.conclusive), (False, True))
        # Unvalidated From: the same address's signal is not conclusive.
        yield self.deliver("$notjunk", frm="u@example.net", validated=False)
        r = yield self.analyze(frm="u@example.net", validated=False)
        self.assertEqual((r.junk, r.conclusive), (False, False))

    @defer.inlineCallbacks
    def test_unvalidated_from_with_validated_history_is_suspect(self):
        yield self.deliver("$notjunk", frm="boss@example.org")
        r = yield self.analyze(frm="boss@example.org", validated=False)
        self.assertEqual((r.junk, r.conclusive, r.method), (True, False, "msgfromfull"))

    @defer.inlineCallbacks
    def test_previously_sent_to(self):
        yield self.acc.record_outgoing("s1", ["Friend@Example.net"], 100, 100, now=int(NOW))
        r = yield self.analyze(frm="friend@example.net")
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgtofull"))
        # Someone else at that domain: we wrote to the domain.
        r = yield self.analyze(frm="other@example.net")
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgtodomain"))
        # And its organisational domain.
        r = yield self.analyze(frm="x@sub.example.net")
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgtoorgdomain"))

    @defer.inlineCallbacks
    def test_domain_reputation(self):
        for i in range(5):
            yield self.deliver("$notjunk", frm=f"user{i}@shop.example")
        r = yield self.analyze(frm="new@shop.example")
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgfromdomain"))
        # Junk from two addresses of a domain: junk, but not conclusive; three: conclusive.
        for i in range(2):
            yield self.deliver("$junk", frm=f"s{i}@spam.example")
        r = yield self.analyze(frm="new@spam.example")
        self.assertEqual((r.junk, r.conclusive), (True, False))
        yield self.deliver("$junk", frm="s9@spam.example")
        r = yield self.analyze(frm="new@spam.example")
        self.assertEqual((r.junk, r.conclusive), (True, True))
        # Mixed signals: inconclusive.
        for i, flag in enumerate(["$junk", "$notjunk", "$junk", "$notjunk"]):
            yield self.deliver(flag, frm=f"m{i}@mixed.example")
        r = yield self.analyze(frm="new@mixed.example")
        self.assertEqual((r.junk, r.conclusive, r.method), (None, False, "msgfromdomain"))

    @defer.inlineCallbacks
    def test_dkim_domain_reputation(self):
        # Different From domains, all signed by one provider's DKIM domain.
        for i in range(3):
            yield self.deliver("$notjunk", frm=f"n@c{i}.example", dkim=["esp.example"], ip=f"198.51.100.{i}")
        r = yield self.analyze(frm="n@new.example", dkim=["esp.example"], ip="203.0.113.5")
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "dkimspf"))
        for i in range(3):
            yield self.deliver("$junk", frm=f"n@j{i}.example", dkim=["bulk.example"], ip=f"198.51.100.{i + 10}")
        r = yield self.analyze(frm="n@new2.example", dkim=["bulk.example"], ip="203.0.113.5")
        self.assertEqual((r.junk, r.conclusive, r.method), (True, True, "dkimspf"))
        # Signed by both: mixed, inconclusive.
        r = yield self.analyze(frm="n@new3.example", dkim=["esp.example", "bulk.example"], ip="203.0.113.5")
        self.assertEqual((r.junk, r.conclusive), (None, False))

    @defer.inlineCallbacks
    def test_ip_subnet_reputation(self):
        for i in range(5):
            yield self.deliver("$junk", frm=f"x{i}@d{i}.example", ip=f"192.0.2.{i + 1}", spf="none")
        # Another address in the /26, nothing else known: ip2 needs 5 messages.
        r = yield self.analyze(frm="y@other.example", ip="192.0.2.40", spf="none")
        self.assertEqual((r.junk, r.conclusive, r.method), (True, True, "ip2"))
        # The same /32 with only one message: junk but not conclusive (needs 2).
        r = yield self.analyze(frm="y@other.example", ip="192.0.2.1", spf="none")
        self.assertEqual((r.junk, r.conclusive, r.method), (True, False, "ip1"))
        r = yield self.analyze(frm="y@other.example", ip="2001:db8::1", spf="none")
        self.assertEqual(r.method, "none")

    @defer.inlineCallbacks
    def test_flag_flips_moves_and_removal_keep_evidence_right(self):
        m = yield self.deliver()
        inbox = yield self.acc.mailbox("Inbox")
        yield self.acc.store_flags(inbox.id, [m.uid], "add", ["$junk"])
        r = yield self.analyze()
        self.assertEqual(r.junk, True)
        yield self.acc.store_flags(inbox.id, [m.uid], "set", ["$notjunk"])
        r = yield self.analyze()
        self.assertEqual(r.junk, False)
        pending = yield self.acc.read(lambda conn: conn.execute("SELECT count(*) FROM junk_train_pending").fetchone()[0])
        self.assertEqual(pending, 1)  # one entry, whatever the number of flips
        yield self.acc.store_flags(inbox.id, [m.uid], "add", ["\\Deleted"])
        yield self.acc.expunge(inbox.id)
        r = yield self.analyze()
        self.assertEqual(r.method, "none")

    @defer.inlineCallbacks
    def test_rejects_count_once_moved_out(self):
        self.acc.rejects_mailbox = "Rejects"
        f = DeliveryFacts(**{**facts().__dict__, "is_reject": True})
        m = yield self.acc.deliver("Rejects", msg(subject="rej"), facts=f)
        rejects = yield self.acc.mailbox("Rejects")
        yield self.acc.store_flags(rejects.id, [m.uid], "add", ["$notjunk"])
        r = yield self.analyze()
        self.assertEqual(r.method, "none")  # still a reject: not evidence
        yield self.acc.move(rejects.id, [m.uid], "Inbox")
        r = yield self.analyze()
        self.assertEqual((r.junk, r.conclusive, r.method), (False, True, "msgfromfull"))
        row = yield self.acc.read(lambda conn: conn.execute("SELECT is_reject FROM message WHERE id = ?",
                                                            (m.id,)).fetchone()[0])
        self.assertEqual(row, 0)

    @defer.inlineCallbacks
    def test_queries_use_the_index(self):
        plans = yield self.acc.read(lambda conn: [
            " ".join(str(x) for x in row) for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT junk, localpart FROM reputation WHERE kind = ? AND key = ?"
                " AND received >= ? ORDER BY received DESC LIMIT ?", ("ip1", "x", 0, 50))])
        self.assertTrue(any("reputation_lookup" in p for p in plans), plans)
        self.assertFalse(any("TEMP B-TREE" in p for p in plans), plans)


class UpgradeTests(unittest.TestCase):
    def test_classified_messages_of_version_11_get_evidence(self):
        from moxtw.store import schema

        conn = schema.connect(":memory:")
        schema.upgrade(conn, target=11)
        conn.execute("INSERT INTO mailbox (name, uidvalidity, uidnext, modseq, createseq) VALUES ('Inbox', 1, 1, 1, 1)")
        cols = dict(mailbox_id=1, uid=1, modseq=1, createseq=1, keywords='["$notjunk"]', received=100, size=1,
                    envelope="{}", bodystructure="{}", part="{}", remote_ip="192.0.2.1",
                    remote_ip_masked1="192.0.2.1", msgfrom_localpart="a", msgfrom_domain="example.org",
                    msgfrom_validated=1)
        conn.execute(f"INSERT INTO message ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                     tuple(cols.values()))
        schema.upgrade(conn)
        kinds = sorted(r[0] for r in conn.execute("SELECT kind FROM reputation"))
        self.assertEqual(kinds, ["from1", "fromdom1", "ip1"])
        self.assertEqual(conn.execute("SELECT count(*) FROM junk_train_pending").fetchone()[0], 1)
        self.assertEqual(conn.execute("SELECT keywords, modseq FROM message").fetchone()[:], ('["$notjunk"]', 1))


class MaskTests(unittest.SynchronousTestCase):
    def test_masks_as_ipaddress_networks(self):
        """mask_ip (integer arithmetic, cached) writes the networks as ipaddress does."""
        import ipaddress
        import random

        from moxtw.store.account import mask_ip

        rnd = random.Random(7)
        ips = ["192.0.2.77", "10.255.255.255", "::", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1%eth0"]
        ips += [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(300)]
        ips += [str(ipaddress.IPv6Address(rnd.getrandbits(rnd.choice((40, 128))))) for _ in range(300)]
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            bits = (32, 26, 21) if addr.version == 4 else (64, 48, 32)
            want = tuple(str(ipaddress.ip_network(f"{addr}/{b}", strict=False)) for b in bits)
            self.assertEqual(mask_ip(ip), want, ip)
        self.assertEqual(mask_ip("not an ip"), ("", "", ""))
