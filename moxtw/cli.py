"""The ``moxtw`` command: subcommands for running and operating a moxtw server.

Commands that work on files (config, setaccountpassword, verifydata) work offline; the
SQLite index tolerates a running server using the same account at the same time.
"""

import argparse
import base64
import getpass
import os
import sys
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.scripts.twistd import run

import moxtw
from moxtw import config as mconfig
from moxtw import ctl, filemodes
from moxtw.admin import dnscheck, quickstart, records
from moxtw.config.notbuilt import not_built
from moxtw.ctl import CtlError, parse_time
from moxtw.dkim.cli import gened25519, genrsa
from moxtw.dns import normalize
from moxtw.dns.service import configured_resolver
from moxtw.queue.cli import list_command
from moxtw.queue.verify import verify_queue
from moxtw.sasl.credentials import PasswordError
from moxtw.store import Store
from moxtw.store.verify import verify_data

LOGGER = "moxtw.log.twistd_observer"


def _twistd(args):
    # In the foreground, without a twistd.pid in the working directory: a second
    # localserve (another --port-offset) from the same directory must be able to start.
    sys.argv = ["twistd", "-n", "--pidfile=", f"--logger={LOGGER}", "moxtw", *args]
    run()


def cmd_serve(a):
    _twistd(["serve", "--config", a.config])


def cmd_localserve(a):
    args = ["localserve", "--ip", a.ip, "--port-offset", str(a.port_offset)]
    if a.dir:
        args += ["--dir", a.dir]
    _twistd(args)


def cmd_config_test(a):
    errors = mconfig.config_test(a.config)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    cfg = mconfig.load(a.config)
    for fname, key, why in not_built(cfg.static, cfg.dynamic):
        print(f"warning: {fname}: {key} has no effect in this version: {why}", file=sys.stderr)
    print("config OK")
    return 0


def cmd_config_describe_static(a):
    sys.stdout.write(mconfig.describe_static())


def cmd_config_describe_dynamic(a):
    sys.stdout.write(mconfig.describe_dynamic())


def _read_password():
    if sys.stdin.isatty():
        pw1 = getpass.getpass("password: ")
        pw2 = getpass.getpass("repeat password: ")
        if pw1 != pw2:
            raise SystemExit("passwords do not match")
        return pw1
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def cmd_setaccountpassword(a):
    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return 1
    if a.account not in cfg.dynamic.Accounts:
        print(f"no account {a.account!r} in {cfg.dynamic_path}", file=sys.stderr)
        return 1
    password = _read_password()

    @defer.inlineCallbacks
    def run(reactor):
        st = Store(cfg.data_dir, reactor=reactor)
        try:
            acc = yield st.open_account(a.account)
            yield acc.set_password(password)
        except PasswordError as e:
            print(f"password refused: {e}", file=sys.stderr)
            raise SystemExit(1)
        finally:
            yield st.close()
        print(f"password for {a.account} set")

    task.react(run)


def cmd_verifydata(a):
    if not os.path.isdir(a.datadir):
        print(f"{a.datadir}: not a directory", file=sys.stderr)
        return 1

    failed = False
    reports = verify_data(a.datadir, fix=a.fix)
    if os.path.exists(os.path.join(a.datadir, "queue.db")):
        reports.append(verify_queue(a.datadir, fix=a.fix))
    for rep in reports:
        status = "ok" if rep.ok else "ERRORS"
        if hasattr(rep, "account"):
            print(f"account {rep.account}: {rep.messages} messages, {status}")
        else:
            print(f"queue: {rep.entries} entries, {status}")
        for e in rep.errors:
            print(f"  error: {e}")
        for n in rep.notes:
            print(f"  note: {n}")
        for f in rep.fixed:
            print(f"  fixed: {f}")
        failed = failed or not rep.ok
    return 1 if failed and not a.fix else 0


def cmd_queue_list(a):
    data_dir = _data_dir(a)
    if data_dir is None:
        return 1
    filters = {k: getattr(a, k) for k in ("account", "sender", "recipient") if getattr(a, k)}
    if a.hold is not None:
        filters["hold"] = a.hold == "yes"

    now = datetime.now(timezone.utc)
    try:
        for k in ("next_before", "next_after"):
            if getattr(a, k):
                filters[k] = parse_time(getattr(a, k), now)
    except CtlError as e:
        print(f"queue list: {e}", file=sys.stderr)
        return 1
    return list_command(data_dir, sys.stdout, **filters)


def _queue_filters(a):
    args = {}
    for k in ("account", "sender", "recipient", "next_before", "next_after"):
        v = getattr(a, k, None)
        if v:
            args[k] = v
    if getattr(a, "hold", None) is not None:
        args["hold"] = a.hold == "yes"
    if getattr(a, "ids", None):
        args["ids"] = [int(i) for i in a.ids]
    if getattr(a, "all", False):
        args["all"] = True
    return args


def cmd_queue_change(a):
    """hold, unhold, schedule, drop, fail: through the control socket of the running
    server, which answers once the change is durable."""
    data_dir = _data_dir(a)
    if data_dir is None:
        return 1
    args = _queue_filters(a)
    if a.queue_command == "schedule":
        args["when"] = a.when
    if a.queue_command == "fail" and a.reason:
        args["reason"] = a.reason
    try:
        result = ctl.request(data_dir, f"queue.{a.queue_command}", **args)
    except ctl.CtlError as e:
        print(f"queue {a.queue_command}: {e}", file=sys.stderr)
        return 1
    what = {"hold": "held", "unhold": "released", "schedule": "rescheduled", "drop": "dropped",
            "fail": "failed (DSN to sender where requested)"}[a.queue_command]
    print(f"{result['count']} entries {what}")
    return 0


def cmd_queue_dump(a):
    data_dir = _data_dir(a)
    if data_dir is None:
        return 1
    try:
        result = ctl.request(data_dir, "queue.dump", id=a.id)
    except ctl.CtlError as e:
        print(f"queue dump: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(base64.b64decode(result["message"]))
    sys.stdout.flush()
    return 0


def _data_dir(a):
    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return None
    return cfg.data_dir


def cmd_dkim_gened25519(a):
    return gened25519(sys.stdout)


def cmd_dkim_genrsa(a):
    return genrsa(sys.stdout, bits=a.bits)


def cmd_quickstart(a):
    opts = quickstart.Options(address=a.address, config_dir=a.config, hostname=a.hostname,
                              skipdial=a.skipdial, existing_webserver=a.existing_webserver,
                              ips=a.ip or [])

    def set_password(config_dir, account, password):
        cfg = mconfig.load(config_dir)
        _store_password(cfg.data_dir, account, password)

    try:
        quickstart.run(opts, out=sys.stdout, set_password=set_password)
    except quickstart.QuickstartError as e:
        print(f"quickstart: {e}", file=sys.stderr)
        return 1
    return 0


def _store_password(data_dir, account, password):
    @defer.inlineCallbacks
    def run(reactor):
        st = Store(data_dir, reactor=reactor)
        try:
            acc = yield st.open_account(account)
            yield acc.set_password(password)
        finally:
            yield st.close()

    _react(run)


def _react(fn):
    """Run ``fn(reactor)`` (returning a Deferred) to completion without exiting: react()
    would call sys.exit. The global reactor can run once per process, enough for one
    command."""
    from twisted.internet import reactor

    result = []

    def go():
        d = defer.maybeDeferred(fn, reactor)
        d.addBoth(result.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    if result and isinstance(result[0], Failure):
        result[0].raiseException()
    return result[0] if result else None


def cmd_setadminpassword(a):
    """Writes ``adminpasswd`` in the config directory. The admin web pages that will read
    it (through AdminPasswordFile) are not built yet, so the setting is not consulted."""
    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return 1
    password = _read_password()
    try:
        quickstart.write_admin_password(cfg.config_dir, password)
    except PasswordError as e:
        print(f"password refused: {e}", file=sys.stderr)
        return 1
    print(f"admin password written to {cfg.path(quickstart.ADMIN_PASSWORD_FILE)} "
          "(for the admin web pages, which are not built yet)")
    return 0


def cmd_config_dnsrecords(a):
    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return 1
    domain = _configured_domain(cfg, a.domain)
    if domain is None:
        print(f"no domain {a.domain!r} in {cfg.dynamic_path}", file=sys.stderr)
        return 1
    ips = a.ip or None
    sys.stdout.write(f"; host {cfg.static.Hostname}\n")
    sys.stdout.write(records.zone_text(records.host_records(cfg.static, cfg.path, ips=ips)))
    sys.stdout.write(f"\n; domain {domain}\n")
    recs, pending = records.domain_records(cfg.static, cfg.dynamic, cfg.path, domain, ips=ips)
    sys.stdout.write(records.zone_text(recs, pending))
    return 0


def cmd_config_dnscheck(a):
    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return 1
    domain = _configured_domain(cfg, a.domain)
    if domain is None:
        print(f"no domain {a.domain!r} in {cfg.dynamic_path}", file=sys.stderr)
        return 1
    try:
        resolver = configured_resolver(cfg.static, None)
    except ValueError as e:
        print(f"dnscheck: {e}", file=sys.stderr)
        return 1
    results = dnscheck.check_domain(cfg.static, cfg.dynamic, cfg.path, domain, resolver.lookup_sync,
                                    ips=a.ip or None)
    width = max(len(r.check) for r in results)
    for r in results:
        print(f"{r.status:7} {r.check:{width}}  {r.message}")
    return dnscheck.exit_status(results)


def _configured_domain(cfg, name):
    """The key of Domains for ``name`` (Unicode or A-labels, any case), or None."""
    try:
        want = normalize(name)
    except Exception:
        return None
    for key in cfg.dynamic.Domains:
        if normalize(str(key)) == want:
            return key
    return None


def cmd_version(a):
    print(moxtw.__version__)


def parser():
    p = argparse.ArgumentParser(prog="moxtw", description="moxtw mail server")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    s = sub.add_parser("serve", help="run the server (twistd -n moxtw serve)")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("localserve", help="run a local instance for testing email")
    s.add_argument("--dir", help="config and data directory (default ~/.local/share/moxtw-localserve)")
    s.add_argument("--ip", default="127.0.0.1",
                   help="IP address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)")
    s.add_argument("--port-offset", type=int, default=1000, metavar="N",
                   help="added to the standard port numbers (default 1000: SMTP 1025, submission"
                   " 1587, submissions 1465, IMAP 1143, IMAPS 1993, HTTP 1080, HTTPS 1443,"
                   " metrics 9010); pick another when a port is in use")
    s.set_defaults(fn=cmd_localserve)

    c = sub.add_parser("config", help="check and describe configuration")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="subcommand")
    t = csub.add_parser("test", help="validate moxtw.toml and domains.toml")
    t.add_argument("--config", default="config", help="config directory")
    t.set_defaults(fn=cmd_config_test)
    t = csub.add_parser("dnsrecords", help="print the DNS records a configured domain needs")
    t.add_argument("--config", default="config", help="config directory")
    t.add_argument("--ip", action="append", help="public IP of the host when the listener has none "
                   "(0.0.0.0/::); repeatable")
    t.add_argument("domain")
    t.set_defaults(fn=cmd_config_dnsrecords)
    t = csub.add_parser("dnscheck", help="look up a configured domain's DNS records and say what to change")
    t.add_argument("--config", default="config", help="config directory")
    t.add_argument("--ip", action="append", help="public IP of the host when the listener has none "
                   "(0.0.0.0/::); repeatable")
    t.add_argument("domain")
    t.set_defaults(fn=cmd_config_dnscheck)
    t = csub.add_parser("describe-static", help="print an annotated example moxtw.toml")
    t.set_defaults(fn=cmd_config_describe_static)
    t = csub.add_parser("describe-dynamic", help="print an annotated example domains.toml")
    t.set_defaults(fn=cmd_config_describe_dynamic)

    s = sub.add_parser("setaccountpassword", help="set an account's password (prompt or stdin)")
    s.add_argument("account")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_setaccountpassword)

    s = sub.add_parser("verifydata", help="check message files against the index")
    s.add_argument("datadir")
    s.add_argument("--fix", action="store_true", help="remove leftovers, recompute counts")
    s.set_defaults(fn=cmd_verifydata)

    q = sub.add_parser("queue", help="outgoing queue")
    qsub = q.add_subparsers(dest="queue_command", required=True, metavar="subcommand")
    t = qsub.add_parser("list", help="list queued messages (works while the server runs)")
    t.add_argument("--config", default="config", help="config directory")
    t.add_argument("--account")
    t.add_argument("--sender", help="address, or domain")
    t.add_argument("--recipient", help="address, or domain")
    t.add_argument("--hold", choices=("yes", "no"))
    t.add_argument("--next-before", dest="next_before", help="next attempt before (ISO time or +1h)")
    t.add_argument("--next-after", dest="next_after", help="next attempt after (ISO time or +1h)")
    t.set_defaults(fn=cmd_queue_list)
    for name, text in (
        ("hold", "stop delivery attempts of matching entries"),
        ("unhold", "resume delivery attempts of matching entries"),
        ("schedule", "set the next delivery attempt of matching entries"),
        ("drop", "remove matching entries without delivering or notifying"),
        ("fail", "give up matching entries now, with a DSN to the sender"),
    ):
        t = qsub.add_parser(name, help=text + " (needs the running server)")
        t.add_argument("--config", default="config", help="config directory")
        t.add_argument("ids", nargs="*", type=int, help="queue entry ids")
        t.add_argument("--account")
        t.add_argument("--sender", help="address, or domain")
        t.add_argument("--recipient", help="address, or domain")
        t.add_argument("--hold", choices=("yes", "no"))
        t.add_argument("--next-before", dest="next_before", help="next attempt before (ISO time or +1h)")
        t.add_argument("--next-after", dest="next_after", help="next attempt after (ISO time or +1h)")
        t.add_argument("--all", action="store_true", help="every entry (when no other filter is given)")
        if name == "schedule":
            t.add_argument("--when", required=True,
                           help="new next attempt: ISO time, or a duration from now (+30m, 0s, -1h)")
        if name == "fail":
            t.add_argument("--reason", help="text for the DSN")
        t.set_defaults(fn=cmd_queue_change)
    t = qsub.add_parser("dump", help="print the message of a queue entry (needs the running server)")
    t.add_argument("--config", default="config", help="config directory")
    t.add_argument("id", type=int)
    t.set_defaults(fn=cmd_queue_dump)

    d = sub.add_parser("dkim", help="DKIM keys")
    dsub = d.add_subparsers(dest="dkim_command", required=True, metavar="subcommand")
    t = dsub.add_parser(
        "gened25519", help="print a new ed25519 private key (PKCS#8 PEM); DNS record on stderr")
    t.set_defaults(fn=cmd_dkim_gened25519)
    t = dsub.add_parser(
        "genrsa", help="print a new RSA private key (PKCS#8 PEM); DNS record on stderr")
    t.add_argument("--bits", type=int, default=2048, help="key size (default 2048)")
    t.set_defaults(fn=cmd_dkim_genrsa)

    s = sub.add_parser("quickstart", help="write a first configuration for an email address and print "
                       "the DNS records to add")
    s.add_argument("address", help="your email address, e.g. you@example.com: its domain is configured "
                   "and its localpart names the account")
    s.add_argument("--config", default="config",
                   help="config directory to create (default ./config; data goes beside it, ../data)")
    s.add_argument("--hostname", help="host name of this machine (default: its FQDN, else mail.<domain>)")
    s.add_argument("--skipdial", action="store_true", help="skip the outgoing port 25 check")
    s.add_argument("--existing-webserver", dest="existing_webserver", action="store_true",
                   help="another webserver has ports 80/443 (no effect yet: no web listeners are configured)")
    s.add_argument("--ip", action="append", help="IP address to listen on (repeatable; default: the host "
                   "name's addresses on this machine, else all)")
    s.set_defaults(fn=cmd_quickstart)

    s = sub.add_parser("setadminpassword", help="set the admin password (prompt or stdin)")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_setadminpassword)

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(fn=cmd_version)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    # Commands that open the data directory (setaccountpassword, verifydata, queue ...)
    # may run before the first serve after an upgrade: files SQLite creates next to an
    # index (-wal, -shm) must be private from the start, as under serve.
    filemodes.set_umask()
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
