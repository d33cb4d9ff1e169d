"""Parsing of incoming DMARC aggregate reports (RFC 7489 7.2 and appendix C).

A report is an XML document (root ``feedback``), sent as an email attachment that is
usually gzip- or zip-compressed. Reports come from anyone on the internet, so parsing is
defensive: documents with a DTD are refused outright (no entity expansion at all: no XXE,
no "billion laughs"), decompressed sizes, nesting depth, element counts and text lengths
are capped, and every problem becomes a :class:`ReportError`. Elements are matched by
local name, so reports with or without a namespace (``urn:ietf:params:xml:ns:dmarc-2.0``
of the DMARCbis drafts, ``http://dmarc.org/dmarc-xml/0.1``) parse the same. Unknown
elements (extensions, ``np``, ``testing``, ``generator``...) are ignored.

``parse_feedback(data)`` parses a report (XML, gzip or zip); ``parse_message(message)``
finds the report in an email message.
"""

import dataclasses
import gzip
import io
import typing
import zipfile
import zlib
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET
from xml.parsers import expat

from moxtw import message as _message

# Limits on untrusted input.
MAX_REPORT_SIZE = 20 * 1024 * 1024  # decompressed bytes (gzip and zip bombs)
MAX_DEPTH = 16  # element nesting; the schema needs 5
MAX_TEXT = 64 * 1024  # characters of text in one element
MAX_RECORDS = 100_000
MAX_ELEMENTS_PER_RECORD = 5_000
MAX_OTHER_ELEMENTS = 10_000  # elements outside <record>
MAX_COUNT = 2**63 - 1  # a <count> must fit SQLite's INTEGER
MAX_ZIP_MEMBERS = 16
MAX_CANDIDATE_PARTS = 10  # message parts tried as a report

# Media types of report attachments (RFC 7489 7.2.1.1 says application/gzip; reporters
# also use zip and plain XML under various names).
REPORT_TYPES = frozenset({
    "application/gzip", "application/x-gzip", "application/x-gzip-compressed",
    "application/zip", "application/x-zip-compressed", "application/x-zip",
    "text/xml", "application/xml",
})
REPORT_EXTENSIONS = (".xml", ".xml.gz", ".gz", ".zip", ".xml.zip")


class ReportError(Exception):
    """The data is not a usable DMARC aggregate report; the text says why."""


# -- the report as values (field names follow the XML element names of appendix C)


@dataclass(slots=True)
class DateRange:
    begin: int  # Unix seconds, UTC
    end: int


@dataclass(slots=True)
class ReportMetadata:
    org_name: str
    email: str
    report_id: str
    date_range: DateRange
    extra_contact_info: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PolicyPublished:
    """The DMARC record that applied. ``p``/``sp`` are none/quarantine/reject; ``pct`` is
    None when the reporter left it out."""

    domain: str
    adkim: str = ""
    aspf: str = ""
    p: str = ""
    sp: str = ""
    pct: int | None = None
    fo: str = ""


@dataclass(slots=True)
class PolicyOverrideReason:
    type: str  # forwarded, sampled_out, trusted_forwarder, mailing_list, local_policy, other
    comment: str = ""


@dataclass(slots=True)
class PolicyEvaluated:
    disposition: str = ""  # none, quarantine, reject
    dkim: str = ""  # DMARC-aligned DKIM result: pass, fail
    spf: str = ""  # DMARC-aligned SPF result: pass, fail
    reasons: list[PolicyOverrideReason] = field(default_factory=list)


@dataclass(slots=True)
class Row:
    source_ip: str
    count: int
    policy_evaluated: PolicyEvaluated = field(default_factory=PolicyEvaluated)


@dataclass(slots=True)
class Identifiers:
    header_from: str = ""
    envelope_from: str = ""
    envelope_to: str = ""


@dataclass(slots=True)
class DKIMAuthResult:
    domain: str
    result: str  # none, pass, fail, policy, neutral, temperror, permerror
    selector: str = ""
    human_result: str = ""


@dataclass(slots=True)
class SPFAuthResult:
    domain: str
    result: str  # none, neutral, pass, fail, softfail, temperror, permerror
    scope: str = ""  # helo, mfrom; often left out


@dataclass(slots=True)
class AuthResults:
    dkim: list[DKIMAuthResult] = field(default_factory=list)
    spf: list[SPFAuthResult] = field(default_factory=list)


@dataclass(slots=True)
class Record:
    row: Row
    identifiers: Identifiers = field(default_factory=Identifiers)
    auth_results: AuthResults = field(default_factory=AuthResults)


@dataclass(slots=True)
class Feedback:
    """An aggregate report (RFC 7489 appendix C ``feedback``)."""

    report_metadata: ReportMetadata
    policy_published: PolicyPublished
    records: list[Record] = field(default_factory=list)
    version: str = ""

    @property
    def domain(self):
        """The domain the report is about (``policy_published/domain``)."""
        return self.policy_published.domain

    def to_json(self):
        """A JSON-able dict of the report, for storage; ``from_json`` restores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value):
        return _from_json(cls, value)


def _from_json(cls, value):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _convert(hints[f.name], value[f.name])
    return cls(**kwargs)


def _convert(tp, value):
    if value is None:
        return None
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if dataclasses.is_dataclass(tp):
        return _from_json(tp, value)
    return value


# -- decompression


def decompress(data, max_size=MAX_REPORT_SIZE):
    """Undo gzip or zip compression (recognised by content, not by name) and return the
    document; plain data is returned as is. ReportError when the data is damaged or
    larger than ``max_size`` once decompressed."""
    data = bytes(data)
    for _ in range(2):  # a zip may hold a .xml.gz; deeper nesting is refused below
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, max_size)
        elif data[:4] == b"PK\x03\x04":
            data = _unzip(data, max_size)
        else:
            break
    if data[:2] == b"\x1f\x8b" or data[:4] == b"PK\x03\x04":
        raise ReportError("compressed data nested too deep")
    if len(data) > max_size:
        raise ReportError(f"report larger than {max_size} bytes")
    return data


def _gunzip(data, max_size):
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(max_size + 1)  # never more than the cap in memory
    except (OSError, EOFError, zlib.error) as e:
        raise ReportError(f"bad gzip data: {e}") from None
    if len(out) > max_size:
        raise ReportError(f"report larger than {max_size} bytes after gzip decompression")
    return out


def _unzip(data, max_size):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in zf.infolist() if not i.is_dir()]
        if not members:
            raise ReportError("zip file without files")
        if len(members) > MAX_ZIP_MEMBERS:
            raise ReportError(f"zip file with {len(members)} files")
        xml = [i for i in members if i.filename.lower().endswith((".xml", ".xml.gz"))]
        if xml:
            info = xml[0]
        elif len(members) == 1:
            info = members[0]
        else:
            raise ReportError("zip file without an .xml file")
        if info.flag_bits & 0x1:
            raise ReportError("encrypted zip file")
        with zf.open(info) as f:
            # The sizes in the zip directory are not trusted: read at most the cap.
            out = f.read(max_size + 1)
    except ReportError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, EOFError, NotImplementedError...
        raise ReportError(f"bad zip data: {e.__class__.__name__}: {e}") from None
    if len(out) > max_size:
        raise ReportError(f"report larger than {max_size} bytes after zip decompression")
    return out


# -- XML


class _Refused(Exception):
    pass


class _TreeParser:
    """Feeds expat events into an ElementTree TreeBuilder, with local names only.

    Each completed top-level <record> is converted to a :class:`Record` and dropped from
    the tree, so memory stays proportional to one record, not the whole report."""

    def __init__(self):
        self.builder = ET.TreeBuilder()
        self.stack = []
        self.texts = []
        self.text_len = 0
        self.records = []
        self.other_elements = 0
        self.record_elements = 0
        p = expat.ParserCreate(namespace_separator=" ")
        # No DTD means no entity declarations, so nothing to expand or fetch.
        p.StartDoctypeDeclHandler = self._refuse_doctype
        p.EntityDeclHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_entity
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._data
        p.buffer_text = True
        self.parser = p

    def _refuse_doctype(self, *args):
        raise _Refused("document type declarations (DTDs) are not accepted")

    def _refuse_entity(self, *args):
        raise _Refused("entity declarations are not accepted")

    def _flush(self):
        if self.texts:
            self.builder.data("".join(self.texts))
            self.texts = []
            self.text_len = 0

    def _start(self, name, attrs):
        self._flush()
        local = name.rpartition(" ")[2]
        depth = len(self.stack)
        if depth == 0 and local != "feedback":
            raise _Refused(f"root element is <{local}>, not <feedback>")
        if depth >= MAX_DEPTH:
            raise _Refused("elements nested too deep")
        in_record = depth >= 2 or (depth == 1 and local == "record")
        if in_record:
            self.record_elements += 1
            if self.record_elements > MAX_ELEMENTS_PER_RECORD:
                raise _Refused("too many elements in a record")
        else:
            self.other_elements += 1
            if self.other_elements > MAX_OTHER_ELEMENTS:
                raise _Refused("too many elements")
        self.stack.append(self.builder.start(local, {}))

    def _end(self, name):
        self._flush()
        elem = self.builder.end(name.rpartition(" ")[2])
        self.stack.pop()
        if len(self.stack) == 1 and elem.tag == "record":
            if len(self.records) >= MAX_RECORDS:
                raise _Refused(f"more than {MAX_RECORDS} records")
            self.records.append(_record(elem))
            self.stack[0].remove(elem)
            self.record_elements = 0

    def _data(self, text):
        if not self.stack:
            return
        self.text_len += len(text)
        if self.text_len > MAX_TEXT:
            raise _Refused("element text too long")
        self.texts.append(text)

    def parse(self, data):
        try:
            self.parser.Parse(data, True)
        except _Refused as e:
            raise ReportError(str(e)) from None
        except expat.ExpatError as e:
            raise ReportError(f"malformed XML: {e}") from None
        except (UnicodeError, LookupError) as e:  # unknown or broken declared encoding
            raise ReportError(f"bad XML encoding: {e}") from None
        except RecursionError:
            raise ReportError("elements nested too deep") from None
        return self.builder.close()


def parse_feedback(data, max_size=MAX_REPORT_SIZE):
    """Parse a DMARC aggregate report: XML, or gzip/zip-compressed XML (bytes).

    Returns a :class:`Feedback`; raises :class:`ReportError`."""
    xml = decompress(data, max_size)
    parser = _TreeParser()
    root = parser.parse(xml)
    return _feedback(root, parser.records)


def _child(elem, name):
    return elem.find(name) if elem is not None else None


def _text(elem, name, required=False, where=""):
    child = _child(elem, name)
    if child is None:
        if required:
            raise ReportError(f"missing <{name}> in {where or elem.tag}")
        return ""
    text = (child.text or "").strip()
    if required and not text:
        raise ReportError(f"empty <{name}> in {where or elem.tag}")
    return text


def _token(elem, name):
    """An enumerated value (result, disposition...), lower case as in the schema."""
    return _text(elem, name).lower()


def _int(elem, name, lo, hi, required=True, where=""):
    text = _text(elem, name, required, where)
    if not text:
        return None
    # Digits only: int() would also take "1_000", " +5" or other Unicode digits.
    value = text[1:] if text[:1] in "+-" else text
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise ReportError(f"<{name}> is not a valid integer: {text[:40]!r}")
    n = int(text)
    if not lo <= n <= hi:
        raise ReportError(f"<{name}> out of range: {n}")
    return n


def _lenient_int(elem, name, lo, hi):
    """An optional informational integer: None when absent or not valid (a junk pct
    does not make the rest of the report useless)."""
    try:
        return _int(elem, name, lo, hi, required=False)
    except ReportError:
        return None


def _feedback(root, records):
    if root.tag != "feedback":
        raise ReportError(f"root element is <{root.tag}>, not <feedback>")
    md = _child(root, "report_metadata")
    if md is None:
        raise ReportError("missing <report_metadata>")
    dr = _child(md, "date_range")
    if dr is None:
        raise ReportError("missing <date_range> in report_metadata")
    date_range = DateRange(
        begin=_int(dr, "begin", 0, 2**40, where="date_range"),
        end=_int(dr, "end", 0, 2**40, where="date_range"),
    )
    metadata = ReportMetadata(
        org_name=_text(md, "org_name", True, "report_metadata"),
        email=_text(md, "email"),
        report_id=_text(md, "report_id", True, "report_metadata"),
        date_range=date_range,
        extra_contact_info=_text(md, "extra_contact_info"),
        errors=[(e.text or "").strip() for e in md.findall("error")],
    )
    pp = _child(root, "policy_published")
    if pp is None:
        raise ReportError("missing <policy_published>")
    policy = PolicyPublished(
        domain=_text(pp, "domain", True, "policy_published"),
        adkim=_token(pp, "adkim"),
        aspf=_token(pp, "aspf"),
        p=_token(pp, "p"),
        sp=_token(pp, "sp"),
        pct=_lenient_int(pp, "pct", 0, 100),
        fo=_text(pp, "fo"),
    )
    return Feedback(
        report_metadata=metadata,
        policy_published=policy,
        records=records,
        version=_text(root, "version"),
    )


def _record(elem):
    row = _child(elem, "row")
    if row is None:
        raise ReportError("missing <row> in record")
    pe = _child(row, "policy_evaluated")
    evaluated = PolicyEvaluated(
        disposition=_token(pe, "disposition"),
        dkim=_token(pe, "dkim"),
        spf=_token(pe, "spf"),
        reasons=[
            PolicyOverrideReason(type=_token(r, "type"), comment=_text(r, "comment"))
            for r in (pe.findall("reason") if pe is not None else [])
        ],
    )
    ids = _child(elem, "identifiers")
    auth = _child(elem, "auth_results")
    return Record(
        row=Row(
            source_ip=_text(row, "source_ip", True, "row"),
            count=_int(row, "count", 0, MAX_COUNT, where="row"),
            policy_evaluated=evaluated,
        ),
        identifiers=Identifiers(
            header_from=_text(ids, "header_from"),
            envelope_from=_text(ids, "envelope_from"),
            envelope_to=_text(ids, "envelope_to"),
        ),
        auth_results=AuthResults(
            dkim=[
                DKIMAuthResult(
                    domain=_text(d, "domain"), result=_token(d, "result"),
                    selector=_text(d, "selector"), human_result=_text(d, "human_result"),
                )
                for d in (auth.findall("dkim") if auth is not None else [])
            ],
            spf=[
                SPFAuthResult(domain=_text(s, "domain"), result=_token(s, "result"),
                              scope=_token(s, "scope"))
                for s in (auth.findall("spf") if auth is not None else [])
            ],
        ),
    )


# -- messages


def _is_candidate(media_type, filename):
    name = filename.lower()
    if media_type in REPORT_TYPES:
        return True
    # application/octet-stream and other vague labels: go by the file name.
    return name.endswith(REPORT_EXTENSIONS)


def report_parts(message, is_candidate=_is_candidate):
    """Yield ``(media_type, filename, decoded body)`` of the parts of an email message
    (bytes) that ``is_candidate(media_type, filename)`` accepts, at most
    MAX_CANDIDATE_PARTS. Parts of attached messages (forwarded reports) are included."""
    data = bytes(message)
    root = _message.parse(data)
    n = 0
    for part in root.walk():
        if part.is_multipart() or part.message is not None:
            continue
        media_type = f"{part.media_type}/{part.media_subtype}".lower()
        filename = part.filename()
        if not is_candidate(media_type, filename):
            continue
        yield media_type, filename, part.decoded_body(data)
        n += 1
        if n >= MAX_CANDIDATE_PARTS:
            return


def parse_message(message, max_size=MAX_REPORT_SIZE):
    """Find and parse the DMARC aggregate report in an email message (bytes).

    Returns the :class:`Feedback` of the first attachment that parses, None when the
    message has no part that looks like a report, and raises :class:`ReportError` (of
    the first such part) when parts looked like reports but none parsed."""
    first_error = None
    for media_type, filename, body in report_parts(message):
        try:
            return parse_feedback(body, max_size)
        except ReportError as e:
            if first_error is None:
                first_error = ReportError(f"{media_type} part {filename!r}: {e}")
    if first_error is not None:
        raise first_error
    return None
