"""Tests for moxtw.sasl.precis: the PRECIS OpaqueString profile (RFC 8265 4.2)."""

import unicodedata

from twisted.trial.unittest import SynchronousTestCase

from moxtw.sasl import precis
from moxtw.sasl.precis import PrecisError, opaque_string


class RFC8265ExampleTests(SynchronousTestCase):
    """RFC 8265 4.3, table 4."""

    def test_ascii_space(self):
        self.assertEqual(
            opaque_string("correct horse battery staple"), "correct horse battery staple"
        )

    def test_case_preserved(self):
        self.assertEqual(
            opaque_string("Correct Horse Battery Staple"), "Correct Horse Battery Staple"
        )
        self.assertNotEqual(
            opaque_string("Correct Horse Battery Staple"),
            opaque_string("correct horse battery staple"),
        )

    def test_non_ascii_letters(self):
        self.assertEqual(opaque_string("\u03c0\u00df\u00e5"), "\u03c0\u00df\u00e5")  # πßå

    def test_symbol(self):
        self.assertEqual(opaque_string("Jack of \u2666s"), "Jack of \u2666s")  # ♦

    def test_ogham_space_mapped(self):
        self.assertEqual(opaque_string("foo\u1680bar"), "foo bar")

    def test_empty(self):
        self.assertRaises(PrecisError, opaque_string, "")

    def test_control(self):
        self.assertRaises(PrecisError, opaque_string, "my cat is a \u0009by")


class MappingTests(SynchronousTestCase):
    def test_nfc(self):
        self.assertEqual(opaque_string("a\u0308"), "\u00e4")
        self.assertEqual(opaque_string("\u212b"), "\u00c5")  # ANGSTROM SIGN, canonical

    def test_no_width_or_compat_mapping(self):
        # Fullwidth and compatibility characters are kept (HasCompat is FREE_PVAL).
        self.assertEqual(opaque_string("\uff21\uff22"), "\uff21\uff22")
        self.assertEqual(opaque_string("\ufb01"), "\ufb01")  # ﬁ ligature
        self.assertEqual(opaque_string("x\u00b2"), "x\u00b2")

    def test_spaces(self):
        for sp in ("\u00a0", "\u2000", "\u2009", "\u202f", "\u3000", "\u205f"):
            self.assertEqual(opaque_string("a" + sp + "b"), "a b", hex(ord(sp)))
        self.assertEqual(opaque_string(" "), " ")  # only-space is not empty

    def test_result_is_stable(self):
        for s in ("a\u0308\u00a0b", "\u1e9b\u0323", "\u0041\u030a\u3000"):
            once = opaque_string(s)
            self.assertEqual(opaque_string(once), once)

    def test_type(self):
        self.assertRaises(TypeError, opaque_string, b"bytes")


class DisallowedTests(SynchronousTestCase):
    def test_disallowed(self):
        for c in (
            "\x00",
            "\x1f",
            "\x7f",  # controls
            "\x85",
            "\u00ad",  # soft hyphen, default ignorable
            "\u200b",  # zero width space
            "\u2028",  # line separator (Zl)
            "\u2029",  # paragraph separator (Zp)
            "\u202e",  # bidi override
            "\ufeff",  # BOM
            "\ufe0f",  # variation selector
            "\ue000",  # private use
            "\U000f0000",
            "\ufdd0",  # noncharacters
            "\uffff",
            "\U0001fffe",
            "\ud800",  # lone surrogate
            "\u1100",  # old Hangul jamo
            "\u0640",  # exceptions: ARABIC TATWEEL
            "\u3031",
            "\u0600",  # Cf, not default ignorable
            "\U000e0041",  # tag
        ):
            with self.subTest(cp=hex(ord(c))):
                self.assertRaises(PrecisError, opaque_string, "ab" + c + "cd")

    def test_unassigned(self):
        # U+0378 is unassigned in every Unicode version so far.
        self.assertEqual(unicodedata.category("\u0378"), "Cn")
        self.assertEqual(precis.freeform_property("\u0378"), precis.UNASSIGNED)
        with self.assertRaises(PrecisError) as ctx:
            opaque_string("a\u0378")
        self.assertIn("U+0378", str(ctx.exception))

    def test_allowed(self):
        for s in (
            "p@ss:w0rd!~`{}|\\",
            "\u00df\u03c2",  # exceptions PVALID
            "\u0915\u094d\u0937",  # Devanagari with virama
            "\u2167",  # ROMAN NUMERAL EIGHT (Nl)
            "\u20ac100",  # currency
            "\U0001f600",  # emoji (So)
            "\u01c5",  # Lt
            "\u0488",  # Me
            "\uac00",  # Hangul syllable
        ):
            with self.subTest(s=s):
                self.assertEqual(opaque_string(s), unicodedata.normalize("NFC", s))


class ContextTests(SynchronousTestCase):
    """RFC 5892 appendix A contextual rules."""

    def ok(self, s):
        self.assertEqual(opaque_string(s), s)

    def bad(self, s):
        self.assertRaises(PrecisError, opaque_string, s)

    def test_zwnj(self):
        self.ok("\u0915\u094d\u200c\u0937")  # after virama
        self.ok("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")  # Persian, joining letters
        self.ok("\u0628\u064e\u200c\u0628")  # transparent mark before ZWNJ
        self.bad("ab\u200ccd")
        self.bad("\u200c\u0628")

    def test_zwj(self):
        self.ok("\u0915\u094d\u200d\u0937")
        self.bad("a\u200db")

    def test_middle_dot(self):
        self.ok("col\u00b7legi")
        self.bad("a\u00b7b")
        self.bad("l\u00b7")

    def test_keraia(self):
        self.ok("\u0375\u03b1")
        self.bad("\u0375a")
        self.bad("\u03b1\u0375")

    def test_geresh(self):
        self.ok("\u05d0\u05f3")
        self.ok("\u05d0\u05f4")
        self.bad("a\u05f3")
        self.bad("\u05f4")

    def test_katakana_middle_dot(self):
        self.ok("\u30a2\u30fb\u30a4")
        self.ok("\u6f22\u30fb")
        self.ok("\u3042\u30fb")
        self.bad("a\u30fbb")
        self.bad("\u30fb\u30fc")

    def test_arabic_digits(self):
        self.ok("\u0660\u0661")
        self.ok("\u06f0\u06f1")
        self.bad("\u0660\u06f1")
