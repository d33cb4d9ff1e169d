"""Annotated example configuration files, generated from the schema.

`describe_static()` and `describe_dynamic()` return TOML in which every field is preceded by
comments with its description, type and default. Settings present in the built-in example
(a server mail.example.org for the domain example.org with one account) are live, so the
result is a valid configuration; all other settings appear commented out as ``#Key = value``
with their default or an example value, and optional tables as commented-out sections.

conf/moxtw.toml and conf/domains.toml are this output; regenerate them with::

    .venv/bin/python -m moxtw.config.describe conf/

``python -m moxtw.config.describe static|dynamic`` prints one of them.
"""

import os
import sys
import textwrap
from datetime import timedelta
from typing import Any, Optional

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from moxtw.config import introspect
from moxtw.config.errors import format_key
from moxtw.config.load import DYNAMIC_FILE, STATIC_FILE, write_atomic
from moxtw.config.schema import Dynamic, Static
from moxtw.config.types import format_duration

WIDTH = 92

EXAMPLE_STATIC: dict[str, Any] = {
    "DataDir": "../data",
    "LogLevel": "info",
    "User": "moxtw",
    "Hostname": "mail.example.org",
    "ACME": {
        "letsencrypt": {
            "DirectoryURL": "https://acme-v02.api.letsencrypt.org/directory",
            "ContactEmail": "admin@example.net",
        },
    },
    "Listeners": {
        "public": {
            "IPs": ["0.0.0.0", "::"],
            "TLS": {"ACME": "letsencrypt"},
            "SMTP": {"Enabled": True},
            "Submissions": {"Enabled": True},
            "IMAPS": {"Enabled": True},
            "AccountHTTPS": {"Enabled": True},
            "WebmailHTTPS": {"Enabled": True},
            "WebAPIHTTPS": {"Enabled": True},
            "AutoconfigHTTPS": {"Enabled": True},
            "MTASTSHTTPS": {"Enabled": True},
            "WebserverHTTP": {"Enabled": True},
            "WebserverHTTPS": {"Enabled": True},
        },
        "internal": {
            "IPs": ["127.0.0.1", "::1"],
            "Hostname": "localhost",
            "AdminHTTP": {"Enabled": True, "Port": 8080},
            "MetricsHTTP": {"Enabled": True},
        },
    },
    "Postmaster": {"Account": "mjl", "Mailbox": "Postmaster"},
    "HostTLSRPT": {"Account": "mjl", "Mailbox": "TLSRPT", "Localpart": "tlsreports"},
}

EXAMPLE_DYNAMIC: dict[str, Any] = {
    "Domains": {
        "example.org": {
            "LocalpartCatchallSeparator": "+",
            # No DKIM example values: they would name a key file that conf/ cannot ship
            # (a published private key). The DKIM section appears commented out.
            "DMARC": {"Localpart": "dmarcreports", "Account": "mjl", "Mailbox": "DMARC"},
            "MTASTS": {
                "PolicyID": "20240101T000000",
                "Mode": "enforce",
                "MaxAge": "168h",
                "MX": ["mail.example.org"],
            },
            "TLSRPT": {"Localpart": "tlsreports", "Account": "mjl", "Mailbox": "TLSRPT"},
        },
    },
    "Accounts": {
        "mjl": {
            "Domain": "example.org",
            "FullName": "Mechiel",
            "Destinations": {"mjl@example.org": {}},
            "RejectsMailbox": "Rejects",
            "AutomaticJunkFlags": {
                "Enabled": True,
                "JunkMailboxRegexp": "^(junk|spam)",
                "NeutralMailboxRegexp": "^(inbox|neutral|postmaster|dmarc|tlsrpt|rejects)",
            },
            "JunkFilter": {
                "Threshold": 0.95,
                "Onegrams": True,
                "MaxPower": 0.01,
                "TopWords": 10,
                "IgnoreWords": 0.1,
                "RareWords": 2,
            },
        },
    },
}

STATIC_HEADER = """\
moxtw.toml: static configuration of moxtw, read when the server starts. Domains and
accounts are in domains.toml, next to this file.

This annotated example is generated from the schema (moxtw config describe-static). Lines
"#Key = value" and "#[Table]" are settings that are not set: the value shown is the default
or an example; remove the "#" to set them. Relative file names are relative to the
directory of this file. Durations are written like "15s", "30m", "24h" or "1h30m".
"""

DYNAMIC_HEADER = """\
domains.toml: domains and accounts of moxtw. The server reloads this file when it changes,
without restart; a change with errors is logged and the running configuration kept.

This annotated example is generated from the schema (moxtw config describe-dynamic). Lines
"#Key = value" and "#[Table]" are settings that are not set: the value shown is the default
or an example; remove the "#" to set them. Relative file names are relative to the
directory of this file. Durations are written like "15s", "30m", "24h" or "1h30m".
"""


def toml_value(value: Any) -> str:
    """A Python value as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, timedelta):
        return toml_value(format_duration(value))
    if isinstance(value, str):
        out = ['"']
        for c in value:
            if c in '"\\':
                out.append("\\" + c)
            elif ord(c) < 0x20 or c == "\x7f":
                out.append(f"\\u{ord(c):04x}")
            else:
                out.append(c)
        out.append('"')
        return "".join(out)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ", ".join(f"{format_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, BaseModel):
        return toml_value(value.model_dump(exclude_defaults=True))
    raise TypeError(f"cannot render {value!r} as TOML")


def _header(path: tuple[str, ...]) -> str:
    return ".".join(format_key(p) for p in path)


def _example(finfo) -> Any:
    extra = finfo.json_schema_extra or {}
    return extra.get("example", PydanticUndefined)


def _placeholder(annotation: Any) -> Any:
    kind, _ = introspect.container(annotation)
    if kind is list:
        return []
    if kind is dict:
        return {}
    base = introspect.base_type(annotation)
    return {str: "", int: 0, float: 0.0, bool: False, timedelta: timedelta(0)}.get(base, "")


def _sample_value(finfo) -> Any:
    """Value shown for a field that is not set: default, else example, else a placeholder."""
    if finfo.default is not PydanticUndefined and finfo.default is not None:
        return finfo.default
    example = _example(finfo)
    if example is not PydanticUndefined:
        return example
    if finfo.default_factory is not None:
        return finfo.default_factory()
    return _placeholder(finfo.annotation)


def _field_doc(finfo) -> list[str]:
    text = (finfo.description or "").strip()
    tname = introspect.type_name(finfo.annotation, finfo.metadata)
    facts = f"Type: {tname}."
    _, optional = introspect.strip_optional(finfo.annotation)
    if finfo.is_required():
        facts += " Required."
    elif finfo.default_factory is not None:
        value = finfo.default_factory()
        if isinstance(value, (list, dict)) and not value:
            facts += " Default: empty."
        elif not isinstance(value, BaseModel):
            facts += f" Default: {toml_value(value)}."
    elif finfo.default is None:
        facts += " Optional."
    else:
        facts += f" Default: {toml_value(finfo.default)}."
    lines = textwrap.wrap(text, WIDTH - 2) if text else []
    lines += textwrap.wrap(facts, WIDTH - 2)
    return ["# " + line for line in lines]


class _Renderer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, line: str = "") -> None:
        self.lines.append(line)

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.emit()

    def setting(self, commented: bool, text: str) -> None:
        self.emit(("#" if commented else "") + text)

    def table(
        self,
        cls: type[BaseModel],
        data: Optional[dict[str, Any]],
        path: tuple[str, ...],
        commented: bool,
    ) -> None:
        """Render the fields of a model: scalars first, then sub-tables (TOML order)."""
        scalars, tables = [], []
        for name, finfo in cls.model_fields.items():
            annotation = finfo.annotation
            kind, args = introspect.container(annotation)
            if introspect.is_model(annotation):
                tables.append((name, finfo, "model"))
            elif kind is dict and introspect.is_model(args[1]):
                tables.append((name, finfo, "model_map"))
            elif kind is list and introspect.is_model(args[0]):
                tables.append((name, finfo, "model_list"))
            elif kind is dict:
                tables.append((name, finfo, "scalar_map"))
            else:
                scalars.append((name, finfo))

        for name, finfo in scalars:
            self.blank()
            for line in _field_doc(finfo):
                self.emit(line)
            live = data is not None and name in data and not commented
            value = data[name] if live else _sample_value(finfo)
            self.setting(not live, f"{format_key(name)} = {toml_value(value)}")

        for name, finfo, kind in tables:
            self.blank()
            for line in _field_doc(finfo):
                self.emit(line)
            live = data is not None and name in data and not commented
            sub_path = path + (name,)
            annotation = finfo.annotation
            if kind == "model":
                sub = introspect.base_type(annotation)
                self.setting(not live, f"[{_header(sub_path)}]")
                self.table(sub, data[name] if live else None, sub_path, not live)
            elif kind == "model_map":
                sub = introspect.base_type(introspect.container(annotation)[1][1])
                if live:
                    entries = list(data[name].items())
                else:
                    key = (finfo.json_schema_extra or {}).get("key_example", "name")
                    entries = [(key, None)]
                for i, (key, value) in enumerate(entries):
                    if i:
                        self.blank()
                    self.setting(not live, f"[{_header(sub_path + (key,))}]")
                    self.table(sub, value, sub_path + (key,), not live)
            elif kind == "model_list":
                sub = introspect.base_type(introspect.container(annotation)[1][0])
                entries = data[name] if live else [None]
                for i, value in enumerate(entries):
                    if i:
                        self.blank()
                    self.setting(not live, f"[[{_header(sub_path)}]]")
                    self.table(sub, value, sub_path, not live)
            else:  # Table of scalars.
                values = data[name] if live else _sample_value(finfo)
                self.setting(not live, f"[{_header(sub_path)}]")
                for key, value in values.items():
                    self.setting(not live, f"{format_key(key)} = {toml_value(value)}")


def render(cls: type[BaseModel], data: dict[str, Any], header: str) -> str:
    """Annotated TOML for model cls, with the settings in data live."""
    r = _Renderer()
    for line in header.splitlines():
        r.emit(("# " + line).rstrip())
    r.table(cls, data, (), False)
    return "\n".join(r.lines).rstrip("\n") + "\n"


def describe_static() -> str:
    """Annotated example moxtw.toml."""
    return render(Static, EXAMPLE_STATIC, STATIC_HEADER)


def describe_dynamic() -> str:
    """Annotated example domains.toml."""
    return render(Dynamic, EXAMPLE_DYNAMIC, DYNAMIC_HEADER)


def write_examples(directory: str) -> list[str]:
    """Write moxtw.toml and domains.toml to directory; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, text in ((STATIC_FILE, describe_static()), (DYNAMIC_FILE, describe_dynamic())):
        path = os.path.join(directory, name)
        write_atomic(path, text)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m moxtw.config.describe static|dynamic|DIR", file=sys.stderr)
        return 2
    if argv[0] == "static":
        sys.stdout.write(describe_static())
    elif argv[0] == "dynamic":
        sys.stdout.write(describe_dynamic())
    else:
        for path in write_examples(argv[0]):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
