"""Loading, checking and writing the configuration files.

- `load_static` reads moxtw.toml, `load_dynamic` reads domains.toml and checks it against
  the static config (accounts, domains, addresses and transports must fit together),
  `load` reads both from a config directory.
- `write_dynamic` changes domains.toml through tomlkit, so comments and layout survive, and
  replaces the file atomically only when the result is valid.
- `check_files` checks that files the configuration names (certificates, keys) exist; loading
  does not require them, because some are created at first start (localserve's certificate).
- `config_test` runs all checks, for ``moxtw config test``.

Files are read with tomllib; errors raise `ConfigError`, whose lines name the file, the key
path, the line and what is expected.
"""

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import tomlkit
from pydantic import BaseModel, ValidationError

from moxtw import durable
from moxtw.config.errors import ConfigError, format_error, key_lines, validation_errors
from moxtw.config.schema import Dynamic, Route, Static
from moxtw.config.types import parse_address

STATIC_FILE = "moxtw.toml"
DYNAMIC_FILE = "domains.toml"
# Mode of a new config file. Config is outside the data directory (whose files are 0600,
# issue 10): the server rereads domains.toml after twistd --uid dropped privileges, so a
# file root writes must stay readable to it. An existing file keeps its mode: an admin
# who made moxtw.toml (transport passwords) private keeps it so.
CONFIG_FILE_MODE = 0o644

#: (mtime_ns, size, inode) of a file, used to notice changes.
FileStamp = tuple[int, int, int]


def file_stamp(path: str) -> Optional[FileStamp]:
    """(mtime, size, inode) of path, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class Config:
    """A loaded configuration. `dynamic` is replaced when domains.toml is reloaded."""

    static: Static
    dynamic: Dynamic
    config_dir: str
    static_path: str
    dynamic_path: str
    data_dir: str
    dynamic_stamp: Optional[FileStamp] = field(default=None, compare=False)
    # moxtw.tls.certstore.CertStore per listener name, made when the service tree is built.
    cert_stores: dict = field(default_factory=dict, compare=False, repr=False)

    def path(self, name: str) -> str:
        """A file name from the configuration, relative to the config directory."""
        return os.path.normpath(os.path.join(self.config_dir, name))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: invalid UTF-8 (line {line})"]) from None


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None


def _validate(model: type[BaseModel], data: dict[str, Any], path: str, text: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_errors(exc, model, path, text)) from None


# --- Static -------------------------------------------------------------------------------


def check_static(static: Static) -> list[tuple[tuple[Any, ...], str]]:
    """Checks across moxtw.toml; returns (key path, problem) pairs."""
    problems = []
    for name, listener in static.Listeners.items():
        if listener.TLS is not None and listener.TLS.ACME is not None:
            if listener.TLS.ACME not in static.ACME:
                problems.append(
                    (
                        ("Listeners", name, "TLS", "ACME"),
                        f"unknown ACME provider {listener.TLS.ACME!r}, expected one of the "
                        "ACME table: " + (", ".join(static.ACME) or "(none configured)"),
                    )
                )
    if static.HostTLSRPT is not None and not static.HostTLSRPT.Localpart.isascii():
        problems.append((("HostTLSRPT", "Localpart"), "must be ASCII only"))
    if not static.Postmaster.Mailbox:
        problems.append((("Postmaster", "Mailbox"), "empty mailbox name"))
    for name in ("TestDirectDeliveryPort", "TestMTASTSPort"):
        if getattr(static, name) is not None and os.environ.get("MOXTW_TESTING") != "1":
            problems.append(((name,), "test-only setting, refused unless MOXTW_TESTING=1 is in the environment"))
    return problems


def validate_static(text: str, path: str) -> Static:
    """Parse and check the text of moxtw.toml; path is used in errors."""
    static = _validate(Static, _parse(text, path), path, text)
    problems = check_static(static)
    if problems:
        lines = key_lines(text)
        raise ConfigError(format_error(path, loc, msg, lines) for loc, msg in problems)
    return static


def load_static(path: str) -> Static:
    """Read and check moxtw.toml."""
    return validate_static(_read(path), path)


# --- Dynamic ------------------------------------------------------------------------------


def canonical_address(dynamic: Dynamic, localpart: str, domain: str) -> str:
    """The address as used for matching: localpart lower-cased unless the domain is case
    sensitive. An empty localpart is a catchall ("@domain")."""
    dom = dynamic.Domains.get(domain)
    if dom is None or not dom.LocalpartCaseSensitive:
        localpart = localpart.lower()
    return f"{localpart}@{domain}"


def check_dynamic(
    static: Static, dynamic: Dynamic, static_path: str = STATIC_FILE
) -> list[tuple[tuple[Any, ...], str]]:
    """Checks across domains.toml and against moxtw.toml; returns (key path, problem) pairs.
    Problems caused by a setting in moxtw.toml name static_path."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    add = lambda loc, msg: problems.append((loc, msg))  # noqa: E731
    accounts = dynamic.Accounts
    domains = dynamic.Domains

    def need_account(loc, name, what):
        if name not in accounts:
            add(loc, f"{what} account {name!r} does not exist")

    def check_routes(loc, routes: list[Route]):
        for i, route in enumerate(routes):
            if route.Transport not in static.Transports:
                add(
                    loc + (i, "Transport"),
                    f"unknown transport {route.Transport!r}, expected one of Transports in "
                    f"{static_path}: " + (", ".join(static.Transports) or "(none configured)"),
                )

    if static.Postmaster.Account not in accounts:
        add(
            ("Accounts",),
            f"postmaster account {static.Postmaster.Account!r} (Postmaster.Account in "
            f"{static_path}) does not exist",
        )
    if static.HostTLSRPT is not None and static.HostTLSRPT.Account not in accounts:
        add(
            ("Accounts",),
            f"host TLSRPT account {static.HostTLSRPT.Account!r} (HostTLSRPT.Account in "
            f"{static_path}) does not exist",
        )

    # Destinations: every address in one account only, at a configured domain.
    owner: dict[str, tuple[str, str]] = {}  # canonical address -> (account, key)
    for acc_name, acc in accounts.items():
        aloc = ("Accounts", acc_name)
        if acc.Domain not in domains:
            add(aloc + ("Domain",), f"unknown domain {acc.Domain!r}, not in Domains")
        for key in acc.Destinations:
            dloc = aloc + ("Destinations", key)
            localpart, _, domain = key.rpartition("@")
            dom = domains.get(domain)
            if dom is None:
                add(dloc, f"domain {domain!r} of destination is not in Domains")
                continue
            for sep in dom.catchall_separators():
                if sep in localpart:
                    add(dloc, f"localpart contains the domain's catchall separator {sep!r}")
            canon = canonical_address(dynamic, localpart, domain)
            if canon in owner:
                other_acc, other_key = owner[canon]
                add(
                    dloc,
                    f"address already configured as {other_key!r} in account {other_acc!r}; "
                    "an address belongs to one account only",
                )
            else:
                owner[canon] = (acc_name, key)
        check_routes(aloc + ("Routes",), acc.Routes)
        for i, addr in enumerate(acc.FromIDLoginAddresses):
            floc = aloc + ("FromIDLoginAddresses", i)
            localpart, domain = parse_address(addr)
            dom = domains.get(domain)
            if dom is None:
                add(floc, f"unknown domain {domain!r}")
                continue
            if not dom.catchall_separators():
                add(floc, f"domain {domain!r} has no LocalpartCatchallSeparator")
            canon = canonical_address(dynamic, localpart, domain)
            if owner.get(canon, (None,))[0] != acc_name and owner.get("@" + domain, (None,))[0] != acc_name:
                add(floc, "address is not a destination of this account")

    for dom_name, dom in domains.items():
        dloc = ("Domains", dom_name)
        for kind in ("DMARC", "TLSRPT"):
            rep = getattr(dom, kind)
            if rep is None:
                continue
            need_account(dloc + (kind, "Account"), rep.Account, kind)
            if rep.Domain is not None and rep.Domain not in domains:
                add(dloc + (kind, "Domain"), f"domain {rep.Domain!r} is not in Domains")
            if not rep.Localpart.isascii():
                add(dloc + (kind, "Localpart"), "must be ASCII only")
            rdomain = rep.Domain or dom_name
            canon = canonical_address(dynamic, rep.Localpart, rdomain)
            if canon in owner:
                add(
                    dloc + (kind, "Localpart"),
                    f"reporting address {canon} is also a destination of account "
                    f"{owner[canon][0]!r}",
                )
        if dom.MTASTS is not None and not any(
            lis.MTASTSHTTPS.Enabled for lis in static.Listeners.values()
        ):
            add(dloc + ("MTASTS",), "MTA-STS configured, but no listener has MTASTSHTTPS enabled")
        check_routes(dloc + ("Routes",), dom.Routes)
        for lp, alias in dom.Aliases.items():
            aloc = dloc + ("Aliases", lp)
            canon = canonical_address(dynamic, lp, dom_name)
            if canon in owner:
                add(aloc, f"alias address is also a destination of account {owner[canon][0]!r}")
            for i, member in enumerate(alias.Addresses):
                mlp, mdomain = parse_address(member)
                if canonical_address(dynamic, mlp, mdomain) not in owner:
                    add(
                        aloc + ("Addresses", i),
                        f"{member} is not a destination of any account",
                    )

    check_routes(("Routes",), dynamic.Routes)
    return problems


def validate_dynamic(text: str, path: str, static: Static) -> Dynamic:
    """Parse and check the text of domains.toml; path is used in errors (and moxtw.toml
    next to it for problems with settings there)."""
    dynamic = _validate(Dynamic, _parse(text, path), path, text)
    problems = check_dynamic(static, dynamic, os.path.join(os.path.dirname(path), STATIC_FILE))
    if problems:
        lines = key_lines(text)
        raise ConfigError(format_error(path, loc, msg, lines) for loc, msg in problems)
    return dynamic


def load_dynamic(path: str, static: Static) -> Dynamic:
    """Read domains.toml and check it, also against the static config."""
    return validate_dynamic(_read(path), path, static)


def load(config_dir: str) -> Config:
    """Read and check moxtw.toml and domains.toml from config_dir.

    DataDir is resolved relative to config_dir. Files named by the configuration are not
    required to exist; see `check_files`.
    """
    static_path = os.path.join(config_dir, STATIC_FILE)
    dynamic_path = os.path.join(config_dir, DYNAMIC_FILE)
    static = load_static(static_path)
    stamp = file_stamp(dynamic_path)
    dynamic = load_dynamic(dynamic_path, static)
    data_dir = os.path.normpath(os.path.join(config_dir, static.DataDir))
    return Config(
        static=static,
        dynamic=dynamic,
        config_dir=config_dir,
        static_path=static_path,
        dynamic_path=dynamic_path,
        data_dir=data_dir,
        dynamic_stamp=stamp,
    )


# --- Writing ------------------------------------------------------------------------------


def toml_document(comment: str, data: dict) -> str:
    """TOML text of ``data`` under a comment block (the files localserve and quickstart
    write)."""
    doc = tomlkit.document()
    for line in comment.splitlines():
        doc.add(tomlkit.comment(line) if line else tomlkit.nl())
    doc.add(tomlkit.nl())
    for key, value in data.items():
        doc[key] = value
    return tomlkit.dumps(doc)


def write_atomic(path: str, text: str) -> None:
    """Replace path with text: temporary file in the same directory, fsync, rename, fsync
    the directory. The file mode of an existing file is kept, a new one gets
    CONFIG_FILE_MODE."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = CONFIG_FILE_MODE
    durable.write_atomic(path, text.encode("utf-8"), mode)


def write_dynamic(
    path: str, static: Static, mutate: Callable[[tomlkit.TOMLDocument], Any]
) -> Dynamic:
    """Change domains.toml with mutate and write it back if the result is valid.

    mutate receives the tomlkit document and changes it in place (or returns a replacement
    document). The result is checked like `load_dynamic`; on errors `ConfigError` is raised
    and the file is untouched. Comments and layout of untouched parts survive. Returns the
    new Dynamic config; a `DynamicConfigWatcher` picks the change up on its next poll.
    """
    text = _read(path)
    doc = tomlkit.parse(text)
    result = mutate(doc)
    if result is not None:
        doc = result
    new_text = tomlkit.dumps(doc)
    dynamic = validate_dynamic(new_text, path, static)
    write_atomic(path, new_text)
    return dynamic


# --- Files and config test ----------------------------------------------------------------


def _named_files(config: Config) -> list[tuple[str, tuple[Any, ...], str]]:
    """(config file, key path, file name) of files the configuration references."""
    out = []
    st, dy = config.static, config.dynamic
    if st.TLS.CA is not None:
        for i, name in enumerate(st.TLS.CA.CertFiles):
            out.append((config.static_path, ("TLS", "CA", "CertFiles", i), name))
    for acme_name, acme in st.ACME.items():
        if acme.ExternalAccountBinding is not None:
            loc = ("ACME", acme_name, "ExternalAccountBinding", "KeyFile")
            out.append((config.static_path, loc, acme.ExternalAccountBinding.KeyFile))
    for lname, lis in st.Listeners.items():
        if lis.TLS is None:
            continue
        for i, kc in enumerate(lis.TLS.KeyCerts):
            loc = ("Listeners", lname, "TLS", "KeyCerts", i)
            out.append((config.static_path, loc + ("CertFile",), kc.CertFile))
            out.append((config.static_path, loc + ("KeyFile",), kc.KeyFile))
        for i, name in enumerate(lis.TLS.HostPrivateKeyFiles):
            loc = ("Listeners", lname, "TLS", "HostPrivateKeyFiles", i)
            out.append((config.static_path, loc, name))
    for dname, dom in dy.Domains.items():
        for sname, sel in dom.DKIM.Selectors.items():
            loc = ("Domains", dname, "DKIM", "Selectors", sname, "PrivateKeyFile")
            out.append((config.dynamic_path, loc, sel.PrivateKeyFile))
    return out


def check_files(config: Config) -> list[str]:
    """Problems with files named in the configuration (certificates, keys); empty if all
    exist. Relative names are relative to the config directory."""
    errors = []
    texts: dict[str, dict[tuple[Any, ...], int]] = {}
    for cfile, loc, name in _named_files(config):
        full = config.path(name)
        if not os.path.isfile(full):
            if cfile not in texts:
                try:
                    texts[cfile] = key_lines(_read(cfile))
                except ConfigError:
                    texts[cfile] = {}
            errors.append(format_error(cfile, loc, f"file {full!r} does not exist", texts[cfile]))
    return errors


def config_test(config_dir: str) -> list[str]:
    """All problems with the configuration in config_dir, including missing files; empty
    when it is valid."""
    try:
        config = load(config_dir)
    except ConfigError as exc:
        return exc.errors
    return check_files(config)
