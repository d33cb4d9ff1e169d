"""PRECIS OpaqueString profile for passwords (RFC 8265 section 4.2 on RFC 8264).

Passwords are prepared with :func:`opaque_string` before they are hashed or compared, so a
password typed as NFD on one device and NFC on another, or with a non-ASCII space, matches.
The profile (RFC 8265 4.2.1) is the FreeformClass (RFC 8264 4.3) with:

- width mapping: none; case mapping: none; directionality rule: none;
- additional mapping: non-ASCII spaces (Zs) to U+0020;
- normalization: NFC;
- the result must not be empty.

The derived property of each code point follows the algorithm of RFC 8264 section 8 with
the categories of section 9, using the Unicode version of Python's :mod:`unicodedata`.
Python exposes neither Script nor Joining_Type nor Default_Ignorable_Code_Point, so:

- Default_Ignorable_Code_Point and the old Hangul jamo ranges are tables here (both are
  stable properties in Unicode);
- the CONTEXTO rules that need the Script property (RFC 5892 A.4, A.5, A.6, A.7) use the
  Unicode character name prefix ("GREEK", "HEBREW", "HIRAGANA", ...) as the script;
- the ZERO WIDTH NON-JOINER rule (RFC 5892 A.1) is exact for the virama case; for the
  joining-type case it treats letters of the cursive-joining scripts as dual-joining and
  Mn/Me/Cf as transparent, so it may accept a ZWNJ next to a right-joining-only letter.
"""

from __future__ import annotations

import unicodedata

__all__ = ["PrecisError", "opaque_string", "freeform_property"]


class PrecisError(ValueError):
    """The string is not valid under the profile."""


# Derived property values (RFC 8264 8).
PVALID = "PVALID"
FREE_PVAL = "FREE_PVAL"
CONTEXTJ = "CONTEXTJ"
CONTEXTO = "CONTEXTO"
DISALLOWED = "DISALLOWED"
UNASSIGNED = "UNASSIGNED"

# RFC 5892 2.6: Exceptions (F).
_EXCEPTIONS = {
    **{cp: PVALID for cp in (0x00DF, 0x03C2, 0x06FD, 0x06FE, 0x0F0B, 0x3007)},
    **{cp: CONTEXTO for cp in (0x00B7, 0x0375, 0x05F3, 0x05F4, 0x30FB)},
    **{cp: CONTEXTO for cp in range(0x0660, 0x066A)},
    **{cp: CONTEXTO for cp in range(0x06F0, 0x06FA)},
    **{cp: DISALLOWED for cp in (0x0640, 0x07FA, 0x302E, 0x302F, 0x303B)},
    **{cp: DISALLOWED for cp in range(0x3031, 0x3036)},
}

# RFC 8264 9.10: OldHangulJamo, Hangul_Syllable_Type L, V or T.
_OLD_HANGUL_JAMO = (
    (0x1100, 0x115F),
    (0xA960, 0xA97C),
    (0x1160, 0x11A7),
    (0xD7B0, 0xD7C6),
    (0x11A8, 0x11FF),
    (0xD7CB, 0xD7FB),
)

# Default_Ignorable_Code_Point from Unicode's DerivedCoreProperties.txt.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Blocks of scripts whose letters join cursively (Arabic, Syriac, Thaana... Mongolian,
# Phags-pa, Manichaean, Psalter Pahlavi, Hanifi Rohingya, Sogdian, Old Uyghur, Chorasmian,
# Adlam), used to approximate Joining_Type for RFC 5892 A.1.
_JOINING_BLOCKS = (
    (0x0600, 0x08FF),
    (0x1800, 0x18AF),
    (0xA840, 0xA87F),
    (0xFB50, 0xFDFF),
    (0xFE70, 0xFEFF),
    (0x10AC0, 0x10AFF),
    (0x10B80, 0x10BAF),
    (0x10D00, 0x10D3F),
    (0x10F30, 0x10F6F),
    (0x10F70, 0x10FDF),
    (0x1E900, 0x1E95F),
)


def _in(cp: int, ranges) -> bool:
    for lo, hi in ranges:
        if lo <= cp <= hi:
            return True
    return False


def _noncharacter(cp: int) -> bool:
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def freeform_property(c: str) -> str:
    """The derived property of one character in the FreeformClass (RFC 8264 8)."""
    cp = ord(c)
    if cp in _EXCEPTIONS:
        return _EXCEPTIONS[cp]
    # BackwardCompatible (RFC 8264 9.7) is empty.
    cat = unicodedata.category(c)
    if cat == "Cn" and not _noncharacter(cp):  # RFC 8264 9.6: Unassigned
        return UNASSIGNED
    if 0x21 <= cp <= 0x7E:  # 9.11: ASCII7
        return PVALID
    if cp in (0x200C, 0x200D):  # 9.8: JoinControl
        return CONTEXTJ
    if _in(cp, _OLD_HANGUL_JAMO):  # 9.10
        return DISALLOWED
    if _in(cp, _DEFAULT_IGNORABLE) or _noncharacter(cp):  # 9.13: PrecisIgnorableProperties
        return DISALLOWED
    if cat == "Cc":  # 9.12: Controls
        return DISALLOWED
    if unicodedata.normalize("NFKC", c) != c:  # 9.17: HasCompat
        return FREE_PVAL
    if cat in ("Ll", "Lu", "Lo", "Nd", "Lm", "Mn", "Mc"):  # 9.1: LetterDigits
        return PVALID
    if cat in ("Lt", "Nl", "No", "Me"):  # 9.18: OtherLetterDigits
        return FREE_PVAL
    if cat == "Zs":  # 9.14: Spaces
        return FREE_PVAL
    if cat in ("Sm", "Sc", "Sk", "So"):  # 9.15: Symbols
        return FREE_PVAL
    if cat in ("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"):  # 9.16: Punctuation
        return FREE_PVAL
    return DISALLOWED


def _script(c: str) -> str:
    """Approximate script of c from its Unicode name."""
    try:
        return unicodedata.name(c).split(" ", 1)[0]
    except ValueError:
        return ""


def _joining_type(c: str) -> str:
    """Approximate Joining_Type: T for marks and format characters, D for letters of
    cursive-joining scripts, U otherwise."""
    cat = unicodedata.category(c)
    if cat in ("Mn", "Me", "Cf"):
        return "T"
    if cat[0] == "L" and _in(ord(c), _JOINING_BLOCKS):
        return "D"
    return "U"


_VIRAMA = 9  # Canonical_Combining_Class Virama


def _context_ok(s: str, i: int) -> bool:
    """RFC 5892 appendix A: the contextual rule for s[i]."""
    cp = ord(s[i])
    before = s[i - 1] if i > 0 else None
    after = s[i + 1] if i + 1 < len(s) else None
    if cp == 0x200C:  # A.1 ZERO WIDTH NON-JOINER
        if before is not None and unicodedata.combining(before) == _VIRAMA:
            return True
        j = i - 1
        while j >= 0 and _joining_type(s[j]) == "T":
            j -= 1
        if j < 0 or _joining_type(s[j]) not in ("L", "D"):
            return False
        j = i + 1
        while j < len(s) and _joining_type(s[j]) == "T":
            j += 1
        return j < len(s) and _joining_type(s[j]) in ("R", "D")
    if cp == 0x200D:  # A.2 ZERO WIDTH JOINER
        return before is not None and unicodedata.combining(before) == _VIRAMA
    if cp == 0x00B7:  # A.3 MIDDLE DOT, only between two l's (Catalan)
        return before == "l" and after == "l"
    if cp == 0x0375:  # A.4 GREEK LOWER NUMERAL SIGN (KERAIA)
        return after is not None and _script(after) == "GREEK"
    if cp in (0x05F3, 0x05F4):  # A.5, A.6 HEBREW PUNCTUATION GERESH, GERSHAYIM
        return before is not None and _script(before) == "HEBREW"
    if cp == 0x30FB:  # A.7 KATAKANA MIDDLE DOT
        for c in s:
            if c == "\u30fb":
                continue
            name = _name(c)
            if "KATAKANA-HIRAGANA" in name or "MIDDLE DOT" in name:  # script Common
                continue
            if name.startswith(_JAPANESE_PREFIXES) or unicodedata.category(c) == "Lo" and (
                name.startswith(("CJK", "IDEOGRAPHIC"))
            ):
                return True
        return False
    if 0x0660 <= cp <= 0x0669:  # A.8 ARABIC-INDIC DIGITS
        return not any(0x06F0 <= ord(c) <= 0x06F9 for c in s)
    if 0x06F0 <= cp <= 0x06F9:  # A.9 EXTENDED ARABIC-INDIC DIGITS
        return not any(0x0660 <= ord(c) <= 0x0669 for c in s)
    return False


_JAPANESE_PREFIXES = (
    "HIRAGANA",
    "KATAKANA",
    "HALFWIDTH KATAKANA",
    "CIRCLED KATAKANA",
    "CJK UNIFIED IDEOGRAPH",
    "CJK COMPATIBILITY IDEOGRAPH",
    "KANGXI RADICAL",
    "CJK RADICAL",
)


def _name(c: str) -> str:
    try:
        return unicodedata.name(c)
    except ValueError:
        return ""


def _check_freeform(s: str) -> None:
    for i, c in enumerate(s):
        prop = freeform_property(c)
        if prop in (PVALID, FREE_PVAL):
            continue
        if prop in (CONTEXTJ, CONTEXTO) and _context_ok(s, i):
            continue
        what = "unassigned" if prop == UNASSIGNED else "disallowed"
        if prop in (CONTEXTJ, CONTEXTO):
            what = "not allowed in this context:"
        raise PrecisError(f"{what} code point U+{ord(c):04X} at position {i}")


def _apply_rules(s: str) -> str:
    # RFC 8265 4.2.1: width mapping none; additional mapping: non-ASCII space to U+0020.
    s = "".join(" " if (c != " " and unicodedata.category(c) == "Zs") else c for c in s)
    # Case mapping none; normalization NFC; directionality none.
    return unicodedata.normalize("NFC", s)


def opaque_string(s: str) -> str:
    """Enforce the OpaqueString profile on s (RFC 8265 4.2.2) and return the result.

    Raises PrecisError for an empty result or a disallowed code point."""
    if not isinstance(s, str):
        raise TypeError("opaque_string takes a str")
    # RFC 8264 7: apply the rules until stable; reject if not stable after 4 rounds.
    for _ in range(4):
        out = _apply_rules(s)
        if out == s:
            break
        s = out
    else:
        raise PrecisError("string does not stabilize under the profile rules")
    if not s:  # RFC 8265 4.2.2: zero-length strings are disallowed
        raise PrecisError("empty string")
    _check_freeform(s)  # RFC 8264 4.3: FreeformClass
    return s
