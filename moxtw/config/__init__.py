"""Configuration of moxtw: moxtw.toml (static) and domains.toml (dynamic).

The schema (`moxtw.config.schema`) follows mox's config, so attribute names are the TOML
keys: ``config.static.Listeners["public"].SMTP.Port``. This package loads and checks the
files (`load`, `load_static`, `load_dynamic`, `config_test`), writes domains.toml preserving
comments (`write_dynamic`), reloads it while running (`DynamicConfigWatcher`), generates the
annotated examples in conf/ (`describe_static`, `describe_dynamic`) and the configuration of
a local test instance (`write_localserve_config`).
"""

from moxtw.config import describe
from moxtw.config.errors import ConfigError
from moxtw.config.load import (
    DYNAMIC_FILE,
    STATIC_FILE,
    Config,
    check_files,
    config_test,
    load,
    load_dynamic,
    load_static,
    write_dynamic,
)
from moxtw.config.localserve import localserve_ports, write_localserve_config
from moxtw.config.schema import Dynamic, Static
from moxtw.config.watcher import DynamicConfigWatcher


def describe_static() -> str:
    """Annotated example moxtw.toml, generated from the schema."""
    return describe.describe_static()


def describe_dynamic() -> str:
    """Annotated example domains.toml, generated from the schema."""
    return describe.describe_dynamic()


__all__ = [
    "DYNAMIC_FILE",
    "STATIC_FILE",
    "Config",
    "ConfigError",
    "Dynamic",
    "DynamicConfigWatcher",
    "Static",
    "check_files",
    "config_test",
    "describe_dynamic",
    "describe_static",
    "load",
    "load_dynamic",
    "load_static",
    "localserve_ports",
    "write_dynamic",
    "write_localserve_config",
]
