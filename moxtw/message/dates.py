"""Date header parsing (RFC 5322 3.3 and the obsolete forms of RFC 5322 4.3).

Accepts what real mail contains: missing day of week or seconds, two- and
three-digit years, named and military zones, comments, month-first asctime
dates and ISO 8601. Returns timezone-aware datetimes, or None; never raises.
"""

import re
from datetime import datetime, timedelta, timezone

from moxtw.message.header import strip_comments, to_str, unfold

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}

# RFC 5322 4.3 obs-zone. Military single-letter zones were defined wrongly in
# RFC 822 and are to be treated as "-0000" (unknown), as are unknown names.
_ZONES = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0,
    "est": -5 * 60, "edt": -4 * 60, "cst": -6 * 60, "cdt": -5 * 60,
    "mst": -7 * 60, "mdt": -6 * 60, "pst": -8 * 60, "pdt": -7 * 60,
}

_ZONE = r"(?P<zone>[+-]\s?\d{1,4}|[A-Za-z]{1,5}(?:\s*[+-]\d{4})?)?"
_TIME = r"(?P<h>\d{1,2})\s*[:.]\s*(?P<m>\d{1,2})(?:\s*[:.]\s*(?P<s>\d{1,2}))?(?:\.\d+)?"

# [day-of-week ","] day month year time [zone]
_RFC5322 = re.compile(
    r"^\s*(?:[A-Za-z]+\.?\s*,?\s*)?(?P<day>\d{1,2})\s*[-\s/]?\s*(?P<mon>[A-Za-z]{3,})\.?\s*[-\s/,]?\s*"
    r"(?P<year>\d{2,4})\s*,?\s*(?:at\s+)?" + _TIME + r"\s*" + _ZONE)
# asctime and friends: [day-of-week [","]] month day time year [zone], or
# month day year time.
_ASCTIME = re.compile(
    r"^\s*(?:[A-Za-z]+\.?\s*,?\s*)?(?P<mon>[A-Za-z]{3,})\.?\s+(?P<day>\d{1,2})\s*,?\s+"
    r"(?:(?P<year1>\d{4})\s+)?" + _TIME + r"\s*(?:(?P<year2>\d{4})\s*)?" + _ZONE)
_ISO = re.compile(
    r"^\s*(?P<year>\d{4})-(?P<mon>\d{1,2})-(?P<day>\d{1,2})(?:[T\s]+" + _TIME + r")?\s*"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)


def _zone_minutes(zone):
    if not zone:
        return 0
    zone = zone.replace(" ", "")
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        if not digits.isdigit():
            return 0
        if len(digits) <= 2:
            minutes = int(digits) * 60
        else:
            minutes = int(digits[:-2]) * 60 + int(digits[-2:])
        if minutes >= 24 * 60 or int(digits[-2:]) >= 60 and len(digits) > 2:
            return 0
        return -minutes if zone[0] == "-" else minutes
    m = re.match(r"([A-Za-z]+)([+-]\d{4})?$", zone)
    if m and m.group(2):
        # "GMT+0200" style.
        return _zone_minutes(m.group(2))
    return _ZONES.get(zone.lower(), 0)


def _year(text):
    year = int(text)
    # RFC 5322 4.3: two-digit years are 19xx from 50 on, 20xx below; three
    # digits mean 1900 plus the value.
    if len(text) == 2:
        year += 2000 if year < 50 else 1900
    elif len(text) == 3:
        year += 1900
    return year


def _build(year, month, day, h, m, s, zone):
    if s is None:
        s = 0
    if s == 60:
        s = 59  # RFC 5322 3.3: a leap second is allowed.
    try:
        tz = timezone(timedelta(minutes=_zone_minutes(zone)))
        return datetime(year, month, day, h, m, s, tzinfo=tz)
    except (ValueError, OverflowError):
        return None


def parse_date(value):
    """Parse an RFC 5322 date-time; None when absent or unparseable."""
    if value is None:
        return None
    try:
        s = strip_comments(to_str(unfold(value)))[:200]
        m = _RFC5322.match(s)
        if m:
            month = _MONTHS.get(m.group("mon")[:3].lower())
            if month is not None:
                return _build(_year(m.group("year")), month, int(m.group("day")),
                              int(m.group("h")), int(m.group("m")),
                              int(m.group("s")) if m.group("s") else None, m.group("zone"))
        m = _ASCTIME.match(s)
        if m and (m.group("year1") or m.group("year2")):
            month = _MONTHS.get(m.group("mon")[:3].lower())
            if month is not None:
                return _build(int(m.group("year1") or m.group("year2")), month, int(m.group("day")),
                              int(m.group("h")), int(m.group("m")),
                              int(m.group("s")) if m.group("s") else None, m.group("zone"))
        m = _ISO.match(s)
        if m:
            return _build(int(m.group("year")), int(m.group("mon")), int(m.group("day")),
                          int(m.group("h") or 0), int(m.group("m") or 0),
                          int(m.group("s")) if m.group("s") else None,
                          "+0000" if (m.group("zone") or "Z").upper() == "Z" else m.group("zone"))
    except Exception:
        return None
    return None
