"""Address header parsing: From, Sender, Reply-To, To, Cc, Bcc.

Implements RFC 5322 3.4 (mailbox, name-addr, angle-addr, group), including the
obsolete forms of RFC 5322 4.4 (routes, phrases with dots, missing commas) and
RFC 2047 encoded words in display names. Unparseable input yields what could
be recognised; nothing here raises.
"""

from dataclasses import dataclass, field

from moxtw.message.header import decode_words, to_str, unfold

# At most this many addresses are parsed from one header; the rest is ignored.
MAX_ADDRESSES = 1000
# Header values longer than this are cut before parsing.
MAX_INPUT = 256 * 1024


@dataclass
class Address:
    """One mailbox: decoded display name, local part and domain."""

    name: str = ""
    localpart: str = ""
    domain: str = ""

    def address(self):
        """The addr-spec, "localpart@domain" (or just the localpart without domain)."""
        if self.domain:
            return self.localpart + "@" + self.domain
        return self.localpart

    def to_json(self):
        return [self.name, self.localpart, self.domain]

    @classmethod
    def from_json(cls, value):
        return cls(*value)


@dataclass
class RawMailbox:
    """A mailbox as written: display name with quoting removed but encoded words
    kept, obsolete source route (RFC 5322 4.4), local part, domain."""

    name: str = ""
    route: str = ""
    localpart: str = ""
    domain: str = ""


@dataclass
class RawGroup:
    """RFC 5322 3.4 group: display name and member mailboxes."""

    name: str = ""
    members: list = field(default_factory=list)


_SPECIALS = '<>@,;:.[]'
_STOP = ' \t\r\n()<>@,;:."[]'


def _tokenize(s):
    """Yield (kind, text) with kind in "atom", "qs", "dl", "comment", or a special char."""
    tokens = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == "(":
            depth = 1
            i += 1
            buf = []
            while i < n and depth:
                c = s[i]
                if c == "\\" and i + 1 < n:
                    i += 1
                    buf.append(s[i])
                elif c == "(":
                    depth += 1
                    buf.append(c)
                elif c == ")":
                    depth -= 1
                    if depth:
                        buf.append(c)
                else:
                    buf.append(c)
                i += 1
            tokens.append(("comment", "".join(buf)))
            continue
        if c == '"':
            i += 1
            buf = []
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(s[i])
                i += 1
            i += 1
            tokens.append(("qs", "".join(buf)))
            continue
        if c == "[":
            end = s.find("]", i)
            if end < 0:
                end = n - 1
            tokens.append(("dl", s[i:end + 1]))
            i = end + 1
            continue
        if c in _SPECIALS:
            tokens.append((c, c))
            i += 1
            continue
        start = i
        while i < n and s[i] not in _STOP:
            i += 1
        if i == start:
            # A stray ")": not part of anything.
            i += 1
            continue
        tokens.append(("atom", s[start:i]))
    return tokens


def _phrase(tokens):
    """Join the words of a display name (RFC 5322 3.2.5 phrase, 4.1 obs-phrase)."""
    words = []
    for kind, text in tokens:
        if kind in ("atom", "qs"):
            words.append(text)
        elif kind == ".":
            if words:
                words[-1] += "."
            else:
                words.append(".")
        elif kind in ("@", ":", "dl"):
            words.append(text)
    return " ".join(words).strip()


def _comment_name(tokens):
    for kind, text in tokens:
        if kind == "comment" and text.strip():
            return text.strip()
    return ""


def _addr_spec(tokens):
    """Split addr-spec tokens at the last "@": (localpart, domain)."""
    tokens = [t for t in tokens if t[0] != "comment"]
    at = None
    for idx, (kind, _text) in enumerate(tokens):
        if kind == "@":
            at = idx
    if at is None:
        local_tokens, domain_tokens = tokens, []
    else:
        local_tokens, domain_tokens = tokens[:at], tokens[at + 1:]
    # RFC 5322 3.4.1: local-part is dot-atom or quoted-string (obs: words
    # separated by dots); joined without the whitespace around them.
    local = "".join(text for kind, text in local_tokens if kind in ("atom", "qs", ".", "@"))
    domain = "".join(text for kind, text in domain_tokens if kind in ("atom", "dl", "."))
    return local, domain


def _mailbox(tokens):
    """Parse one mailbox from its tokens (no top-level commas)."""
    lt = None
    for idx, (kind, _text) in enumerate(tokens):
        if kind == "<":
            lt = idx
            break
    if lt is None:
        local, domain = _addr_spec(tokens)
        if not local and not domain:
            return None
        return RawMailbox(_comment_name(tokens), "", local, domain)
    name = _phrase(tokens[:lt])
    inner = []
    for kind, text in tokens[lt + 1:]:
        if kind == ">":
            break
        inner.append((kind, text))
    route = ""
    # RFC 5322 4.4 obs-route: "@a,@b:" before the addr-spec.
    colon = None
    for idx, (kind, _text) in enumerate(inner):
        if kind == ":":
            colon = idx
            break
    if colon is not None and inner and inner[0][0] == "@":
        route = "".join(text for kind, text in inner[:colon] if kind != "comment")
        inner = inner[colon + 1:]
    local, domain = _addr_spec(inner)
    if not name:
        name = _comment_name(tokens[lt:])
    if not local and not domain and not name:
        return None
    return RawMailbox(name, route, local, domain)


def _split(tokens, start, stops):
    """Collect tokens from start up to a top-level stop token (outside <...>)."""
    angle = False
    i = start
    n = len(tokens)
    while i < n:
        kind = tokens[i][0]
        if kind == "<":
            angle = True
        elif kind == ">":
            angle = False
        elif not angle and kind in stops:
            break
        i += 1
    return tokens[start:i], i


def parse_raw(value):
    """Parse an address-list into RawMailbox and RawGroup items, as written."""
    if value is None:
        return []
    s = to_str(unfold(value))
    if len(s) > MAX_INPUT:
        s = s[:MAX_INPUT]
    tokens = _tokenize(s)
    items = []
    count = 0
    i = 0
    n = len(tokens)
    while i < n and count < MAX_ADDRESSES:
        kind = tokens[i][0]
        if kind in (",", ";", ">"):
            i += 1
            continue
        segment, j = _split(tokens, i, (",", ":", ";"))
        if j < n and tokens[j][0] == ":" and not any(k == "<" for k, _t in segment):
            # RFC 5322 3.4: group = display-name ":" [group-list] ";"
            group = RawGroup(_phrase(segment))
            i = j + 1
            while i < n and count < MAX_ADDRESSES:
                kind = tokens[i][0]
                if kind == ";":
                    i += 1
                    break
                if kind == ",":
                    i += 1
                    continue
                member, i = _split(tokens, i, (",", ";"))
                mb = _mailbox(member)
                if mb is not None:
                    group.members.append(mb)
                    count += 1
            items.append(group)
            continue
        segment, j = _split(tokens, i, (",", ";"))
        mb = _mailbox(segment)
        if mb is not None:
            items.append(mb)
            count += 1
        i = j + 1 if j > i else i + 1
    return items


def _decoded(mb):
    return Address(decode_words(mb.name).strip(), mb.localpart, mb.domain)


def parse_address_list(value):
    """Parse an address-list header value into Addresses; groups are flattened."""
    result = []
    try:
        for item in parse_raw(value):
            if isinstance(item, RawGroup):
                result.extend(_decoded(mb) for mb in item.members)
            else:
                result.append(_decoded(item))
    except Exception:
        # Parsing must never fail delivery; the code above is meant not to
        # raise, this is the last line of defence.
        pass
    return result
