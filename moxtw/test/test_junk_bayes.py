"""The Bayesian junk filter: message words (also of hostile messages), training and
untraining, classification and its parameters, and the ``moxtw junk`` commands."""

import base64
import math
import os
import threading
import time
from types import SimpleNamespace

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.config.schema import JunkFilterConfig
from moxtw.junk import schema, words
from moxtw.junk.bayes import Classification, Filter, FilterError, Params, classify_counts, word_probability
from moxtw.junk.words import message_words
from moxtw.test.clihelper import run_moxtw


def msg(body, subject="Hello", headers=b"", ctype=b"text/plain; charset=utf-8", cte=None):
    h = b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: " + subject.encode() + b"\r\n"
    h += b"MIME-Version: 1.0\r\nContent-Type: " + ctype + b"\r\n"
    if cte:
        h += b"Content-Transfer-Encoding: " + cte + b"\r\n"
    if isinstance(body, str):
        body = body.encode("utf-8")
    return h + headers + b"\r\n" + body


def multipart(*parts, subtype=b"mixed", boundary=b"b0"):
    out = b"Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/" + subtype + b"; boundary=" + boundary
    out += b"\r\n\r\n"
    for p in parts:
        out += b"--" + boundary + b"\r\n" + p + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


HAM_TEXTS = [
    "Shall we meet for lunch on Tuesday to discuss the project schedule with the team",
    "The meeting notes from yesterday are attached, please review the project plan",
    "Could you review my patch for the parser before the release on Friday",
    "Thanks for the lunch, the team liked the restaurant and the schedule works",
    "Release notes for the parser project are ready, please review them today",
]
SPAM_TEXTS = [
    "Cheap pills online, buy now and save money, limited offer for viagra",
    "You won the lottery prize, click here to claim your money now",
    "Buy cheap watches online now, best offer, click here, limited stock",
    "Claim your prize money now, click the link, exclusive offer for winners",
    "Lose weight fast with cheap pills, buy online now, money back offer",
]


class WordsTests(unittest.SynchronousTestCase):
    def test_plain_text(self):
        w = message_words(msg("Hello there, don't MISS the Meeting at 10:30 tomorrow! ab 12345 2024"))
        for expect in ("hello", "there", "don't", "miss", "the", "meeting", "tomorrow"):
            self.assertIn(expect, w)
        # Short words, digits, numbers in disguise and random-looking strings are left out.
        for absent in ("at", "ab", "12345", "2024", "10", "30"):
            self.assertNotIn(absent, w)
        self.assertNotIn("xkcdqzrtbv", message_words(msg("word xkcdqzrtbv")))

    def test_header_words_prefixed_and_decoded(self):
        w = message_words(msg("body", subject="=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="))
        self.assertIn("subject:grüße", w)
        self.assertIn("subject:köln", w)
        self.assertNotIn("subject:aus", w)  # header words need 4 characters, as in mox
        self.assertIn("from:alice", w)
        self.assertIn("to:example", w)

    def test_ngrams(self):
        data = msg("alpha beta gamma")
        self.assertEqual({w for w in message_words(data) if not w.startswith(("from:", "to:", "subject:"))},
                         {"alpha", "beta", "gamma"})
        w = message_words(data, onegrams=False, twograms=True, threegrams=True)
        self.assertIn("alpha beta", w)
        self.assertIn("beta gamma", w)
        self.assertIn("alpha beta gamma", w)
        self.assertNotIn("alpha", w)

    def test_ngrams_do_not_cross_parts(self):
        data = multipart(b"Content-Type: text/plain\r\n\r\nfirstpart", b"Content-Type: text/plain\r\n\r\nsecondpart")
        w = message_words(data, twograms=True)
        self.assertIn("firstpart", w)
        self.assertIn("secondpart", w)
        self.assertNotIn("firstpart secondpart", w)

    def test_transfer_encodings_and_charsets(self):
        b64 = base64.encodebytes("Grüße vom Bodensee".encode("utf-8"))
        self.assertIn("bodensee", message_words(msg(b64, cte=b"base64")))
        self.assertIn("grüße", message_words(msg(b64, cte=b"base64")))
        qp = b"Caf=E9 cr=E8me br=FBl=E9e"
        w = message_words(msg(qp, ctype=b"text/plain; charset=iso-8859-1", cte=b"quoted-printable"))
        self.assertIn("café", w)
        self.assertIn("crème", w)

    def test_charset_errors_replaced(self):
        w = message_words(msg(b"valid words \xff\xfe\x80 broken\xc3 more", ctype=b"text/plain; charset=utf-8"))
        self.assertIn("valid", w)
        self.assertIn("more", w)
        w = message_words(msg(b"unknown charset text", ctype=b"text/plain; charset=x-no-such-charset"))
        self.assertIn("unknown", w)

    def test_html_without_script_and_style(self):
        html = (b"<html><head><title>titleword</title><style>.stylish{color:red}</style></head>"
                b"<body><script>var scriptword = 1;</script><p>Visible&nbsp;paragraph</p>"
                b"<!-- commentword --><b>bold</b>text</body></html>")
        w = message_words(msg(html, ctype=b"text/html"))
        self.assertIn("visible", w)
        self.assertIn("paragraph", w)
        self.assertIn("bold", w)
        for absent in ("scriptword", "stylish", "commentword", "html", "body", "var"):
            self.assertNotIn(absent, w)

    def test_binary_parts_skipped(self):
        png = base64.encodebytes(b"\x89PNG" + b"pngsecretword " * 100)
        data = multipart(b"Content-Type: text/plain\r\n\r\nreadable",
                         b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + png,
                         b"Content-Type: application/octet-stream\r\n\r\nappsecretword")
        w = message_words(data)
        self.assertIn("readable", w)
        self.assertNotIn("pngsecretword", w)
        self.assertNotIn("appsecretword", w)

    def test_nested_message(self):
        inner = msg("forwarded content here")
        data = multipart(b"Content-Type: text/plain\r\n\r\nsee below",
                         b"Content-Type: message/rfc822\r\n\r\n" + inner)
        w = message_words(data)
        self.assertIn("forwarded", w)
        self.assertIn("below", w)

    def test_mbox_from_line(self):
        data = b"From alice@example.org  Tue Jul 30 08:30:04 2002\n" + msg("body words")
        w = message_words(data)
        self.assertIn("subject:hello", w)
        self.assertIn("words", w)


class HostileWordsTests(unittest.SynchronousTestCase):
    def test_huge_words_dropped(self):
        data = msg("normal " + "a" * 5_000_000 + " words")
        start = time.monotonic()
        w = message_words(data)
        self.assertLess(time.monotonic() - start, 10)
        self.assertIn("normal", w)
        self.assertTrue(all(len(x) <= 100 for x in w))

    def test_text_bounded(self):
        body = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676 % 26)}"
                        for i in range(200_000))
        w = message_words(msg(body), max_size=10_000)
        self.assertLess(len(w), 2000)
        w = message_words(msg(body), twograms=True, threegrams=True)
        self.assertLessEqual(len(w), words.MAX_WORDS)

    def test_deep_nesting(self):
        data = b""
        for i in range(2000):
            data += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        data += b"Content-Type: text/plain\r\n\r\ndeepest words\r\n"
        w = message_words(data)
        self.assertIsInstance(w, set)

    def test_many_parts(self):
        parts = [b"Content-Type: text/plain\r\n\r\npart%s" % bytes([97 + i % 26]) * 3 for i in range(5000)]
        w = message_words(multipart(*parts))
        self.assertIsInstance(w, set)

    def test_base64_garbage(self):
        w = message_words(msg(b"!!!!@@@@====***\x00\x01\xffnot base64 at all===", cte=b"base64"))
        self.assertIsInstance(w, set)
        w = message_words(msg(os.urandom(100_000), cte=b"base64"))
        self.assertIsInstance(w, set)

    def test_random_bytes_never_raise(self):
        for seed in range(20):
            data = os.urandom(2000 + seed * 100)
            self.assertIsInstance(message_words(data, twograms=True, threegrams=True), set)
        self.assertEqual(message_words(b""), set())
        self.assertIsInstance(message_words(bytearray(b"Subject: x\r\n\r\nhello")), set)

    def test_unclosed_html(self):
        w = message_words(msg(b"<p>before <script>never closed " + b"x " * 100000, ctype=b"text/html"))
        self.assertIn("before", w)
        self.assertNotIn("closed", w)


class FilterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.filter = Filter(self.path, Params()).open()
        self.addCleanup(self.filter.close)

    def train_corpus(self, f=None):
        f = f or self.filter
        p = f.params
        f.train_many([(p.message_words(msg(t)), False) for t in HAM_TEXTS]
                     + [(p.message_words(msg(t)), True) for t in SPAM_TEXTS])

    def test_schema_versioned(self):
        conn = schema.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.LATEST)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        # Opening again is fine.
        Filter(self.path).open().close()

    def test_not_open(self):
        f = Filter(self.mktemp())
        self.assertRaises(FilterError, f.classify, {"word"})
        self.assertRaises(FilterError, f.train, {"word"}, True)

    def test_empty_filter_classifies_neutral(self):
        c = self.filter.classify({"anything", "at", "all"})
        self.assertIsInstance(c, Classification)
        self.assertEqual(c.probability, 0.5)
        self.assertFalse(c.junk)
        self.assertEqual(c.top, [])
        self.assertEqual((c.ham_messages, c.spam_messages), (0, 0))

    def test_train_untrain_symmetry(self):
        f = self.filter
        ham = message_words(msg(HAM_TEXTS[0]), twograms=True)
        spam = message_words(msg(SPAM_TEXTS[0]), twograms=True)
        f.train(ham, False)
        f.train(spam, True)
        f.train(spam, True)
        self.assertEqual(f.totals(), (1, 2))
        counts = f.word_counts(spam | ham)
        self.assertEqual(counts["cheap"], (0, 2))
        self.assertEqual(counts["lunch"], (1, 0))
        f.untrain(spam, True)
        f.untrain(spam, True)
        f.untrain(ham, False)
        self.assertEqual(f.totals(), (0, 0))
        self.assertEqual(f.count_words(), 0)

    def test_untrain_never_below_zero(self):
        f = self.filter
        f.train({"known"}, False)
        f.untrain({"known", "unknown"}, True)
        f.untrain({"known"}, False)
        f.untrain({"known"}, False)
        self.assertEqual(f.totals(), (0, 0))
        self.assertEqual(f.word_counts({"known", "unknown"}), {})

    def test_train_many_one_transaction(self):
        f = self.filter
        f.train_many((({"alpha", "beta"}, i % 2 == 0) for i in range(10)))
        self.assertEqual(f.totals(), (5, 5))
        self.assertEqual(f.word_counts({"alpha"}), {"alpha": (5, 5)})
        f.untrain_many((({"alpha", "beta"}, i % 2 == 0) for i in range(10)))
        self.assertEqual(f.count_words(), 0)

    def test_failed_train_rolls_back(self):
        def bad():
            yield {"alpha"}, True
            raise RuntimeError("reading failed")
        self.assertRaises(RuntimeError, self.filter.train_many, bad())
        self.assertEqual(self.filter.totals(), (0, 0))
        self.assertEqual(self.filter.count_words(), 0)

    def test_reset(self):
        self.train_corpus()
        self.assertGreater(self.filter.count_words(), 0)
        self.filter.reset()
        self.assertEqual(self.filter.totals(), (0, 0))
        self.assertEqual(self.filter.count_words(), 0)

    def test_classify_ham_and_spam(self):
        self.train_corpus()
        p = self.filter.params
        spam = self.filter.classify(p.message_words(msg("Buy cheap pills online now, click here for the offer")))
        ham = self.filter.classify(p.message_words(msg("Please review the project schedule before lunch")))
        self.assertTrue(spam.junk, spam)
        self.assertGreater(spam.probability, 0.95)
        self.assertFalse(ham.junk, ham)
        self.assertLess(ham.probability, 0.05)
        self.assertEqual((spam.ham_messages, spam.spam_messages), (5, 5))
        self.assertFalse(spam.significant)  # fewer than 50 hams trained
        # Most decisive words first.
        dist = [abs(p - 0.5) for _, p in spam.top]
        self.assertEqual(dist, sorted(dist, reverse=True))
        self.assertLessEqual(len(spam.top), 2 * p.top_words)
        self.assertEqual(self.filter.classify_message(msg(SPAM_TEXTS[1])).junk, True)

    def test_classification_reads_current_totals(self):
        other = Filter(self.path, Params()).open()
        self.addCleanup(other.close)
        self.train_corpus(other)
        self.assertTrue(self.filter.classify_message(msg(SPAM_TEXTS[2])).junk)

    def test_many_words_lookup_chunked(self):
        many = {f"word{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}" for i in range(3000)}
        self.filter.train(many, True)
        self.filter.train({"other"}, False)
        c = self.filter.classify(many | {"other"})
        self.assertEqual(c.known_words, 3001)
        self.assertEqual(len(c.top), 11)  # 10 most spammy, the one hammy
        self.assertTrue(c.junk)

    def test_threshold(self):
        self.train_corpus()
        data = msg("cheap offer for the project team")
        prob = Filter(self.path, Params()).open().classify_message(data).probability
        self.assertGreater(prob, 0.01)
        self.assertLess(prob, 0.99)
        for threshold, junk in ((prob - 0.001, True), (prob, True), (prob + 0.001, False)):
            f = Filter(self.path, Params(threshold=threshold)).open()
            self.addCleanup(f.close)
            self.assertEqual(f.classify_message(data).junk, junk)

    def test_top_words_print(self):
        self.train_corpus()
        spammy, hammy = self.filter.top_words(3, min_count=1)
        self.assertEqual(len(spammy), 3)
        self.assertTrue(all(p > 0.5 and spam > 0 for _, p, _, spam in spammy))
        self.assertTrue(all(p < 0.5 and ham > 0 for _, p, ham, _ in hammy))

    def test_blocking_calls_from_threads(self):
        self.train_corpus()
        errors = []

        def work():
            try:
                for _ in range(20):
                    self.filter.classify_message(msg(SPAM_TEXTS[0]))
                    self.filter.train({"threadword"}, True)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.filter.word_counts({"threadword"}), {"threadword": (0, 80)})


class ParamsTests(unittest.SynchronousTestCase):
    """Parameters applied to known counts (classify_counts, no database)."""

    def test_defaults_and_from_config(self):
        self.assertEqual(Params(), Params(threshold=0.95, onegrams=True, twograms=True, threegrams=False,
                                          max_power=0.01, top_words=10, ignore_words=0.1, rare_words=2))
        cfg = JunkFilterConfig(Threshold=0.9, Onegrams=True, Twograms=False, Threegrams=True, MaxPower=0.05,
                               TopWords=5, IgnoreWords=0.2, RareWords=1)
        self.assertEqual(Params.from_config(cfg), Params(0.9, True, False, True, 0.05, 5, 0.2, 1))
        self.assertEqual(Params.from_config(None), Params())
        ns = SimpleNamespace(Threshold=1, Onegrams=1, Twograms=0, Threegrams=0, MaxPower=0, TopWords=3,
                             IgnoreWords=0, RareWords=0)
        self.assertEqual(Params.from_config(ns).top_words, 3)

    def test_word_probability_relative_to_message_counts(self):
        # A word in 10 of 100 hams and 1 of 10 spams is neutral, whatever its raw counts.
        p = Params(ignore_words=0, rare_words=0)
        c = classify_counts({"w": (10, 1)}, 100, 10, p)
        self.assertEqual(c.top, [])
        c = classify_counts({"w": (10, 2)}, 100, 10, p)
        self.assertAlmostEqual(c.top[0][1], (2 / 10) / (2 / 10 + 10 / 100))

    def test_word_probability_matches_classification(self):
        p = Params(ignore_words=0, top_words=100)
        counts = {"a": (0, 1), "b": (3, 0), "c": (2, 7), "d": (40, 1), "e": (0, 90), "f": (5, 5)}
        for hams, spams in ((100, 100), (100, 10), (10, 100), (0, 5), (5, 0)):
            got = dict(classify_counts(counts, hams, spams, p).top)
            for w, (h, sp) in counts.items():
                want = word_probability(h, sp, hams, spams, p)
                if want is not None and want != 0.5:
                    self.assertAlmostEqual(got[w], want, msg=(w, hams, spams))
                else:
                    self.assertNotIn(w, got)

    def test_max_power(self):
        counts = {"spammy": (0, 50)}
        for mp in (0.01, 0.1, 0.3):
            c = classify_counts(counts, 100, 100, Params(max_power=mp, rare_words=0))
            self.assertAlmostEqual(c.top[0][1], 1 - mp)
            self.assertAlmostEqual(c.probability, 1 - mp)
        # max_power 0: probabilities 0 and 1 do not break the logarithms.
        c = classify_counts({"s": (0, 5), "h": (5, 0)}, 10, 10, Params(max_power=0, rare_words=0))
        self.assertTrue(0 <= c.probability <= 1)

    def test_rare_words(self):
        counts = {"rare": (0, 1)}
        c = classify_counts(counts, 10, 10, Params(max_power=0.01, rare_words=0))
        self.assertAlmostEqual(c.top[0][1], 0.99)
        c = classify_counts(counts, 10, 10, Params(max_power=0.01, rare_words=2, ignore_words=0))
        # Pulled towards 0.5 by (1 + 2 - 1) tenths of the distance.
        self.assertAlmostEqual(c.top[0][1], 0.99 + 2 * (0.5 - 0.99) / 10)
        c = classify_counts({"common": (0, 3)}, 10, 10, Params(max_power=0.01, rare_words=2))
        self.assertAlmostEqual(c.top[0][1], 0.99)

    def test_ignore_words(self):
        counts = {"neutralish": (10, 14), "strong": (0, 10)}  # 14/24 = 0.583
        c = classify_counts(counts, 100, 100, Params(ignore_words=0.1, rare_words=0))
        self.assertEqual([w for w, _ in c.top], ["strong"])
        c = classify_counts(counts, 100, 100, Params(ignore_words=0.05, rare_words=0))
        self.assertEqual([w for w, _ in c.top], ["strong", "neutralish"])

    def test_top_words(self):
        counts = {f"spam{i}": (1, 10 + i) for i in range(20)}
        counts.update({f"ham{i}": (10 + i, 1) for i in range(20)})
        counts["veryham"] = (50, 0)
        c = classify_counts(counts, 100, 100, Params(top_words=3, rare_words=0))
        self.assertEqual(len(c.top), 6)
        self.assertEqual(c.top[0], ("veryham", 0.01))
        self.assertEqual({w for w, _ in c.top}, {"veryham", "ham19", "ham18", "spam19", "spam18", "spam17"})
        # Bayes' rule over the words used.
        eta = sum(math.log(1 - r) - math.log(r) for _, r in c.top)
        self.assertAlmostEqual(c.probability, 1 / (1 + math.exp(eta)))
        c = classify_counts(counts, 100, 100, Params(top_words=0))
        self.assertEqual((c.top, c.probability), ([], 0.5))

    def test_no_underflow(self):
        counts = {f"w{i}": (0, 100) for i in range(1000)}
        c = classify_counts(counts, 100, 100, Params(top_words=1000, max_power=0, rare_words=0))
        self.assertEqual(c.probability, 1.0)
        counts = {f"w{i}": (100, 0) for i in range(1000)}
        c = classify_counts(counts, 100, 100, Params(top_words=1000, max_power=0, rare_words=0))
        self.assertEqual(c.probability, 0.0)


def write_messages(directory, texts, maildir=False):
    sub = os.path.join(directory, "cur") if maildir else directory
    os.makedirs(sub)
    if maildir:
        os.makedirs(os.path.join(directory, "tmp"))
        with open(os.path.join(directory, "tmp", "partial"), "wb") as f:
            f.write(msg("incomplete delivery lottery prize"))
    for i, t in enumerate(texts):
        with open(os.path.join(sub, f"{i}.eml"), "wb") as f:
            f.write(msg(t))


class CommandTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_train_check_test_print(self):
        base = self.mktemp()
        ham, spam, db = os.path.join(base, "ham"), os.path.join(base, "spam"), os.path.join(base, "junkfilter.db")
        write_messages(ham, HAM_TEXTS, maildir=True)
        write_messages(spam, SPAM_TEXTS)
        out, err, rc = yield run_moxtw("junk", "train", db, ham, spam)
        self.assertEqual(rc, 0, err)
        self.assertIn(b"trained 5 ham and 5 spam messages", out)

        check = os.path.join(base, "check.eml")
        with open(check, "wb") as f:
            f.write(msg("Claim your cheap prize money now, click here"))
        out, err, rc = yield run_moxtw("junk", "check", db, check)
        self.assertEqual(rc, 0, err)
        self.assertIn(b"junk yes (threshold 0.95)", out)
        self.assertRegex(out.decode(), r"probability (0\.9|1\.0)\d+")
        out, err, rc = yield run_moxtw("junk", "check", "--threshold", "1", db, "-",
                                       stdin=msg("Claim your cheap prize money now"))
        self.assertEqual(rc, 0, err)
        self.assertIn(b"junk no (threshold 1.0)", out)

        out, err, rc = yield run_moxtw("junk", "test", db, ham, spam)
        self.assertEqual(rc, 0, err)
        self.assertIn(b"ham: 5 messages, 0 judged junk (false positives 0.00%)", out)
        self.assertIn(b"spam: 5 messages, 0 not judged junk (false negatives 0.00%)", out)

        out, err, rc = yield run_moxtw("junk", "print", db, "--top", "3")
        self.assertEqual(rc, 0, err)
        text = out.decode()
        self.assertIn("5 ham, 5 spam messages", text)
        self.assertIn("most spammy", text)
        self.assertIn("most hammy", text)

    @defer.inlineCallbacks
    def test_bad_parameters_and_paths(self):
        base = self.mktemp()
        os.makedirs(base)
        db = os.path.join(base, "junkfilter.db")
        out, err, rc = yield run_moxtw("junk", "check", db, "/nonexistent")
        self.assertEqual(rc, 1)
        self.assertIn(b"no database", err)
        out, err, rc = yield run_moxtw("junk", "print", "--max-power", "0.7", db)
        self.assertEqual(rc, 2)
        self.assertIn(b"MaxPower", err)
        params = os.path.join(base, "params.toml")
        with open(params, "w") as f:
            f.write("[JunkFilter]\nThreshold = 0.5\nTwograms = false\n")
        out, err, rc = yield run_moxtw("junk", "train", "--params", params, db, base, "/nonexistent")
        self.assertEqual(rc, 1)
        self.assertIn(b"not a directory", err)
