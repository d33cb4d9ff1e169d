"""The ``moxtw`` command: subcommands for running and operating a moxtw server.

Commands that work on files (config, setaccountpassword, verifydata) work offline; the
SQLite index tolerates a running server using the same account at the same time.
"""

import argparse
import base64
import getpass
import os
import shutil
import sys
import tomllib
from datetime import datetime, timezone

from twisted.internet import defer, task, threads
from twisted.python.failure import Failure
from twisted.scripts.twistd import run

import moxtw
from moxtw import config as mconfig
from moxtw import ctl, filemodes
from moxtw.admin import (
    backup, configedit, dnscheck, lookups, mailexport, mailimport, quickstart, records, sendmail,
)
from moxtw.config.notbuilt import not_built
from moxtw.config.schema import JunkFilterConfig
from moxtw.ctl import CtlError, parse_time
from moxtw.dkim.cli import gened25519, genrsa
from moxtw.dns import normalize
from moxtw.dns.service import configured_resolver
from moxtw.junk.bayes import Filter as JunkFilter
from moxtw.junk.bayes import Params as JunkParams
from moxtw.queue.cli import list_command
from moxtw.queue.verify import verify_queue
from moxtw.sasl.credentials import PasswordError
from moxtw.store import Store
from moxtw.store.model import normalize_mailbox_name
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
    cfg = _config(a)
    if cfg is None:
        return 1
    if not _has_account(cfg, a.account):
        return 1
    password = _read_password()

    @defer.inlineCallbacks
    def run(reactor):
        # The server may be running: its held files stay (owner=False).
        st = Store(cfg.data_dir, reactor=reactor, owner=False)
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
    cfg = _config(a)
    return None if cfg is None else cfg.data_dir


def _config(a):
    """The configuration of ``--config``, or None after printing why it does not load."""
    try:
        return mconfig.load(a.config)
    except mconfig.ConfigError as e:
        print("\n".join(e.errors), file=sys.stderr)
        return None


def _has_account(cfg, name):
    if name in cfg.dynamic.Accounts:
        return True
    print(f"no account {name!r} in {cfg.dynamic_path}", file=sys.stderr)
    return False


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
    """Writes ``adminpasswd`` in the config directory, the password of the admin web pages
    (AdminPasswordFile in moxtw.toml must name it)."""
    cfg = _config(a)
    if cfg is None:
        return 1
    password = _read_password()
    try:
        quickstart.write_admin_password(cfg.config_dir, password)
    except PasswordError as e:
        print(f"password refused: {e}", file=sys.stderr)
        return 1
    print(f"admin password written to {cfg.path(quickstart.ADMIN_PASSWORD_FILE)} (for the admin web pages"
          + ("" if cfg.static.AdminPasswordFile == quickstart.ADMIN_PASSWORD_FILE else
             f'; set AdminPasswordFile = "{quickstart.ADMIN_PASSWORD_FILE}" in moxtw.toml') + ")")
    return 0


def cmd_config_dnsrecords(a):
    cfg, domain = _config_domain(a)
    if domain is None:
        return 1
    ips = a.ip or None
    sys.stdout.write(f"; host {cfg.static.Hostname}\n")
    sys.stdout.write(records.zone_text(records.host_records(cfg.static, cfg.path, ips=ips, data_dir=cfg.data_dir)))
    sys.stdout.write(f"\n; domain {domain}\n")
    recs, pending = records.domain_records(cfg.static, cfg.dynamic, cfg.path, domain, ips=ips,
                                           data_dir=cfg.data_dir)
    sys.stdout.write(records.zone_text(recs, pending))
    return 0


def cmd_config_dnscheck(a):
    cfg, domain = _config_domain(a)
    if domain is None:
        return 1
    try:
        resolver = configured_resolver(cfg.static, None)
    except ValueError as e:
        print(f"dnscheck: {e}", file=sys.stderr)
        return 1
    results = dnscheck.check_domain(cfg.static, cfg.dynamic, cfg.path, domain, resolver.lookup_sync,
                                    ips=a.ip or None, data_dir=cfg.data_dir)
    width = max(len(r.check) for r in results)
    for r in results:
        print(f"{r.status:7} {r.check:{width}}  {r.message}")
    return dnscheck.exit_status(results)


def _edit(a, change):
    """Apply a domains.toml change, then have a running server reload it now."""
    try:
        msg = configedit.apply(a.config, change)
    except configedit.EditError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(msg)
    cfg = mconfig.load(a.config)
    try:
        result = ctl.request(cfg.data_dir, "config.reload", timeout=30)
    except ctl.NotRunning:
        print("(no server running: it uses the change when it starts)")
    except ctl.CtlError as e:
        print(f"(the running server was not asked to reload: {e}; it picks the change up within seconds)")
    else:
        print("the running server reloaded the configuration" if result.get("reloaded")
              else "the running server did not install a new configuration (it had it already, or see its log)")
    return 0


def cmd_account_add(a):
    return _edit(a, configedit.account_add(a.account, a.address))


def cmd_account_rm(a):
    cfg = None
    if a.delete_data:
        try:
            cfg = mconfig.load(a.config)
            ctl.request(cfg.data_dir, "ping", timeout=10)
        except ctl.NotRunning:
            pass
        except ctl.CtlError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        except mconfig.ConfigError as e:
            print("\n".join(e.errors), file=sys.stderr)
            return 1
        else:
            print("refused: --delete-data needs the server stopped (its sessions may use the account)",
                  file=sys.stderr)
            return 1
    rc = _edit(a, configedit.account_rm(a.account))
    if rc:
        return rc
    cfg = cfg or mconfig.load(a.config)
    path = os.path.join(cfg.data_dir, "accounts", a.account)
    if a.delete_data:
        if os.path.isdir(path):
            shutil.rmtree(path)
            print(f"deleted {path}")
    elif os.path.isdir(path):
        print(f"its messages are kept in {path}: adding the account again uses them; delete the "
              "directory (with the server stopped) to remove them")
    return 0


def cmd_address_add(a):
    return _edit(a, configedit.address_add(a.address, a.account))


def cmd_address_rm(a):
    return _edit(a, configedit.address_rm(a.address))


def cmd_domain_add(a):
    rc = _edit(a, configedit.domain_add(a.domain, a.account, a.localpart))
    if rc == 0:
        print(f"DNS records to publish: moxtw config dnsrecords --config {a.config} {a.domain}")
    return rc


def cmd_domain_rm(a):
    return _edit(a, configedit.domain_rm(a.domain))


def cmd_alias(a):
    op = a.alias_command
    if op in ("list", "print"):
        try:
            cfg = mconfig.load(a.config)
            if op == "list":
                for addr in configedit.alias_list(cfg, a.domain):
                    print(addr)
            else:
                info = configedit.alias_print(cfg, a.alias)
                print(f"{info['address']}: postpublic={info['postpublic']} allowmsgfrom={info['allowmsgfrom']}")
                for m in info["addresses"]:
                    print(f"  {m}")
        except mconfig.ConfigError as e:
            print("\n".join(e.errors), file=sys.stderr)
            return 1
        except configedit.EditError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        return 0
    if op == "add":
        change = configedit.alias_add(a.alias, a.addresses)
    elif op == "update":
        change = configedit.alias_update(a.alias, postpublic=a.postpublic, allowmsgfrom=a.allowmsgfrom)
    elif op == "rm":
        change = configedit.alias_rm(a.alias)
    elif op == "addaddr":
        change = configedit.alias_addaddr(a.alias, a.addresses)
    else:
        change = configedit.alias_rmaddr(a.alias, a.addresses)
    return _edit(a, change)


def cmd_loglevels(a):
    data_dir = _data_dir(a)
    if data_dir is None:
        return 1
    args = {}
    if a.level:
        args["level"] = a.level
        if a.pkg:
            args["pkg"] = a.pkg
    try:
        result = ctl.request(data_dir, "loglevels", **args)
    except ctl.CtlError as e:
        print(f"loglevels: {e}", file=sys.stderr)
        return 1
    print(f"default: {result['default']}")
    for pkg, level in sorted(result["packages"].items()):
        print(f"{pkg}: {level}")
    return 0


def cmd_stop(a):
    data_dir = _data_dir(a)
    if data_dir is None:
        return 1
    try:
        ctl.request(data_dir, "stop", timeout=30)
    except ctl.CtlError as e:
        print(f"stop: {e}", file=sys.stderr)
        return 1
    print("server stopping")
    return 0


def cmd_import(a):
    cfg = _config(a)
    if cfg is None:
        return 1
    if not _has_account(cfg, a.account):
        return 1
    path = os.path.abspath(a.path)
    data = os.path.realpath(cfg.data_dir)
    real = os.path.realpath(path)
    if real == data or real.startswith(data + os.sep) or data.startswith(real + os.sep):
        print(f"import: {path} is inside the data directory (or holds it): import from a copy elsewhere",
              file=sys.stderr)
        return 1
    try:
        mailimport.open_source(a.kind, path)  # checked here first: a clear error either way
    except mailimport.ImportError_ as e:
        print(f"import: {e}", file=sys.stderr)
        return 1
    tty = sys.stderr.isatty()

    def progress(r):
        line = mailimport.format_progress(r if isinstance(r, mailimport.Result) else mailimport.Result.from_dict(r))
        print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)

    args = {"kind": a.kind, "account": a.account, "mailbox": a.mailbox, "path": path, "top_level": a.top_level}
    try:
        result = ctl.request(cfg.data_dir, "ping", timeout=30)
    except ctl.NotRunning:
        result = None
    except ctl.CtlError as e:
        print(f"import: {e}", file=sys.stderr)
        return 1
    if result == "pong":
        try:
            result = ctl.request(cfg.data_dir, "import", timeout=600, on_progress=progress, **args)
        except ctl.CtlError as e:
            print(f"\nimport: {e}", file=sys.stderr)
            return 1
        r = mailimport.Result.from_dict(result)
        how = "by the running server"
    else:
        sources, r = mailimport.open_source(a.kind, path)

        @defer.inlineCallbacks
        def run(reactor):
            st = Store(cfg.data_dir, reactor=reactor)
            try:
                acc = yield st.open_account(a.account)
                acc.quota = _quota(cfg, a.account)
                yield mailimport.run(acc, sources, mailimport.source_id(path), a.mailbox, top_level=a.top_level,
                                     progress=progress, result=r)
            finally:
                yield st.close()

        try:
            _react(run)
        except Exception as e:
            print(f"\nimport stopped after {r.imported} messages: {e} (run it again to go on)", file=sys.stderr)
            return 1
        how = "with the server stopped"
    if tty:
        print(file=sys.stderr)
    print(f"imported {r.imported} messages {how}" + (f", {r.skipped} were imported before" if r.skipped else ""))
    for box, n in sorted(r.mailboxes.items()):
        print(f"  {box}: {n}")
    if r.duplicates:
        print(f"{r.duplicates} messages have a Message-ID seen before (imported anyway)")
    for what in r.too_large:
        print(f"not imported, larger than {mailimport.MAX_MESSAGE} bytes: {what}")
    for what in r.not_files:
        print(f"not imported, not a regular file (symbolic link, FIFO, ...): {what}")
    for what in r.skipped_folders:
        print(f"folder not imported: {what}")
    return 0


def _quota(cfg, account):
    from moxtw.store.service import quota_for

    return quota_for(cfg.static, cfg.dynamic, account)


def cmd_export(a):
    cfg = _config(a)
    if cfg is None:
        return 1
    if not _has_account(cfg, a.account):
        return 1
    dest = os.path.abspath(a.dest)
    mailbox = normalize_mailbox_name(a.mailbox) if a.mailbox else None

    @defer.inlineCallbacks
    def run(reactor):
        # Reads only: safe while the server runs (WAL snapshot, immutable files), and
        # opened as a guest (owner=False): the server's held files stay.
        st = Store(cfg.data_dir, reactor=reactor, owner=False)
        try:
            acc = yield st.open_account(a.account)
            boxes = yield acc.read(lambda conn: mailexport.snapshot_query(conn, mailbox))
            counts = yield threads.deferToThread(mailexport.export, lambda: boxes, acc.open_message, a.kind, dest,
                                                 mailbox)
        finally:
            yield st.close()
        return counts

    try:
        counts = _react(run)
    except mailexport.ExportError as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    except FileExistsError:
        print(f"export: {dest} exists", file=sys.stderr)
        return 1
    print(f"exported {counts['messages']} messages in {counts['mailboxes']} mailboxes to {dest}")
    if counts["vanished"]:
        print(f"{counts['vanished']} messages were expunged while exporting and are left out")
    return 0


def cmd_backup(a):
    cfg = _config(a)
    if cfg is None:
        return 1
    dest = os.path.abspath(a.dest)
    try:
        ctl.request(cfg.data_dir, "ping", timeout=30)
        running = True
    except ctl.NotRunning:
        running = False
    except ctl.CtlError as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    try:
        if running:
            counts = ctl.request(cfg.data_dir, "backup", timeout=24 * 3600, dest=dest)
        else:
            counts = backup.run_and_verify(os.path.abspath(a.config), cfg.data_dir, dest)
    except (ctl.CtlError, backup.BackupError, OSError) as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    how = "from the running server" if running else "with the server stopped"
    print(f"backup written to {dest} {how}: {counts['databases']} databases, {counts['linked']} files linked, "
          f"{counts['copied']} copied")
    failed = False
    for what, ok, errors in counts["verify"]:
        print(f"  {what}, {'ok' if ok else 'ERRORS'}")
        for e in errors:
            print(f"    error: {e}")
        failed = failed or not ok
    print(f"start it with: twistd -n --pidfile= moxtw serve --config {os.path.join(dest, 'config')}")
    return 1 if failed else 0


def _lookup_resolver(a):
    """The configured resolver (DNS.Servers) when --config loads, else the system's."""
    from moxtw.dns.resolver import Resolver

    try:
        cfg = mconfig.load(a.config)
    except mconfig.ConfigError:
        return Resolver()
    return configured_resolver(cfg.static, None)


def cmd_lookup(a):
    resolver = _lookup_resolver(a)
    try:
        if a.fn_name == "spf lookup":
            rc, lines = lookups.spf_lookup(resolver, a.domain)
        elif a.fn_name == "spf check":
            rc, lines = lookups.spf_check(resolver, a.ip, a.mailfrom, a.helo or "")
        elif a.fn_name == "dkim lookup":
            rc, lines = lookups.dkim_lookup(resolver, a.selector, a.domain)
        elif a.fn_name == "dkim verify":
            rc, lines = lookups.dkim_verify(resolver, _message_arg(a.message))
        elif a.fn_name == "dmarc lookup":
            rc, lines = lookups.dmarc_lookup(resolver, a.domain)
        elif a.fn_name == "dmarc verify":
            rc, lines = lookups.dmarc_verify(resolver, a.ip, a.mailfrom, a.helo, _message_arg(a.message))
        elif a.fn_name == "dnsbl check":
            rc, lines = lookups.dnsbl_check(resolver, a.zone, a.ip)
        else:
            rc, lines = lookups.tlsrpt_lookup(resolver, a.domain)
    except (ValueError, OSError) as e:
        print(f"{a.fn_name}: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return rc


def _message_arg(path):
    if path in (None, "-"):
        return sys.stdin.buffer.read(64 * 1024 * 1024)
    with open(path, "rb") as f:
        return f.read(64 * 1024 * 1024)


def _bool(text):
    v = text.lower()
    if v in ("true", "yes", "1", "on"):
        return True
    if v in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _config_domain(a):
    """(config, key of Domains for ``a.domain``); domain None after printing why."""
    cfg = _config(a)
    if cfg is None:
        return None, None
    domain = _configured_domain(cfg, a.domain)
    if domain is None:
        print(f"no domain {a.domain!r} in {cfg.dynamic_path}", file=sys.stderr)
    return cfg, domain


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


def cmd_junk_retrain(a):
    cfg = _config(a)
    if cfg is None or not _has_account(cfg, a.account):
        return 1
    conf = cfg.dynamic.Accounts[a.account]
    if conf.JunkFilter is None:
        print(f"account {a.account} has no JunkFilter in {cfg.dynamic_path}", file=sys.stderr)
        return 1
    try:
        result = ctl.request(cfg.data_dir, "junk.retrain", timeout=3600, account=a.account)
    except ctl.NotRunning:
        from moxtw.junk.train import retrain

        @defer.inlineCallbacks
        def run(reactor):
            st = Store(cfg.data_dir, reactor=reactor, owner=False)
            try:
                acc = yield st.open_account(a.account)
                n = yield retrain(acc, conf.JunkFilter)
            finally:
                yield st.close()
            print(f"retrained {a.account}: {n} messages")

        task.react(run)
        return 0
    except ctl.CtlError as e:
        print(f"retrain: {e}", file=sys.stderr)
        return 1
    print(f"retrained {a.account}: {result['trained']} messages (by the running server)")
    return 0


def cmd_junk(a):
    """junk train|check|test|print: a Bayesian junk filter word database, offline (mox's
    ``junk`` subcommands). Parameters: defaults, then the JunkFilter fields of --params,
    then the options; train and classify with the same n-gram settings."""
    names = {"threshold": "Threshold", "onegrams": "Onegrams", "twograms": "Twograms",
             "threegrams": "Threegrams", "max_power": "MaxPower", "top_words": "TopWords",
             "ignore_words": "IgnoreWords", "rare_words": "RareWords"}
    values = {name: getattr(JunkParams(), key) for key, name in names.items()}
    try:
        if a.params:
            with open(a.params, "rb") as f:
                doc = tomllib.load(f)
            doc = doc.get("JunkFilter", doc)
            values.update({name: doc[name] for name in names.values() if name in doc})
        values.update({name: getattr(a, key) for key, name in names.items() if getattr(a, key) is not None})
        params = JunkParams.from_config(JunkFilterConfig.model_validate(values))
    except (OSError, ValueError) as e:  # pydantic's ValidationError and TOML errors are ValueErrors
        print(f"junk: parameters: {e}", file=sys.stderr)
        return 2

    def messages(directory):
        # A maildir (cur/, new/; tmp/ skipped) or a directory of files, one message each.
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "tmp" and not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield params.message_words(_message_arg(os.path.join(root, name)))

    def wrong(words, junk, counts):
        # 1 when the filter gets a message of this class wrong.
        counts[junk] += 1
        return 0 if f.classify(words).junk == junk else 1

    cmd = a.junk_command
    if cmd != "train" and not os.path.exists(a.db):
        print(f"junk: no database {a.db}", file=sys.stderr)
        return 1
    try:
        f = JunkFilter(a.db, params).open()
    except Exception as e:
        print(f"junk: opening {a.db}: {e}", file=sys.stderr)
        return 1
    try:
        if cmd == "train":
            for d in (a.hamdir, a.spamdir):
                if not os.path.isdir(d):
                    print(f"junk: not a directory: {d}", file=sys.stderr)
                    return 1
            before = f.totals()
            # One transaction; word counts are summed in memory, message words not kept.
            f.train_many((w, junk) for d, junk in ((a.hamdir, False), (a.spamdir, True)) for w in messages(d))
            hams, spams = f.totals()
            print(f"trained {hams - before[0]} ham and {spams - before[1]} spam messages; "
                  f"database has {hams} ham, {spams} spam messages, {f.count_words()} words")
        elif cmd == "check":
            c = f.classify(params.message_words(_message_arg(a.message)))
            print(f"probability {c.probability:.6f}")
            print(f"junk {'yes' if c.junk else 'no'} (threshold {params.threshold})")
            print(f"significant {'yes' if c.significant else 'no'} "
                  f"(trained {c.ham_messages} ham, {c.spam_messages} spam messages)")
            for word, p in c.top:
                print(f"  {p:.4f} {word}")
        elif cmd == "test":
            counts = {False: 0, True: 0}
            fp = sum(wrong(w, False, counts) for w in messages(a.hamdir))
            fn = sum(wrong(w, True, counts) for w in messages(a.spamdir))
            print(f"ham: {counts[False]} messages, {fp} judged junk "
                  f"(false positives {100 * fp / max(counts[False], 1):.2f}%)")
            print(f"spam: {counts[True]} messages, {fn} not judged junk "
                  f"(false negatives {100 * fn / max(counts[True], 1):.2f}%)")
        else:
            hams, spams = f.totals()
            print(f"{hams} ham, {spams} spam messages, {f.count_words()} words")
            spammy, hammy = f.top_words(a.top)
            for title, rows in (("most spammy", spammy), ("most hammy", hammy)):
                print(f"{title} (probability, ham, spam, word):")
                for word, p, ham, spam in rows:
                    print(f"  {p:.4f} {ham} {spam} {word}")
    finally:
        f.close()
    return 0


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
    def conf(p):
        p.add_argument("--config", default="config", help="config directory")
        return p

    g = csub.add_parser("account", help="add or remove accounts")
    gs = g.add_subparsers(dest="account_command", required=True, metavar="subcommand")
    t = conf(gs.add_parser("add", help="add an account with its first address"))
    t.add_argument("account")
    t.add_argument("address")
    t.set_defaults(fn=cmd_account_add)
    t = conf(gs.add_parser("rm", help="remove an account from the config (its messages are kept)"))
    t.add_argument("account")
    t.add_argument("--delete-data", dest="delete_data", action="store_true",
                   help="also delete its messages (only with the server stopped)")
    t.set_defaults(fn=cmd_account_rm)

    g = csub.add_parser("address", help="add or remove an account's addresses")
    gs = g.add_subparsers(dest="address_command", required=True, metavar="subcommand")
    t = conf(gs.add_parser("add", help="add an address (or @domain, a catchall) to an account"))
    t.add_argument("address")
    t.add_argument("account")
    t.set_defaults(fn=cmd_address_add)
    t = conf(gs.add_parser("rm", help="remove an address from its account"))
    t.add_argument("address")
    t.set_defaults(fn=cmd_address_rm)

    g = csub.add_parser("domain", help="add or remove domains")
    gs = g.add_subparsers(dest="domain_command", required=True, metavar="subcommand")
    t = conf(gs.add_parser("add", help="add a domain with new DKIM keys; reports go to the account"))
    t.add_argument("domain")
    t.add_argument("account")
    t.add_argument("localpart", nargs="?", help="also add localpart@domain to the account")
    t.set_defaults(fn=cmd_domain_add)
    t = conf(gs.add_parser("rm", help="remove a domain no account uses"))
    t.add_argument("domain")
    t.set_defaults(fn=cmd_domain_rm)

    g = csub.add_parser("alias", help="aliases (lists) delivering to several addresses")
    gs = g.add_subparsers(dest="alias_command", required=True, metavar="subcommand")
    t = conf(gs.add_parser("list", help="aliases of a domain"))
    t.add_argument("domain")
    t = conf(gs.add_parser("print", help="an alias and its members"))
    t.add_argument("alias")
    t = conf(gs.add_parser("add", help="add an alias with members"))
    t.add_argument("alias")
    t.add_argument("addresses", nargs="+")
    t = conf(gs.add_parser("update", help="change an alias's settings"))
    t.add_argument("alias")
    t.add_argument("--postpublic", type=_bool, help="anyone may send to it (true/false)")
    t.add_argument("--allowmsgfrom", type=_bool, help="members may send as the alias (true/false)")
    t = conf(gs.add_parser("rm", help="remove an alias"))
    t.add_argument("alias")
    t = conf(gs.add_parser("addaddr", help="add members"))
    t.add_argument("alias")
    t.add_argument("addresses", nargs="+")
    t = conf(gs.add_parser("rmaddr", help="remove members"))
    t.add_argument("alias")
    t.add_argument("addresses", nargs="+")
    g.set_defaults(fn=cmd_alias)

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

    s = sub.add_parser("import", help="import a maildir tree or mbox file into an account's mailbox")
    s.add_argument("kind", choices=("maildir", "mbox"))
    s.add_argument("account")
    s.add_argument("mailbox", help="mailbox for the top of the source (created if missing); folders go below it")
    s.add_argument("path")
    s.add_argument("--config", default="config", help="config directory")
    s.add_argument("--top-level", dest="top_level", action="store_true",
                   help="folders become top-level mailboxes (for a whole maildir imported into Inbox)")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("export", help="export an account's mailboxes as maildir or mbox (also while running)")
    s.add_argument("kind", choices=("maildir", "mbox"))
    s.add_argument("account")
    s.add_argument("mailbox", nargs="?", help="only this mailbox (default: all)")
    s.add_argument("dest", help="new directory, or a file ending in .zip or .tgz")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("backup", help="consistent copy of config and data (also while running), then verified")
    s.add_argument("dest", help="new directory for the backup (config/ and data/ inside)")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_backup)

    s = sub.add_parser("loglevels", help="print or set the running server's log levels (until restart)")
    s.add_argument("--config", default="config", help="config directory")
    s.add_argument("level", nargs="?", help="new level: error, info, debug, trace, traceauth, tracedata")
    s.add_argument("pkg", nargs="?", help="package (smtpserver, imapserver, queue, ...); default: all")
    s.set_defaults(fn=cmd_loglevels)

    s = sub.add_parser("stop", help="stop the running server")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_stop)

    s = sub.add_parser("setadminpassword", help="set the admin password (prompt or stdin)")
    s.add_argument("--config", default="config", help="config directory")
    s.set_defaults(fn=cmd_setadminpassword)

    sub.add_parser("sendmail", help="sendmail-compatible submission to the local server (--help for its options)",
                   add_help=False)

    def lookup(group, name, help_, *args):
        t = group.add_parser(name, help=help_)
        what = {id(g_): n for n, g_ in groups.items()}[id(group)]
        for arg in args:
            t.add_argument(arg) if not arg.startswith("[") else t.add_argument(arg.strip("[]"), nargs="?")
        t.add_argument("--config", default="config", help="config directory (for DNS.Servers; default resolver "
                       "without it)")
        t.set_defaults(fn=cmd_lookup, fn_name=f"{what} {name}")

    groups = {"dkim": dsub}

    g = groups["spf"] = sub.add_parser("spf", help="SPF lookups").add_subparsers(dest="spf_command", required=True,
                                                                 metavar="subcommand")
    lookup(g, "lookup", "print a domain's SPF record", "domain")
    lookup(g, "check", "evaluate SPF for an IP, MAIL FROM address and EHLO name", "ip", "mailfrom", "[helo]")
    g = groups["dmarc"] = sub.add_parser("dmarc", help="DMARC lookups").add_subparsers(dest="dmarc_command", required=True,
                                                                     metavar="subcommand")
    lookup(g, "lookup", "print the DMARC policy that applies to a domain", "domain")
    lookup(g, "verify", "SPF, DKIM and DMARC of a message (file or - for stdin) as if from IP",
           "ip", "mailfrom", "helo", "[message]")
    g = groups["dnsbl"] = sub.add_parser("dnsbl", help="DNS block lists").add_subparsers(dest="dnsbl_command", required=True,
                                                                       metavar="subcommand")
    lookup(g, "check", "whether an IP is listed in a DNSBL zone", "zone", "ip")
    g = groups["tlsrpt"] = sub.add_parser("tlsrpt", help="TLS reporting").add_subparsers(dest="tlsrpt_command", required=True,
                                                                      metavar="subcommand")
    lookup(g, "lookup", "print a domain's TLSRPT record", "domain")
    lookup(dsub, "lookup", "print a DKIM key record", "selector", "domain")
    lookup(dsub, "verify", "verify the DKIM signatures of a message (file or - for stdin)", "[message]")

    j = sub.add_parser("junk", help="Bayesian junk filter word databases (offline)")
    jsub = j.add_subparsers(dest="junk_command", required=True, metavar="subcommand")
    for name, help_, args in (
            ("train", "train a database with ham and spam messages (maildirs or directories of files)",
             ("hamdir", "spamdir")),
            ("check", "print the junk probability of a message (file or - for stdin)", ("message",)),
            ("test", "classify ham and spam messages and print false positive/negative rates",
             ("hamdir", "spamdir")),
            ("print", "print the most spammy and hammy words", ())):
        t = jsub.add_parser(name, help=help_)
        t.add_argument("db", help="word database, e.g. data/accounts/NAME/junkfilter.db")
        for arg in args:
            t.add_argument(arg)
        t.add_argument("--params", help="TOML file with JunkFilter fields (Threshold, Twograms, ...)")
        t.add_argument("--threshold", type=float, help="junk from this probability (default 0.95)")
        for gram, default in (("onegrams", "true"), ("twograms", "true"), ("threegrams", "false")):
            t.add_argument("--" + gram, type=_bool, metavar="BOOL", help=f"use {gram} (default {default})")
        t.add_argument("--max-power", dest="max_power", type=float, help="word probabilities kept within "
                       "[p, 1-p] (default 0.01)")
        t.add_argument("--top-words", dest="top_words", type=int, help="most spammy and most hammy words "
                       "combined (default 10)")
        t.add_argument("--ignore-words", dest="ignore_words", type=float, help="ignore words this close to "
                       "0.5 (default 0.1)")
        t.add_argument("--rare-words", dest="rare_words", type=int, help="words seen this often or less "
                       "weigh less (default 2)")
        if name == "print":
            t.add_argument("--top", type=int, default=20, help="words per list (default 20)")
        t.set_defaults(fn=cmd_junk)

    t = jsub.add_parser("retrain", help="empty an account's junk filter and train it again from the "
                        "account's $Junk/$NotJunk messages (through the running server, or offline)")
    t.add_argument("account")
    t.add_argument("--config", default="config", help="config directory")
    t.set_defaults(fn=cmd_junk_retrain)

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(fn=cmd_version)
    return p


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
        if os.path.basename(sys.argv[0]) == "sendmail":
            # Installed as /usr/sbin/sendmail (a symbolic link to moxtw).
            argv = ["sendmail", *argv]
    if argv and argv[0] == "sendmail":
        # sendmail's own options (-t, -f, -oi ...) do not fit argparse.
        if argv[1:] in (["--help"], ["-h"]):
            print(sendmail.__doc__)
            return 0
        return sendmail.main(argv[1:])
    args = parser().parse_args(argv)
    # Commands that open the data directory (setaccountpassword, verifydata, queue ...)
    # may run before the first serve after an upgrade: files SQLite creates next to an
    # index (-wal, -shm) must be private from the start, as under serve.
    filemodes.set_umask()
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
