"""twistd options for moxtw: the ``serve`` and ``localserve`` subcommands.

``twistd -n moxtw serve --config DIR`` runs the server from ``DIR/moxtw.toml`` and
``DIR/domains.toml``. ``twistd -n moxtw localserve [--dir D] [--ip IP] [--port-offset N]``
runs a local testing instance (see moxtw.localserve).
"""

import os
import sys

from twisted.python import usage

from moxtw import app
from moxtw import config as mconfig
from moxtw import filemodes, localserve
from moxtw.listeners import ListenerError


class ServeOptions(usage.Options):
    synopsis = "[--config DIR]"
    optParameters = [
        ["config", "c", "config", "Directory with moxtw.toml and domains.toml."],
    ]

    def postOptions(self):
        cdir = self["config"]
        try:
            self.loaded = mconfig.load(cdir)
        except mconfig.ConfigError as e:
            raise usage.UsageError("invalid configuration:\n" + "\n".join(e.errors))
        problems = mconfig.check_files(self.loaded)
        if problems:
            raise usage.UsageError("invalid configuration:\n" + "\n".join(problems))


class LocalserveOptions(usage.Options):
    synopsis = "[--dir D] [--ip IP] [--port-offset N]"
    optParameters = [
        ["dir", "d", None, "Directory for config and data (default ~/.local/share/moxtw-localserve)."],
        ["ip", None, "127.0.0.1", "IP address to listen on."],
        ["port-offset", None, 1000, "Added to the standard port numbers.", int],
    ]

    def postOptions(self):
        if self["dir"] is None:
            self["dir"] = default_localserve_dir()
        if not 0 <= self["port-offset"] <= 64000:
            raise usage.UsageError("--port-offset must be between 0 and 64000")


def default_localserve_dir():
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "moxtw-localserve")


class Options(usage.Options):
    synopsis = "serve|localserve [options]"
    subCommands = [
        ["serve", None, ServeOptions, "Run the mail server from a configuration directory."],
        ["localserve", None, LocalserveOptions, "Run a local instance for testing email."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("give a subcommand: serve or localserve")


def makeService(options):
    # Before anything is written: files that libraries create (SQLite's -wal and -shm)
    # are private like the data directory (issue 10).
    filemodes.set_umask()
    sub = options.subOptions
    try:
        if options.subCommand == "serve":
            return app.makeService(sub.loaded, switch_user=True)
        return localserve.makeService(sub["dir"], sub["ip"], sub["port-offset"])
    except mconfig.ConfigError as e:
        sys.stderr.write("invalid configuration:\n" + "\n".join(e.errors) + "\n")
        raise SystemExit(1)
    except ListenerError as e:
        sys.stderr.write(f"cannot serve the configured listeners: {e}\n")
        raise SystemExit(1)
