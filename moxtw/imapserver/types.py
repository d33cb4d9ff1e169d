"""Values the IMAP command parser produces and the command handlers, FETCH and SEARCH
consume. Shared so each part can be built and tested on its own."""

from dataclasses import dataclass, field
from datetime import date, datetime

STAR = None  # "*" in a sequence set: the largest number in use (RFC 9051 9, seq-number)


@dataclass(frozen=True)
class SeqSet:
    """A sequence set (RFC 9051 9: sequence-set): inclusive ranges; ``STAR`` (None) for
    "*"; or the saved search result "$" (RFC 5182) when ``searchres`` is true."""

    ranges: tuple = ()  # ((lo, hi), ...): ints, or STAR
    searchres: bool = False


@dataclass(frozen=True)
class Section:
    """BODY[...] / BINARY[...] section (RFC 9051 6.4.5)."""

    part: tuple = ()  # part numbers, e.g. (1, 2) for "1.2"; () for the whole message
    text: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple = ()  # upper-cased header field names for HEADER.FIELDS[.NOT]


@dataclass(frozen=True)
class FetchAtt:
    """One FETCH data item (RFC 9051 6.4.5).

    ``name``: "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
    "UID", "MODSEQ", "PREVIEW", "SAVEDATE", "RFC822", "RFC822.HEADER", "RFC822.TEXT",
    "BODY[]" (any BODY with a section; see ``section``), "BINARY[]", "BINARY.SIZE[]".
    ``peek``: BODY.PEEK / BINARY.PEEK (does not set \\Seen).
    ``partial``: (offset, count) from "<offset.count>", or None.
    """

    name: str
    section: object = None  # Section for "BODY[]", "BINARY[]", "BINARY.SIZE[]"
    peek: bool = False
    partial: object = None


@dataclass
class SearchKey:
    """A node of a SEARCH program (RFC 9051 6.4.4). ``op`` is the lower-cased search key
    name; composite nodes: "and" (args: [SearchKey]), "or" (args: [a, b]), "not" (args:
    [k]). Leaves, with ``args``:

    - "all", "answered", "deleted", "draft", "flagged", "seen", "unanswered", "undeleted",
      "undraft", "unflagged", "unseen", "new", "old", "recent": []
    - "keyword", "unkeyword": [keyword str]
    - "bcc", "cc", "from", "to", "subject", "body", "text": [str]
    - "header": [field name str, str]
    - "before", "on", "since", "sentbefore", "senton", "sentsince", "savedbefore",
      "savedon", "savedsince": [datetime.date]
    - "older", "younger" (RFC 5032): [int seconds]
    - "larger", "smaller": [int]
    - "uid": [SeqSet]; "seqset": [SeqSet] (a bare sequence set)
    - "modseq" (RFC 7162): [int] (entry name/type are parsed and ignored)
    - "savedatesupported" (RFC 8514): []
    """

    op: str
    args: list = field(default_factory=list)


@dataclass
class SearchProgram:
    """SEARCH / UID SEARCH arguments: optional RETURN options (RFC 4731 ESEARCH, RFC 5182
    SAVE), optional CHARSET, and the key (an "and" of the given keys)."""

    key: SearchKey
    charset: str = ""
    return_opts: object = None  # None: plain SEARCH response; else tuple of "MIN", "MAX", "ALL", "COUNT", "SAVE"


@dataclass
class Command:
    """A parsed command. ``name`` is upper-cased ("FETCH", "STORE", ...); ``uid`` is true
    for the UID variants. ``args`` holds the command's parsed arguments (see parser)."""

    tag: str
    name: str
    uid: bool = False
    args: dict = field(default_factory=dict)


__all__ = ["STAR", "SeqSet", "Section", "FetchAtt", "SearchKey", "SearchProgram", "Command", "date", "datetime"]
