"""xtext (RFC 3461 4), the encoding of the DSN parameters ORCPT and ENVID."""

import re


def xtext_encode(text):
    """Printable ASCII except "+" and "=" as is, every other octet as "+HH"."""
    return "".join(
        ch if "!" <= ch <= "~" and ch not in "+=" else "".join(f"+{b:02X}" for b in ch.encode("utf-8"))
        for ch in text
    )


def xtext_decode(text):
    """"+" and two upper-case hex digits stand for one octet."""
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
