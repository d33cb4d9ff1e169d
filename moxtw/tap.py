"""twistd options for moxtw: the ``serve`` and ``localserve`` subcommands.

``twistd -n moxtw serve --config DIR`` runs the server from ``DIR/moxtw.toml`` and
``DIR/domains.toml``. ``twistd -n moxtw localserve [--dir D] [--ip IP] [--port-offset N]``
runs a local testing instance (see moxtw.localserve).
"""

import os

from twisted.python import usage

from moxtw import app
from moxtw import config as mconfig
from moxtw import filemodes, localserve
from moxtw.listeners import ListenerError


PORT_OFFSET_HELP = (
    "Added to the standard port numbers: with 1000, SMTP on 1025, submission 1587,"
    " submissions 1465, IMAP 1143, IMAPS 1993, HTTP 1080, HTTPS 1443, metrics 9010;"
    " pick another when a port is in use."
)


def invalid_config(errors):
    """The message for a configuration that cannot be served: one line per problem."""
    return "moxtw: invalid configuration:\n" + "\n".join(errors)


class ServeOptions(usage.Options):
    synopsis = "[--config DIR]"
    optParameters = [
        ["config", "c", "config", "Directory with moxtw.toml and domains.toml."],
    ]

    def postOptions(self):
        # A bad config is not a usage error: its lines (file, key, line, what is wrong)
        # and exit status 1, without twistd's usage text around them.
        try:
            self.loaded = mconfig.load(self["config"])
            problems = mconfig.check_files(self.loaded)
        except mconfig.ConfigError as e:
            problems = e.errors
        if problems:
            raise SystemExit(invalid_config(problems))


class LocalserveOptions(usage.Options):
    synopsis = "[--dir D] [--ip IP] [--port-offset N]"
    optParameters = [
        ["dir", "d", None, "Directory for config and data (default ~/.local/share/moxtw-localserve)."],
        ["ip", None, "127.0.0.1", "IP address to listen on (0.0.0.0 or :: for all)."],
        ["port-offset", None, 1000, PORT_OFFSET_HELP, int],
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

    def getSynopsis(self):
        # A subcommand's --help reads "twistd [options] moxtw localserve [--dir D] ...".
        if getattr(self, "subCommand", None) is not None and self.parent is not None:
            return f"{self.parent.getSynopsis()} {self.parent.subCommand}"
        return super().getSynopsis()

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
        raise SystemExit(invalid_config(e.errors))
    except ListenerError as e:
        raise SystemExit(f"moxtw: cannot serve the configured listeners: {e}")
