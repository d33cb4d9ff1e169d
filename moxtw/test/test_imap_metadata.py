"""METADATA (RFC 5464): GETMETADATA and SETMETADATA on mailbox and server entries, kept
in the account index (schema 7), with their limits and hostile input."""

from twisted.internet import defer

from moxtw.store import account as accountmod
from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


class MetadataTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_set_get_remove_server_and_mailbox(self):
        c = yield self.logged_in()
        self.assertIn(" METADATA", "".join(untagged((yield c.cmd("CAPABILITY")))))
        self.assertOK((yield c.cmd('SETMETADATA "" (/shared/comment "server note")')))
        self.assertOK((yield c.cmd('SETMETADATA INBOX (/private/comment "my inbox" /shared/x {3+}\r\nabc)')))
        lines = yield c.cmd('GETMETADATA "" /shared/comment')
        self.assertEqual(untagged(lines, "METADATA"), ['METADATA "" (/shared/comment "server note")'])
        # Names are case-insensitive; a missing entry is NIL.
        lines = yield c.cmd("GETMETADATA INBOX (/PRIVATE/Comment /shared/x /private/none)")
        self.assertEqual(untagged(lines, "METADATA"),
                         ['METADATA INBOX (/PRIVATE/Comment "my inbox" /shared/x "abc" /private/none NIL)'])
        # Server and mailbox entries are apart.
        lines = yield c.cmd('GETMETADATA "" /private/comment')
        self.assertEqual(untagged(lines, "METADATA"), ['METADATA "" (/private/comment NIL)'])
        self.assertOK((yield c.cmd("SETMETADATA INBOX (/private/comment NIL)")))
        lines = yield c.cmd("GETMETADATA INBOX /private/comment")
        self.assertEqual(untagged(lines, "METADATA"), ["METADATA INBOX (/private/comment NIL)"])
        # Kept in the index: another session sees them.
        other = yield self.logged_in()
        lines = yield other.cmd("GETMETADATA INBOX /shared/x")
        self.assertEqual(untagged(lines, "METADATA"), ['METADATA INBOX (/shared/x "abc")'])

    @defer.inlineCallbacks
    def test_depth_and_maxsize(self):
        c = yield self.logged_in()
        yield c.cmd('SETMETADATA INBOX (/private/f "top" /private/f/a "1" /private/f/a/deep "2" '
                    '/private/f/b "%s" /private/fx "not below")' % ("y" * 50))
        lines = yield c.cmd("GETMETADATA (DEPTH 1) INBOX /private/f")
        self.assertEqual(untagged(lines, "METADATA"),
                         ['METADATA INBOX (/private/f "top" /private/f/a "1" /private/f/b "%s")' % ("y" * 50)])
        lines = yield c.cmd("GETMETADATA (DEPTH infinity MAXSIZE 10) INBOX /private/f")
        self.assertEqual(untagged(lines, "METADATA"),
                         ['METADATA INBOX (/private/f "top" /private/f/a "1" /private/f/a/deep "2")'])
        # RFC 5464 4.2.1: what was left out for MAXSIZE is told in the OK.
        self.assertIn("[METADATA LONGENTRIES 50]", tagged(lines))

    @defer.inlineCallbacks
    def test_binary_value(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("SETMETADATA INBOX (/private/bin ~{5+}\r\na\x00b\r\n)")))
        lines = yield c.cmd("GETMETADATA INBOX /private/bin")
        self.assertIn(b"(/private/bin ~{5}", b"\r\n".join(lines))
        self.assertIn(b"a\x00b\r\n)", b"\r\n".join(lines))

    @defer.inlineCallbacks
    def test_limits(self):
        c = yield self.logged_in()
        big = "z" * (accountmod.METADATA_MAX_VALUE + 1)
        lines = yield c.cmd("SETMETADATA INBOX (/private/big {%d+}\r\n%s)" % (len(big), big))
        self.assertNO(lines, f"METADATA MAXSIZE {accountmod.METADATA_MAX_VALUE}")
        self.patch(accountmod, "METADATA_MAX_ENTRIES", 3)
        self.assertOK((yield c.cmd('SETMETADATA INBOX (/private/a "1" /private/b "2" /private/c "3")')))
        lines = yield c.cmd('SETMETADATA INBOX (/private/d "4" /private/a NIL)')
        self.assertOK(lines)  # one added, one removed: still 3
        lines = yield c.cmd('SETMETADATA "" (/private/e "5")')
        self.assertNO(lines, "METADATA TOOMANY")
        # All or none: nothing of the refused command was kept.
        lines = yield c.cmd('GETMETADATA "" /private/e')
        self.assertEqual(untagged(lines, "METADATA"), ['METADATA "" (/private/e NIL)'])

    @defer.inlineCallbacks
    def test_follows_rename_and_goes_with_delete(self):
        c = yield self.logged_in()
        yield c.cmd("CREATE Box")
        yield c.cmd('SETMETADATA Box (/private/comment "hi")')
        yield c.cmd("RENAME Box Box2")
        lines = yield c.cmd("GETMETADATA Box2 /private/comment")
        self.assertEqual(untagged(lines, "METADATA"), ['METADATA Box2 (/private/comment "hi")'])
        yield c.cmd("DELETE Box2")
        yield c.cmd("CREATE Box2")
        lines = yield c.cmd("GETMETADATA Box2 /private/comment")
        self.assertEqual(untagged(lines, "METADATA"), ["METADATA Box2 (/private/comment NIL)"])
        self.assertNO((yield c.cmd("GETMETADATA Nope /private/comment")), "NONEXISTENT")
        self.assertNO((yield c.cmd('SETMETADATA Nope (/private/comment "x")')), "NONEXISTENT")

    @defer.inlineCallbacks
    def test_hostile(self):
        c = yield self.logged_in()
        for bad in (
            'SETMETADATA INBOX (/other/x "1")',
            'SETMETADATA INBOX (/private/ "1")',
            'SETMETADATA INBOX (/private//x "1")',
            'SETMETADATA INBOX (/private/x* "1")',
            'SETMETADATA INBOX (/private/x% "1")',
            'SETMETADATA INBOX (/private/x/ "1")',
            'SETMETADATA INBOX (/private/x)',
            'SETMETADATA INBOX (/private/x "1"',
            'SETMETADATA INBOX ()',
            'SETMETADATA INBOX /private/x "1"',
            'SETMETADATA INBOX (/private/a\x01 "1")',
            'SETMETADATA INBOX (/private/' + "a" * 2000 + ' "1")',
            "GETMETADATA INBOX",
            "GETMETADATA (DEPTH 2) INBOX /private/x",
            "GETMETADATA (FANCY 1) INBOX /private/x",
            "GETMETADATA (MAXSIZE -1) INBOX /private/x",
            "GETMETADATA INBOX ()",
            "GETMETADATA INBOX (" + " ".join(f"/private/e{i}" for i in range(1100)) + ")",
        ):
            lines = yield c.cmd(bad)
            self.assertTrue(tagged(lines).startswith("BAD"), (bad, lines))
        c2 = self.client()
        self.assertTrue(tagged((yield c2.cmd("GETMETADATA INBOX /private/x"))).startswith("BAD"))


class ListMetadataTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_list_return_metadata(self):
        c = yield self.logged_in()
        self.assertIn("LIST-METADATA", "".join(untagged((yield c.cmd("CAPABILITY")))))
        yield c.cmd("CREATE Work")
        yield c.cmd('SETMETADATA Work (/private/color "red" /shared/comment "job")')
        lines = yield c.cmd('LIST "" "W*" RETURN (STATUS (MESSAGES) METADATA (/private/color /shared/none))')
        self.assertOK(lines)
        # RFC 9590 3: after the mailbox's LIST (and STATUS) response.
        self.assertEqual(untagged(lines), [
            'LIST (\\HasNoChildren) "/" Work',
            "STATUS Work (MESSAGES 0)",
            'METADATA Work (/private/color "red" /shared/none NIL)',
        ])
        lines = yield c.cmd('LIST "" "*" RETURN (METADATA (/private/color))')
        meta = untagged(lines, "METADATA")
        self.assertEqual(len(meta), len(untagged(lines, "LIST")))
        self.assertIn('METADATA Work (/private/color "red")', meta)
        for bad in ('LIST "" "*" RETURN (METADATA ())', 'LIST "" "*" RETURN (METADATA /private/color)',
                    'LIST "" "*" RETURN (METADATA (/bad/color))',
                    'LIST "" "*" RETURN (METADATA (/private/a) METADATA (/private/b))'):
            self.assertTrue(tagged((yield c.cmd(bad))).startswith("BAD"), bad)
