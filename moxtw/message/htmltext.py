"""Plain text of HTML bodies, for previews and search (a linear scan, no HTML parser)."""

import html
import re

# HTML input for text extraction is cut at this many characters.
MAX_HTML = 1024 * 1024
_TAG_NAME = re.compile(r"/?([a-z][a-z0-9]*)")
_SKIP_CONTENT = {"script", "style", "head", "title"}
_BLOCK = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"}


def html_to_text(s):
    """Plain text of an HTML body, good enough for previews and indexing.

    A single linear scan (no backtracking regexes), so hostile HTML cannot
    make it slow.
    """
    s = s[:MAX_HTML]
    lower = s.lower()
    n = len(s)
    out = []
    pos = 0
    while pos < n:
        i = s.find("<", pos)
        if i < 0:
            out.append(s[pos:])
            break
        out.append(s[pos:i])
        if lower.startswith("<!--", i):
            j = s.find("-->", i + 4)
            if j < 0:
                break
            out.append(" ")
            pos = j + 3
            continue
        j = s.find(">", i)
        if j < 0:
            break
        m = _TAG_NAME.match(lower, i + 1)
        name = m.group(1) if m else ""
        if name in _SKIP_CONTENT and lower[i + 1] != "/":
            k = lower.find("</" + name, j)
            if k < 0:
                break
            j = s.find(">", k)
            if j < 0:
                break
        out.append("\n" if name in _BLOCK else " ")
        pos = j + 1
    return html.unescape("".join(out))
