"""Tests for moxtw.config: schema, loading, error messages, writing, reloading, describe,
localserve."""

import os
from datetime import timedelta

import tomlkit
from twisted.internet import task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import moxtw
from moxtw import config
from moxtw.config import describe, schema
from moxtw.config.errors import format_path, key_lines
from moxtw.config.types import format_duration, parse_domain, parse_duration

STATIC = """\
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"

[Listeners.public]
IPs = ["127.0.0.1"]

[Listeners.public.SMTP]
Enabled = true
Port = 2525

[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"

[Transports.smarthost.Submissions]
Host = "smtp.example.net"
"""

DYNAMIC = """\
# Our domains.
[Domains."example.org"]
LocalpartCatchallSeparator = "+"

[Accounts.mjl]
Domain = "example.org"

# Primary address.
[Accounts.mjl.Destinations."mjl@example.org"]
Mailbox = "Inbox"

[[Accounts.mjl.Destinations."mjl@example.org".Rulesets]]
VerifiedDomain = "list.example.net"
Mailbox = "Lists"

[Accounts.other]
Domain = "example.org"
Destinations = { "other@example.org" = {} }
"""


class ConfigTestMixin:
    def make_dir(self, static=STATIC, dynamic=DYNAMIC):
        d = self.mktemp()
        os.makedirs(d)
        self.write(d, "moxtw.toml", static)
        self.write(d, "domains.toml", dynamic)
        return d

    def write(self, d, name, text):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)

    def load_errors(self, static=STATIC, dynamic=DYNAMIC):
        d = self.make_dir(static, dynamic)
        exc = self.assertRaises(config.ConfigError, config.load, d)
        self.assertTrue(exc.errors)
        return d, exc.errors


class LoadTests(ConfigTestMixin, SynchronousTestCase):
    def test_valid(self):
        d = self.make_dir()
        c = config.load(d)
        self.assertEqual(c.static.Listeners["public"].SMTP.Port, 2525)
        self.assertEqual(c.static.Listeners["public"].Submission.Port, 587)
        self.assertEqual(c.static.Listeners["public"].AdminHTTP.Path, "/admin/")
        self.assertEqual(c.static.Listeners["public"].AdminHTTPS.Port, 443)
        self.assertEqual(
            c.static.Listeners["public"].SMTP.FirstTimeSenderDelay, timedelta(seconds=15)
        )
        self.assertEqual(c.data_dir, os.path.join(d, "data"))
        self.assertEqual(c.static_path, os.path.join(d, "moxtw.toml"))
        self.assertEqual(c.dynamic_path, os.path.join(d, "domains.toml"))
        acc = c.dynamic.Accounts["mjl"]
        self.assertEqual(acc.MaxOutgoingMessagesPerDay, 1000)
        self.assertEqual(acc.MaxFirstTimeRecipientsPerDay, 200)
        dest = acc.Destinations["mjl@example.org"]
        self.assertEqual(dest.Rulesets[0].Mailbox, "Lists")
        self.assertEqual(c.dynamic.Accounts["other"].Destinations["other@example.org"].Mailbox, "Inbox")
        self.assertEqual(config.config_test(d), [])

    def test_idna_normalised(self):
        dynamic = DYNAMIC.replace('"example.org"]', '"EXAMPLE.org"]').replace(
            "[Accounts.other]", '[Domains."xn--bcher-kva.example"]\n\n[Accounts.other]'
        )
        c = config.load(self.make_dir(dynamic=dynamic))
        self.assertEqual(sorted(c.dynamic.Domains), ["bücher.example", "example.org"])
        self.assertEqual(parse_domain("Bücher.Example"), "bücher.example")
        self.assertEqual(parse_domain("xn--bcher-kva.example"), "bücher.example")

    def test_unknown_key(self):
        dynamic = DYNAMIC.replace('Mailbox = "Inbox"', 'Mailboxx = "Inbox"')
        d, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(
            errors,
            [
                os.path.join(d, "domains.toml")
                + ': Accounts.mjl.Destinations."mjl@example.org".Mailboxx: unknown key (line 10);'
                " did you mean Mailbox?"
            ],
        )

    def test_unknown_key_no_close_match(self):
        """Without a likely intended key, the valid keys of the table are listed."""
        dynamic = DYNAMIC.replace('Mailbox = "Inbox"', 'Box = "Inbox"')
        d, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(
            errors,
            [
                os.path.join(d, "domains.toml")
                + ': Accounts.mjl.Destinations."mjl@example.org".Box: unknown key (line 10);'
                " expected one of: Mailbox, Rulesets, SMTPError, MessageAuthRequiredSMTPError,"
                " FullName"
            ],
        )

    def test_unknown_key_static(self):
        d, errors = self.load_errors(static=STATIC + "\n[Listeners.public.SMPT]\nEnabled = true\n")
        self.assertEqual(
            errors,
            [
                os.path.join(d, "moxtw.toml")
                + ": Listeners.public.SMPT: unknown key (line 19); did you mean SMTP?"
            ],
        )

    def test_typo_of_required_key_is_one_error(self):
        """A misspelt required key is an unknown key with a suggestion, not also a missing
        key; case does not matter for the suggestion."""
        static = STATIC.replace("LogLevel =", "Loglevel =").replace("Hostname =", "hostnme =")
        d, errors = self.load_errors(static=static)
        path = os.path.join(d, "moxtw.toml")
        self.assertEqual(
            sorted(errors),
            [
                path + ": Loglevel: unknown key (line 2); did you mean LogLevel?",
                path + ": hostnme: unknown key (line 3); did you mean Hostname?",
            ],
        )
        dynamic = DYNAMIC.replace('[Accounts.other]\nDomain =', '[Accounts.other]\nDomian =')
        d, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(
            errors,
            [os.path.join(d, "domains.toml")
             + ": Accounts.other.Domian: unknown key (line 17); did you mean Domain?"],
        )

    def test_missing_required_still_reported(self):
        """A required key that is missing, next to an unknown key that is not a typo of
        it, is reported as missing."""
        static = STATIC.replace('Hostname = "mail.example.org"\n', 'Colour = "blue"\n')
        _, errors = self.load_errors(static=static)
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("Hostname: missing required key", errors[0])
        self.assertIn("Colour: unknown key (line 3); expected one of: DataDir, LogLevel", errors[1])

    def test_test_delivery_port_refused_outside_tests(self):
        static = STATIC.replace('Hostname = "mail.example.org"\n',
                                'Hostname = "mail.example.org"\nTestDirectDeliveryPort = 2526\n')
        old = os.environ.pop("MOXTW_TESTING", None)
        try:
            _, errors = self.load_errors(static=static)
            self.assertIn("TestDirectDeliveryPort: test-only setting", errors[0])
            os.environ["MOXTW_TESTING"] = "1"
            cfg = config.load(self.make_dir(static=static))
            self.assertEqual(cfg.static.TestDirectDeliveryPort, 2526)
        finally:
            os.environ.pop("MOXTW_TESTING", None)
            if old is not None:
                os.environ["MOXTW_TESTING"] = old

    def test_wrong_type(self):
        _, errors = self.load_errors(static=STATIC.replace("Port = 2525", 'Port = "2525"'))
        self.assertEqual(len(errors), 1)
        self.assertIn("Listeners.public.SMTP.Port: Input should be a valid integer", errors[0])
        self.assertIn('got string "2525" (line 10)', errors[0])
        self.assertIn("expected port number", errors[0])

    def test_bool_is_not_int(self):
        _, errors = self.load_errors(static=STATIC.replace("Port = 2525", "Port = true"))
        self.assertIn("Listeners.public.SMTP.Port", errors[0])

    def test_bad_port(self):
        _, errors = self.load_errors(static=STATIC.replace("Port = 2525", "Port = 70000"))
        self.assertEqual(len(errors), 1)
        self.assertIn("Listeners.public.SMTP.Port: Input should be less than or equal to 65535", errors[0])
        self.assertIn("(line 10)", errors[0])

    def test_bad_ip(self):
        _, errors = self.load_errors(static=STATIC.replace('"127.0.0.1"', '"127.0.0"'))
        self.assertIn("Listeners.public.IPs[0]: invalid IP address '127.0.0' (line 6)", errors[0])

    def test_missing_required(self):
        _, errors = self.load_errors(static=STATIC.replace('Hostname = "mail.example.org"\n', ""))
        self.assertEqual(len(errors), 1)
        self.assertIn("moxtw.toml: Hostname: missing required key; expected host name", errors[0])

    def test_bad_hostname(self):
        _, errors = self.load_errors(static=STATIC.replace("mail.example.org", "mail..example"))
        self.assertIn("Hostname: invalid domain name 'mail..example'", errors[0])

    def test_bad_regexp(self):
        dynamic = DYNAMIC.replace(
            'VerifiedDomain = "list.example.net"', 'SMTPMailFromRegexp = "(unclosed"'
        )
        _, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(len(errors), 1)
        self.assertIn(
            'Accounts.mjl.Destinations."mjl@example.org".Rulesets[0].SMTPMailFromRegexp: '
            "invalid regular expression '(unclosed'",
            errors[0],
        )
        self.assertIn("(line 13)", errors[0])

    def test_bad_duration(self):
        static = STATIC.replace("Port = 2525", 'Port = 2525\nFirstTimeSenderDelay = "15 minutes"')
        _, errors = self.load_errors(static=static)
        self.assertIn("FirstTimeSenderDelay: invalid duration '15 minutes'", errors[0])
        static = STATIC.replace("Port = 2525", "Port = 2525\nFirstTimeSenderDelay = 15")
        _, errors = self.load_errors(static=static)
        self.assertIn("FirstTimeSenderDelay: expected a duration string", errors[0])

    def test_durations(self):
        self.assertEqual(parse_duration("1h30m"), timedelta(minutes=90))
        self.assertEqual(parse_duration("1.5h"), timedelta(minutes=90))
        self.assertEqual(parse_duration("250ms"), timedelta(milliseconds=250))
        self.assertEqual(parse_duration("0"), timedelta(0))
        for bad in ("", "15", "h", "1d", "-5m", "5 m"):
            self.assertRaises(ValueError, parse_duration, bad)
        self.assertEqual(format_duration(timedelta(hours=72)), "72h")
        self.assertEqual(format_duration(timedelta(minutes=90, seconds=1.5)), "1h30m1.5s")

    def test_syntax_error(self):
        d, errors = self.load_errors(dynamic=DYNAMIC.replace('Domain = "example.org"\n', "Domain = \n", 1))
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith(os.path.join(d, "domains.toml") + ": TOML syntax error"))
        self.assertIn("line 6", errors[0])

    def test_unknown_account_reference(self):
        dynamic = DYNAMIC.replace(
            'LocalpartCatchallSeparator = "+"\n',
            'LocalpartCatchallSeparator = "+"\n\n[Domains."example.org".DMARC]\n'
            'Localpart = "dmarc"\nAccount = "nobody"\nMailbox = "DMARC"\n',
        )
        _, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(len(errors), 1)
        self.assertIn(
            'domains.toml: Domains."example.org".DMARC.Account: DMARC account \'nobody\' does '
            "not exist (line 7)",
            errors[0],
        )

    def test_postmaster_account(self):
        d, errors = self.load_errors(static=STATIC.replace('Account = "mjl"', 'Account = "pm"'))
        self.assertIn("postmaster account 'pm'", errors[0])
        # Reported in domains.toml (no such account), naming the moxtw.toml it comes from.
        self.assertTrue(errors[0].startswith(os.path.join(d, "domains.toml") + ": Accounts: "))
        self.assertIn(f"(Postmaster.Account in {os.path.join(d, 'moxtw.toml')})", errors[0])

    def test_account_domain(self):
        _, errors = self.load_errors(
            dynamic=DYNAMIC.replace('[Accounts.other]\nDomain = "example.org"', '[Accounts.other]\nDomain = "example.net"')
        )
        self.assertIn("Accounts.other.Domain: unknown domain 'example.net'", errors[0])

    def test_duplicate_address(self):
        dynamic = DYNAMIC.replace('"other@example.org" = {}', '"MJL@example.org" = {}')
        _, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(len(errors), 1)
        self.assertIn('Accounts.other.Destinations."MJL@example.org": address already configured', errors[0])
        self.assertIn("account 'mjl'", errors[0])
        self.assertIn("(line 18)", errors[0])

    def test_duplicate_catchall_address_ok_case_sensitive(self):
        dynamic = DYNAMIC.replace(
            'LocalpartCatchallSeparator = "+"', "LocalpartCaseSensitive = true"
        ).replace('"other@example.org" = {}', '"MJL@example.org" = {}, "@example.org" = {}')
        c = config.load(self.make_dir(dynamic=dynamic))
        self.assertIn("@example.org", c.dynamic.Accounts["other"].Destinations)

    def test_destination_unknown_domain(self):
        _, errors = self.load_errors(dynamic=DYNAMIC.replace("other@example.org", "other@example.net"))
        self.assertIn("domain 'example.net' of destination is not in Domains", errors[0])

    def test_destination_separator(self):
        _, errors = self.load_errors(dynamic=DYNAMIC.replace("other@example.org", "oth+er@example.org"))
        self.assertIn("catchall separator '+'", errors[0])

    def test_alias_members(self):
        alias = '\n[Domains."example.org".Aliases.team]\nAddresses = ["mjl@example.org", "x@example.org"]\n'
        dynamic = DYNAMIC.replace("\n[Accounts.mjl]", alias + "\n[Accounts.mjl]")
        _, errors = self.load_errors(dynamic=dynamic)
        self.assertEqual(len(errors), 1)
        self.assertIn(
            'Domains."example.org".Aliases.team.Addresses[1]: x@example.org is not a '
            "destination of any account (line 6)",
            errors[0],
        )

    def test_route_transport(self):
        ok = DYNAMIC + '\n[[Routes]]\nToDomain = [".example.com"]\nTransport = "smarthost"\n'
        c = config.load(self.make_dir(dynamic=ok))
        self.assertEqual(c.dynamic.Routes[0].ToDomain, [".example.com"])
        _, errors = self.load_errors(dynamic=ok.replace('Transport = "smarthost"', 'Transport = "nope"'))
        self.assertIn("Routes[0].Transport: unknown transport 'nope'", errors[0])
        self.assertIn("smarthost", errors[0])

    def test_tls_required(self):
        static = STATIC + "\n[Listeners.public.IMAPS]\nEnabled = true\n"
        _, errors = self.load_errors(static=static)
        self.assertIn("Listeners.public: no TLS configured, but required for IMAPS", errors[0])

    def test_acme_reference(self):
        static = STATIC.replace(
            "[Listeners.public.SMTP]", '[Listeners.public.TLS]\nACME = "le"\n\n[Listeners.public.SMTP]'
        )
        _, errors = self.load_errors(static=static)
        self.assertIn("Listeners.public.TLS.ACME: unknown ACME provider 'le'", errors[0])

    def test_transport_one_method(self):
        static = STATIC + "\n[Transports.smarthost.Direct]\nDisableIPv4 = true\n"
        _, errors = self.load_errors(static=static)
        self.assertIn("Transports.smarthost: a transport has at most one method", errors[0])

    def test_several_errors(self):
        static = STATIC.replace("Port = 2525", "Port = 0").replace('LogLevel = "info"', 'LogLevel = "loud"')
        _, errors = self.load_errors(static=static)
        self.assertEqual(len(errors), 2)

    def test_missing_file(self):
        d = self.mktemp()
        os.makedirs(d)
        exc = self.assertRaises(config.ConfigError, config.load, d)
        self.assertIn("moxtw.toml: cannot read", exc.errors[0])
        self.assertEqual(len(config.config_test(d)), 1)

    def test_check_files(self):
        static = STATIC.replace(
            "[Listeners.public.SMTP]",
            '[[Listeners.public.TLS.KeyCerts]]\nCertFile = "tls/a.crt"\nKeyFile = "tls/a.key"\n\n'
            "[Listeners.public.SMTP]",
        )
        d = self.make_dir(static=static)
        c = config.load(d)  # Files need not exist to load.
        errors = config.check_files(c)
        self.assertEqual(len(errors), 2)
        self.assertIn("Listeners.public.TLS.KeyCerts[0].CertFile: file", errors[0])
        self.assertIn("(line 9)", errors[0])
        os.makedirs(os.path.join(d, "tls"))
        for name in ("a.crt", "a.key"):
            self.write(d, os.path.join("tls", name), "x")
        self.assertEqual(config.config_test(d), [])


class KeyLinesTests(SynchronousTestCase):
    def test_lines(self):
        text = (
            "a = 1\n"
            "[t]\n"
            'x = { y = 1, "z.w" = [1, 2] }\n'
            "arr = [\n"
            "  'one',\n"
            '  """multi\n'
            'line""",\n'
            "]\n"
            "[[t.list]]\n"
            "k = 1\n"
            "[[t.list]]\n"
            "k = 2  # comment\n"
            "[t.list.sub]\n"
            "q = 3\n"
            "d.e = 4\n"
        )
        lines = key_lines(text)
        self.assertEqual(lines[("a",)], 1)
        self.assertEqual(lines[("t", "x", "y")], 3)
        self.assertEqual(lines[("t", "x", "z.w", 1)], 3)
        self.assertEqual(lines[("t", "arr", 1)], 6)
        self.assertEqual(lines[("t", "list", 0, "k")], 10)
        self.assertEqual(lines[("t", "list", 1, "k")], 12)
        self.assertEqual(lines[("t", "list", 1, "sub", "q")], 14)
        self.assertEqual(lines[("t", "list", 1, "sub", "d", "e")], 15)

    def test_format_path(self):
        self.assertEqual(
            format_path(("Accounts", "mjl", "Destinations", "a@b", "Rulesets", 0, "Mailbox")),
            'Accounts.mjl.Destinations."a@b".Rulesets[0].Mailbox',
        )


class WriteDynamicTests(ConfigTestMixin, SynchronousTestCase):
    def test_preserves_comments(self):
        d = self.make_dir()
        c = config.load(d)

        def mutate(doc):
            doc["Accounts"]["mjl"]["Destinations"]["mjl2@example.org"] = {"Mailbox": "Other"}

        dynamic = config.write_dynamic(c.dynamic_path, c.static, mutate)
        self.assertEqual(dynamic.Accounts["mjl"].Destinations["mjl2@example.org"].Mailbox, "Other")
        with open(c.dynamic_path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("# Our domains.\n", text)
        self.assertIn("# Primary address.\n", text)
        self.assertTrue(text.startswith(DYNAMIC.split("[Accounts.other]")[0]))
        self.assertEqual(config.load(d).dynamic, dynamic)
        self.assertEqual(sorted(os.listdir(d)), ["domains.toml", "moxtw.toml"])

    def test_refuses_invalid(self):
        d = self.make_dir()
        c = config.load(d)
        with open(c.dynamic_path, "rb") as f:
            before = f.read()
        stat = os.stat(c.dynamic_path)

        def mutate(doc):
            doc["Accounts"]["other"]["Destinations"]["mjl@example.org"] = {}

        exc = self.assertRaises(config.ConfigError, config.write_dynamic, c.dynamic_path, c.static, mutate)
        self.assertIn("address already configured", exc.errors[0])
        with open(c.dynamic_path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.stat(c.dynamic_path).st_ino, stat.st_ino)
        self.assertEqual(sorted(os.listdir(d)), ["domains.toml", "moxtw.toml"])

    def test_mutate_returns_document(self):
        d = self.make_dir()
        c = config.load(d)

        def mutate(doc):
            new = tomlkit.parse(tomlkit.dumps(doc))
            new["Accounts"]["mjl"]["FullName"] = "Mechiel"
            return new

        dynamic = config.write_dynamic(c.dynamic_path, c.static, mutate)
        self.assertEqual(dynamic.Accounts["mjl"].FullName, "Mechiel")


class WatcherTests(ConfigTestMixin, SynchronousTestCase):
    def setUp(self):
        self.dir = self.make_dir()
        self.config = config.load(self.dir)
        self.clock = task.Clock()
        self.watcher = config.DynamicConfigWatcher(self.config, clock=self.clock, interval=2.0)
        self.seen = []
        self.unsubscribe = self.watcher.subscribe(self.seen.append)
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def change(self, text):
        path = self.config.dynamic_path
        self.write(self.dir, "domains.toml", text)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))

    def test_reload(self):
        self.clock.advance(2)
        self.assertEqual(self.seen, [])
        self.change(DYNAMIC.replace('Mailbox = "Lists"', 'Mailbox = "Lists2"'))
        self.clock.advance(2)
        self.assertEqual(len(self.seen), 1)
        self.assertIs(self.watcher.current, self.seen[0])
        self.assertIs(self.config.dynamic, self.seen[0])
        dest = self.watcher.current.Accounts["mjl"].Destinations["mjl@example.org"]
        self.assertEqual(dest.Rulesets[0].Mailbox, "Lists2")
        self.clock.advance(2)
        self.assertEqual(len(self.seen), 1)

        self.unsubscribe()
        self.change(DYNAMIC)
        self.clock.advance(2)
        self.assertEqual(len(self.seen), 1)
        self.assertEqual(
            self.watcher.current.Accounts["mjl"].Destinations["mjl@example.org"].Rulesets[0].Mailbox,
            "Lists",
        )

    def test_bad_file_keeps_old(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        old = self.watcher.current
        self.change(DYNAMIC.replace('Mailbox = "Inbox"', "Mailboxx = 1"))
        self.clock.advance(2)
        self.assertEqual(self.seen, [])
        self.assertIs(self.watcher.current, old)
        self.assertIs(self.config.dynamic, old)
        errors = [e for e in logged if e.get("log_namespace") == "moxtw.config"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["log_level"].name, "error")
        self.assertIn("Mailboxx: unknown key", errors[0]["errors"])
        # Not logged again while the file is unchanged.
        self.clock.advance(2)
        self.assertEqual(len([e for e in logged if e.get("log_namespace") == "moxtw.config"]), 1)

    def test_stop(self):
        self.watcher.stopService()
        self.change(DYNAMIC.replace('Mailbox = "Lists"', 'Mailbox = "Lists2"'))
        self.clock.advance(10)
        self.assertEqual(self.seen, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LocalserveTests(SynchronousTestCase):
    def test_config(self):
        d = self.mktemp()
        config_dir = config.write_localserve_config(d)
        self.assertEqual(config_dir, os.path.join(d, "config"))
        c = config.load(config_dir)
        self.assertEqual(c.data_dir, os.path.join(d, "data"))
        self.assertTrue(c.static.Pedantic)
        self.assertEqual(c.static.Hostname, "localhost")
        lis = c.static.Listeners["localhost"]
        self.assertEqual(lis.IPs, ["127.0.0.1"])
        self.assertEqual(lis.SMTP.Port, 1025)
        self.assertEqual(lis.Submission.Port, 1587)
        self.assertTrue(lis.Submission.NoRequireSTARTTLS)
        self.assertEqual(lis.Submissions.Port, 1465)
        self.assertEqual(lis.IMAP.Port, 1143)
        self.assertTrue(lis.IMAP.NoRequireSTARTTLS)
        self.assertEqual(lis.IMAPS.Port, 1993)
        for name, path in (("Account", "/"), ("Admin", "/admin/"), ("Webmail", "/webmail/"), ("WebAPI", "/webapi/")):
            self.assertEqual(getattr(lis, name + "HTTP").Port, 1080)
            self.assertEqual(getattr(lis, name + "HTTP").Path, path)
            self.assertTrue(getattr(lis, name + "HTTPS").Enabled)
            self.assertEqual(getattr(lis, name + "HTTPS").Port, 1443)
        self.assertEqual(lis.MetricsHTTP.Port, 9010)
        self.assertEqual(c.static.Postmaster.Account, "mox")
        acc = c.dynamic.Accounts["mox"]
        self.assertEqual(sorted(acc.Destinations), ["@localhost", "mox@localhost"])
        self.assertEqual(c.dynamic.Domains["localhost"].LocalpartCatchallSeparator, "+")
        # The certificate is created at first start: only check_files complains.
        errors = config.check_files(c)
        self.assertEqual(len(errors), 2)
        self.assertIn("localhost.crt", errors[0])

    def test_keeps_existing(self):
        d = self.mktemp()
        config_dir = config.write_localserve_config(d)
        path = os.path.join(config_dir, "domains.toml")
        with open(path, "a", encoding="utf-8") as f:
            f.write("# my edit\n")
        config.write_localserve_config(d, port_offset=2000)
        with open(path, encoding="utf-8") as f:
            self.assertTrue(f.read().endswith("# my edit\n"))

    def test_ports(self):
        self.assertEqual(
            config.localserve_ports(1000),
            {
                "SMTP": 1025,
                "Submission": 1587,
                "Submissions": 1465,
                "IMAP": 1143,
                "IMAPS": 1993,
                "HTTP": 1080,
                "HTTPS": 1443,
                "Metrics": 9010,
            },
        )
        self.assertEqual(config.localserve_ports(0)["SMTP"], 25)
        self.assertRaises(ValueError, config.localserve_ports, 60000)

    def test_other_ip_offset(self):
        d = self.mktemp()
        c = config.load(config.write_localserve_config(d, ip="::1", port_offset=2000))
        lis = c.static.Listeners["localhost"]
        self.assertEqual(lis.IPs, ["::1"])
        self.assertEqual(lis.SMTP.Port, 2025)


class DescribeTests(SynchronousTestCase):
    conf_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(moxtw.__file__))), "conf")

    def test_examples_valid(self):
        d = self.mktemp()
        describe.write_examples(d)
        c = config.load(d)
        self.assertEqual(c.static.Hostname, "mail.example.org")
        self.assertIn("example.org", c.dynamic.Domains)
        self.assertEqual(c.static.Listeners["public"].SMTP.Port, 25)
        self.assertTrue(c.dynamic.Accounts["mjl"].Destinations)

    def test_conf_not_stale(self):
        if not os.path.isdir(self.conf_dir):
            self.skipTest("no conf/ directory next to the moxtw package")
        hint = "conf/ is stale; regenerate with: .venv/bin/python -m moxtw.config.describe conf/"
        for name, text in (("moxtw.toml", config.describe_static()), ("domains.toml", config.describe_dynamic())):
            with open(os.path.join(self.conf_dir, name), encoding="utf-8") as f:
                self.assertEqual(f.read(), text, f"{name}: {hint}")
        config.load(self.conf_dir)

    def test_every_field_documented(self):
        seen = set()

        def walk(cls):
            if cls in seen:
                return
            seen.add(cls)
            for name, finfo in cls.model_fields.items():
                self.assertTrue(finfo.description, f"{cls.__name__}.{name} has no description")
                for sub in _models_in(finfo.annotation):
                    walk(sub)

        walk(schema.Static)
        walk(schema.Dynamic)
        self.assertGreater(len(seen), 40)

    def test_commented_settings_visible(self):
        text = config.describe_static()
        self.assertIn("#Port = 587\n", text)
        self.assertIn("# Type: port number (1-65535). Default: 25.\n", text)
        self.assertIn("#[[Listeners.public.TLS.KeyCerts]]\n", text)
        text = config.describe_dynamic()
        self.assertIn('#[[Accounts.mjl.Destinations."mjl@example.org".Rulesets]]\n', text)
        self.assertIn("#MaxOutgoingMessagesPerDay = 1000\n", text)


def _models_in(annotation):
    import typing

    from pydantic import BaseModel

    out = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    return out
