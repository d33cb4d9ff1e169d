"""LIST, LSUB, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS, NAMESPACE (RFC 9051 6.3,
RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE)."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


class ListTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_list_basic(self):
        c = yield self.logged_in()
        lines = yield c.cmd('LIST "" ""')
        self.assertEqual(untagged(lines), ['LIST (\\Noselect) "/" ""'])
        lines = yield c.cmd('LIST "" "*"')
        u = untagged(lines)
        self.assertIn('LIST (\\HasNoChildren) "/" Inbox', u)
        self.assertTrue(any("\\Sent" in x and x.endswith(" Sent") for x in u), u)
        lines = yield c.cmd('LIST "" inbox')
        self.assertEqual(untagged(lines), ['LIST (\\HasNoChildren) "/" Inbox'])

    @defer.inlineCallbacks
    def test_hierarchy_and_patterns(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("CREATE a/b/c")))
        self.assertNO((yield c.cmd("CREATE a/b")), "ALREADYEXISTS")
        self.assertNO((yield c.cmd("CREATE INBOX")), "ALREADYEXISTS")
        lines = yield c.cmd('LIST "" %')
        names = [x.rsplit(" ", 1)[1] for x in untagged(lines)]
        self.assertIn("a", names)
        self.assertNotIn("a/b", names)
        lines = yield c.cmd('LIST "a/" %')
        self.assertEqual(untagged(lines), ['LIST (\\HasChildren) "/" a/b'])
        lines = yield c.cmd('LIST "" a*')
        self.assertEqual(len(untagged(lines)), 3)
        self.assertNO((yield c.cmd("DELETE a")), "HASCHILDREN")
        self.assertOK((yield c.cmd("RENAME a x")))
        lines = yield c.cmd('LIST "" x/*')
        self.assertEqual([x.rsplit(" ", 1)[1] for x in untagged(lines)], ["x/b", "x/b/c"])
        self.assertNO((yield c.cmd("RENAME nonexistent y")), "NONEXISTENT")
        self.assertNO((yield c.cmd("RENAME x Archive")), "ALREADYEXISTS")
        self.assertNO((yield c.cmd("DELETE INBOX")))
        self.assertNO((yield c.cmd("DELETE nonexistent")), "NONEXISTENT")
        self.assertNO((yield c.cmd("CREATE a//b")))

    @defer.inlineCallbacks
    def test_list_extended(self):
        c = yield self.logged_in()
        yield c.cmd("CREATE Sub")
        yield c.cmd("UNSUBSCRIBE Sub")
        yield c.cmd("SUBSCRIBE Gone")
        lines = yield c.cmd('LIST (SUBSCRIBED) "" "*"')
        u = untagged(lines)
        self.assertIn('LIST (\\NonExistent \\Subscribed) "/" Gone', u)
        self.assertFalse(any(x.endswith(" Sub") for x in u))
        lines = yield c.cmd('LIST (SPECIAL-USE) "" "*"')
        self.assertTrue(all("\\" in x.split(")")[0] for x in untagged(lines)))
        self.assertFalse(any(x.endswith(" Inbox") for x in untagged(lines)))
        lines = yield c.cmd('LIST "" ("Inbox" "Arch*") RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))')
        u = untagged(lines)
        self.assertIn("STATUS Inbox (MESSAGES 0 UIDNEXT 1)", u)
        self.assertTrue(any(x.startswith("LIST (") and "\\Subscribed" in x and x.endswith("Archive") for x in u))
        lines = yield c.cmd('LSUB "" "*"')
        self.assertTrue(any(x.endswith(" Gone") for x in untagged(lines)))
        self.assertFalse(any(x.endswith(" Sub") for x in untagged(lines)))

    @defer.inlineCallbacks
    def test_create_special_use(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("CREATE MyFlagged (USE (\\Flagged))")))
        self.assertNO((yield c.cmd("CREATE Two (USE (\\Flagged \\Sent))")), "USEATTR")
        self.assertNO((yield c.cmd("CREATE Bogus (USE (\\Bogus))")), "USEATTR")
        lines = yield c.cmd('LIST "" MyFlagged RETURN (SPECIAL-USE)')
        self.assertIn("\\Flagged", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_status(self):
        yield self.deliver("one", flags=["\\Seen"])
        yield self.deliver("two")
        c = yield self.logged_in()
        lines = yield c.cmd("STATUS INBOX (MESSAGES UIDNEXT UNSEEN DELETED SIZE RECENT)")
        u = untagged(lines)[0]
        self.assertTrue(u.startswith("STATUS Inbox (MESSAGES 2 UIDNEXT 3 UNSEEN 1 DELETED 0 SIZE "), u)
        self.assertNO((yield c.cmd("STATUS Nonexistent (MESSAGES)")), "NONEXISTENT")
        self.assertBAD((yield c.cmd("STATUS INBOX (BOGUS)")))
        self.assertBAD((yield c.cmd("STATUS INBOX ()")))

    @defer.inlineCallbacks
    def test_namespace_quota(self):
        c = yield self.logged_in()
        lines = yield c.cmd("NAMESPACE")
        self.assertEqual(untagged(lines), ['NAMESPACE (("" "/")) NIL NIL'])
        self.assertNO((yield c.cmd('GETQUOTA "other"')), "NONEXISTENT")
        lines = yield c.cmd("GETQUOTAROOT Nonexistent")
        self.assertNO(lines, "NONEXISTENT")

    @defer.inlineCallbacks
    def test_rename_inbox(self):
        """RFC 9051 6.3.6: renaming INBOX moves its messages, INBOX stays."""
        yield self.deliver_n(2)
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("RENAME INBOX Old")))
        lines = yield c.cmd("STATUS Old (MESSAGES)")
        self.assertIn("MESSAGES 2", untagged(lines)[0])
        lines = yield c.cmd("STATUS INBOX (MESSAGES)")
        self.assertIn("MESSAGES 0", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_delete_selected(self):
        c = yield self.logged_in()
        yield c.cmd("CREATE Temp")
        yield c.select("Temp")
        self.assertOK((yield c.cmd("DELETE Temp")))
        self.assertBAD((yield c.cmd("FETCH 1 UID")))
        self.assertEqual(tagged((yield c.cmd("NOOP")))[:2], "OK")


class SubscriptionTests(IMAPSessionTest):
    """What imaptest's listext and subscribe groups check (RFC 9051 6.3.4, 6.3.9; RFC 5258)."""

    @defer.inlineCallbacks
    def test_create_does_not_subscribe(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("CREATE Fresh")))
        lines = yield c.cmd('LSUB "" Fresh')
        self.assertEqual(untagged(lines), [])
        lines = yield c.cmd('LIST (SUBSCRIBED) "" Fresh')
        self.assertEqual(untagged(lines), [])

    @defer.inlineCallbacks
    def test_recursivematch_childinfo(self):
        c = yield self.logged_in()
        for name in ("p", "p/c", "q", "q/c"):
            yield c.cmd("CREATE " + name)
        yield c.cmd("SUBSCRIBE p/c")
        yield c.cmd("SUBSCRIBE q")
        # RFC 5258 3.5: a parent with a subscribed child is returned with CHILDINFO,
        # with \Subscribed only when it is itself subscribed.
        lines = yield c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        u = untagged(lines)
        self.assertIn('LIST (\\HasChildren) "/" p ("CHILDINFO" ("SUBSCRIBED"))', u)
        self.assertIn('LIST (\\HasChildren \\Subscribed) "/" q', u)
        self.assertFalse(any(x.endswith('" p/c') for x in u), u)
        lines = yield c.cmd('LIST (SUBSCRIBED) "" "*"')
        self.assertTrue(any(x.endswith('" p/c') for x in untagged(lines)))

    @defer.inlineCallbacks
    def test_lsub_noselect_parent(self):
        c = yield self.logged_in()
        yield c.cmd("CREATE a/b")
        yield c.cmd("SUBSCRIBE a/b")
        yield c.cmd("UNSUBSCRIBE a")
        # RFC 3501 6.3.9: % reaching only a subscribed child lists the parent \Noselect
        # (as Dovecot does, so does a pattern naming the parent itself).
        lines = yield c.cmd('LSUB "" "*"')
        self.assertEqual(untagged(lines, "LSUB")[-1:], ['LSUB () "/" a/b'])
        self.assertFalse(any(x.endswith('" a') for x in untagged(lines)))
        lines = yield c.cmd('LSUB "" "%"')
        self.assertIn('LSUB (\\Noselect) "/" a', untagged(lines))
        lines = yield c.cmd('LSUB "" "a/%"')
        self.assertIn('LSUB () "/" a/b', untagged(lines))

    @defer.inlineCallbacks
    def test_invalid_modified_utf7(self):
        c = yield self.logged_in()
        # RFC 3501 5.1.3: "&" must start a base64 run ended by "-".
        self.assertNO((yield c.cmd("SELECT &Jjo")), "CANNOT")
        self.assertNO((yield c.cmd("CREATE &Jjo")), "CANNOT")
        lines = yield c.cmd('LIST "" "&Jjo"')
        self.assertOK(lines)
        self.assertEqual(untagged(lines), [])
        lines = yield c.cmd('LSUB "" "&Jjo"')
        self.assertOK(lines)
        self.assertEqual(untagged(lines), [])
