"""Configuration errors that name the file, the key path, the line and what is expected.

`ConfigError.errors` is a list of lines like::

    conf/domains.toml: Accounts.mjl.Destinations."mjl@example.org".Mailboxx: unknown key
    (line 12); did you mean Mailbox?
    conf/domains.toml: Accounts.mjl.Destinations."mjl@example.org".Box: unknown key
    (line 13); expected one of: Mailbox, Rulesets, SMTPError, MessageAuthRequiredSMTPError,
    FullName

Line numbers come from `key_lines`, a small scanner over the TOML text (tomllib gives values
but no positions). It is only run on text tomllib already accepted.
"""

import difflib
import json
import re
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ValidationError

from moxtw.config import introspect


class ConfigError(Exception):
    """Invalid configuration; `errors` lists every problem found, one line each."""

    def __init__(self, errors: Iterable[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(key: str) -> str:
    """A TOML key, quoted when it is not a bare key."""
    if _BARE_KEY.match(key):
        return key
    return json.dumps(key, ensure_ascii=False)


def format_path(loc: Iterable[Any]) -> str:
    """A key path like ``Accounts.mjl.Destinations."mjl@example.org".Rulesets[0].Mailbox``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + format_key(str(part))
    return out


# --- Line numbers -------------------------------------------------------------------------


class _Scanner:
    """Record the line of each key (and array element) in TOML text."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[tuple[Any, ...], int] = {}
        self.aot_index: dict[tuple[Any, ...], int] = {}
        self.aot_latest: dict[tuple[str, ...], int] = {}

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def skip_space(self, newlines: bool = False) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.advance((len(self.s) if end < 0 else end) - self.i)
            else:
                return

    def record(self, path: tuple[Any, ...], line: int) -> None:
        self.lines.setdefault(path, line)

    def string(self) -> str:
        for quote in ('"""', "'''"):
            if self.peek(3) == quote:
                end = self.s.find(quote, self.i + 3)
                while quote == '"""' and end > 0 and _escaped(self.s, end):
                    end = self.s.find(quote, end + 1)
                while self.s[end + 3 : end + 4] == quote[0]:
                    end += 1
                raw = self.s[self.i + 3 : end]
                self.advance(end + 3 - self.i)
                return raw
        quote = self.peek()
        j = self.i + 1
        while self.s[j] != quote:
            j += 2 if quote == '"' and self.s[j] == "\\" else 1
        raw = self.s[self.i : j + 1]
        self.advance(j + 1 - self.i)
        if quote == '"':
            return json.loads(raw) if "\\U" not in raw else raw[1:-1]
        return raw[1:-1]

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip_space()
            if self.peek() in ('"', "'"):
                parts.append(self.string())
            else:
                m = re.compile(r"[A-Za-z0-9_-]+").match(self.s, self.i)
                if not m:
                    raise ValueError("bad key")
                parts.append(m.group(0))
                self.advance(m.end() - self.i)
            self.skip_space()
            if self.peek() != ".":
                return parts
            self.advance()

    def value(self, path: tuple[Any, ...]) -> None:
        self.skip_space()
        c = self.peek()
        if c == "{":
            self.advance()
            while True:
                self.skip_space()
                if self.peek() == "}":
                    self.advance()
                    return
                line = self.line
                key = tuple(self.key())
                for n in range(1, len(key) + 1):
                    self.record(path + key[:n], line)
                self.skip_space()
                self.advance()  # =
                self.value(path + key)
                self.skip_space()
                if self.peek() == ",":
                    self.advance()
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_space(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                self.record(path + (index,), self.line)
                self.value(path + (index,))
                index += 1
                self.skip_space(newlines=True)
                if self.peek() == ",":
                    self.advance()
        elif c in ('"', "'"):
            self.string()
        else:
            m = re.compile(r"[^,\]}#\n]*").match(self.s, self.i)
            self.advance(m.end() - self.i)

    def resolve(self, key: list[str]) -> tuple[Any, ...]:
        """Insert the current index of enclosing arrays of tables into a header key."""
        out: list[Any] = []
        for n, part in enumerate(key):
            out.append(part)
            prefix = tuple(key[: n + 1])
            if n < len(key) - 1 and prefix in self.aot_latest:
                out.append(self.aot_latest[prefix])
        return tuple(out)

    def scan(self) -> dict[tuple[Any, ...], int]:
        current: tuple[Any, ...] = ()
        while True:
            self.skip_space(newlines=True)
            if self.i >= len(self.s):
                return self.lines
            line = self.line
            if self.peek(2) == "[[":
                self.advance(2)
                key = self.key()
                self.skip_space()
                self.advance(2)
                parent = self.resolve(key)
                index = self.aot_index.get(parent, 0)
                self.aot_index[parent] = index + 1
                self.aot_latest[tuple(key)] = index
                current = parent + (index,)
                self.record(parent, line)
                self.record(current, line)
            elif self.peek() == "[":
                self.advance()
                key = self.key()
                self.skip_space()
                self.advance()
                current = self.resolve(key)
                for n in range(1, len(current) + 1):
                    self.record(current[:n], line)
            else:
                key = tuple(self.key())
                for n in range(1, len(key) + 1):
                    self.record(current + key[:n], line)
                self.skip_space()
                self.advance()  # =
                self.value(current + key)


def _escaped(s: str, pos: int) -> bool:
    n = 0
    while pos - n - 1 >= 0 and s[pos - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map key paths (strings, and ints for array elements) to 1-based line numbers.

    Best effort: on text the scanner cannot follow, returns what it found so far.
    """
    scanner = _Scanner(text)
    try:
        return scanner.scan()
    except (ValueError, IndexError):
        return scanner.lines


def _fold(part: Any) -> Any:
    return part.lower() if isinstance(part, str) else part


def line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> Optional[int]:
    """Line of loc, or of its closest enclosing key found in the file."""
    folded = {tuple(_fold(p) for p in k): v for k, v in lines.items()}
    for n in range(len(loc), 0, -1):
        prefix = tuple(loc[:n])
        if prefix in lines:
            return lines[prefix]
        fprefix = tuple(_fold(p) for p in prefix)
        if fprefix in folded:
            return folded[fprefix]
    return None


# --- Formatting ---------------------------------------------------------------------------


def format_error(
    filename: str,
    loc: tuple[Any, ...],
    problem: str,
    lines: dict[tuple[Any, ...], int],
    expected: str = "",
    hint: str = "",
) -> str:
    """One error line: file, key path, problem, line number, expectation or hint."""
    out = f"{filename}: "
    if loc:
        out += format_path(loc) + ": "
    out += problem
    line = line_of(lines, loc) if loc else None
    if line is not None:
        out += f" (line {line})"
    if expected:
        out += f"; expected {expected}"
    if hint:
        out += f"; {hint}"
    return out


def _input_repr(value: Any) -> str:
    kinds = {str: "string", int: "integer", bool: "boolean", float: "number", list: "array", dict: "table"}
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    return f"{kind} {json.dumps(value, ensure_ascii=False, default=str)}"


def closest_key(key: str, valid: Iterable[str]) -> Optional[str]:
    """The valid key ``key`` is most likely a typo of, or None (case is ignored)."""
    folded = {k.lower(): k for k in valid}
    match = difflib.get_close_matches(key.lower(), folded, n=1, cutoff=0.7)
    return folded[match[0]] if match else None


def validation_errors(
    exc: ValidationError, model: type[BaseModel], filename: str, text: str
) -> list[str]:
    """Turn a pydantic ValidationError into error lines naming file, key path and line.

    An unknown key suggests the closest valid one; when that key is required and missing,
    only the unknown key is reported: a typo is one mistake, not two."""
    lines = key_lines(text)
    errors = exc.errors(include_url=False)
    suggested = {}  # loc of an unknown key -> the valid key it is likely a typo of
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            parent = introspect.model_at(model, loc[:-1])
            if parent is not None:
                suggested[loc] = closest_key(loc[-1], parent.model_fields)
    typoed = {loc[:-1] + (key,) for loc, key in suggested.items() if key is not None}
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        problem = err["msg"]
        expected = hint = ""
        if "[key]" in loc:
            loc = loc[: loc.index("[key]")]
            problem = "invalid key: " + problem
        kind = err["type"]
        if kind == "extra_forbidden":
            problem = "unknown key"
            if suggested.get(loc) is not None:
                hint = f"did you mean {format_key(suggested[loc])}?"
            else:
                parent = introspect.model_at(model, loc[:-1])
                if parent is not None:
                    expected = "one of: " + ", ".join(parent.model_fields)
        elif kind == "missing":
            if loc in typoed:
                continue
            problem = "missing required key"
            finfo = introspect.field_at(model, loc)
            if finfo is not None:
                expected = introspect.type_name(finfo.annotation, finfo.metadata)
        else:
            if problem.startswith("Value error, "):
                problem = problem[len("Value error, ") :]
            elif problem.startswith("Assertion failed, "):
                problem = problem[len("Assertion failed, ") :]
            if kind.endswith("_type"):
                problem += f", got {_input_repr(err.get('input'))}"
            elif kind not in ("value_error", "assertion_error") and not isinstance(
                err.get("input"), (dict, list)
            ):
                problem += f", got {_input_repr(err.get('input'))}"
            finfo = introspect.field_at(model, loc)
            if finfo is not None and kind.endswith("_type"):
                expected = introspect.type_name(finfo.annotation, finfo.metadata)
        out.append(format_error(filename, loc, problem, lines, expected, hint))
    return out
