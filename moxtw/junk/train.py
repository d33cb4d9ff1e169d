"""Training the Bayesian filter from the user's classifications.

A message whose ``$junk``/``$notjunk`` keyword (``junkclass``) differs from what the
filter learned from it (``trained_junk``) is queued in ``junk_train_pending`` by triggers
of the store (schema 12): set by IMAP STORE, by APPEND with the keyword, by moves into or
out of Junk (``moxtw.store.junkflags``), or when a message leaves the Rejects mailbox.
:class:`Trainer` works that queue off, in batches, off the reactor: untrain what the
message was trained as, train what it is now, record it on the message. So each message
counts exactly once, with its latest class. (A crash between the filter's commit and the
message's can count one message twice; nothing is lost.)

Copies in Rejects are never trained: their class is the filter's own verdict.
"""

import os

from twisted.application import internet
from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw.junk.analysis import MAX_ANALYSED, filter_path

log = Logger(namespace="moxtw.junk")

BATCH = 100
INTERVAL = 5.0  # seconds between looks at the accounts' queues


def _read_message(path):
    try:
        with open(path, "rb") as f:
            return f.read(MAX_ANALYSED)
    except FileNotFoundError:
        return None


class Trainer:
    """``store``: the Store; ``accounts()``: (name, JunkFilterConfig) of the accounts
    with a JunkFilter."""

    def __init__(self, store, accounts, reactor=None):
        self.store = store
        self.accounts = accounts
        self.reactor = reactor
        self._running = {}

    def train_all(self):
        ds = [self.train_account(name, conf) for name, conf in self.accounts()]
        return defer.gatherResults(ds, consumeErrors=True).addCallback(sum)

    def train_account(self, name, conf):
        """Work off the account's queue; Deferred[number of messages trained]. Runs for
        an account are not concurrent (a second call waits for the first)."""
        return self._serialized(name, lambda acc: self._train(acc, conf))

    def retrain(self, name, conf):
        """Empty the account's filter and train all its classified messages again, in
        turn with the account's other training runs. Deferred[number trained]."""
        return self._serialized(name, lambda acc: _retrain(acc, conf, self))

    def _serialized(self, name, work):
        previous = self._running.get(name)

        async def run():
            if previous is not None:
                try:
                    await previous
                except Exception:
                    pass
            acc = await self.store.open_account(name)
            return await work(acc)

        d = defer.Deferred.fromCoroutine(run())
        self._running[name] = d

        def done(result):
            if self._running.get(name) is d:
                del self._running[name]
            return result

        return d.addBoth(done)

    async def _train(self, acc, conf):
        from moxtw.junk import bayes, words

        params = bayes.Params.from_config(conf)
        total = 0
        while True:
            rows = await acc.read(lambda conn: [tuple(r) for r in conn.execute(
                "SELECT p.msg_id, m.junkclass, m.trained_junk, m.is_reject FROM junk_train_pending p"
                " JOIN message m ON m.id = p.msg_id ORDER BY p.msg_id LIMIT ?", (BATCH,))])
            if not rows:
                return total
            paths = {msg_id: acc.message_path(msg_id) for msg_id, *_ in rows}

            def train_batch():
                f = bayes.Filter(filter_path(acc.path), params)
                f.open()
                done = []
                failure = None
                try:
                    for msg_id, junkclass, trained, is_reject in rows:
                        data = _read_message(paths[msg_id])
                        if data is None or is_reject:
                            done.append((msg_id, junkclass, trained, True))  # nothing to learn from
                            continue
                        ws = words.message_words(data, onegrams=params.onegrams, twograms=params.twograms,
                                                 threegrams=params.threegrams)
                        state = trained
                        try:
                            if trained is not None:
                                f.untrain(ws, bool(trained))
                                state = None
                            if junkclass is not None:
                                f.train(ws, bool(junkclass))
                                state = junkclass
                        except Exception as e:
                            # What the filter holds is recorded below; this message stays
                            # queued, and the rest of the batch too (no double counting).
                            if state != trained:
                                done.append((msg_id, junkclass, state, False))
                            failure = e
                            break
                        done.append((msg_id, junkclass, junkclass, True))
                finally:
                    f.close()
                return done, failure

            done, failure = await threads.deferToThread(train_batch)

            def record(conn, ctx):
                for msg_id, junkclass, trained, complete in done:
                    conn.execute("UPDATE message SET trained_junk = ? WHERE id = ?", (trained, msg_id))
                    # Only when the class did not change meanwhile: else it stays queued
                    # and the next round untrains this and trains the new class.
                    if complete:
                        conn.execute(
                            "DELETE FROM junk_train_pending WHERE msg_id = ? AND"
                            " (SELECT junkclass FROM message WHERE id = ?) IS ?", (msg_id, msg_id, junkclass))

            await acc.write(record)
            total += sum(1 for d in done if d[3])
            log.debug("trained {n} messages of {account}", n=len(done), account=acc.name)
            if failure is not None:
                raise failure


class TrainerService(internet.TimerService):
    """Runs the Trainer every few seconds."""

    def __init__(self, trainer, interval=INTERVAL, clock=None):
        super().__init__(interval, self._run)
        self.trainer = trainer
        if clock is not None:
            self.clock = clock

    def _run(self):
        # Never let an error stop the timer: LoopingCall ends on a failure.
        d = defer.maybeDeferred(self.trainer.train_all)
        d.addErrback(lambda f: log.failure("training junk filters", f))
        return d


def retrain(acc, conf):
    """Empty the account's filter and train it from every classified message again
    (``moxtw junk retrain`` offline; in the server through :meth:`Trainer.retrain`):
    Deferred[number trained]."""
    return defer.Deferred.fromCoroutine(_retrain(acc, conf, Trainer(None, lambda: [])))


async def _retrain(acc, conf, trainer):
    from moxtw.junk import bayes

    def reset():
        path = filter_path(acc.path)
        f = bayes.Filter(path, bayes.Params.from_config(conf))
        f.open()
        try:
            f.reset()
        finally:
            f.close()
        return os.path.exists(path)

    await threads.deferToThread(reset)

    def queue_all(conn, ctx):
        conn.execute("UPDATE message SET trained_junk = NULL")
        conn.execute("DELETE FROM junk_train_pending")
        conn.execute("INSERT INTO junk_train_pending (msg_id) SELECT id FROM message"
                     " WHERE junkclass IS NOT NULL AND is_reject = 0")

    await acc.write(queue_all)
    return await trainer._train(acc, conf)


__all__ = ["Trainer", "TrainerService", "retrain"]
