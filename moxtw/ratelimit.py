"""Rate limits: counts of events per key in fixed time windows.

A ``Limiter`` has several windows (say 1 minute, 1 hour, 1 day), each with a maximum; an
event is allowed when adding it keeps every window at or under its maximum. Used for
connections per IP, failed logins per IP and per account, messages per account.
"""

import time


class Limiter:
    def __init__(self, limits, clock=None):
        """``limits``: [(window seconds, max events)]. ``clock``: has ``seconds()``."""
        self.limits = list(limits)
        self._now = clock.seconds if clock is not None else time.time
        self._counts = {}  # key -> [(window start, count)] per limit
        # Keys whose windows expired are dropped now and then, so memory is bounded by
        # the keys seen in the longest window, not by all keys ever seen.
        self._next_prune = 0.0

    def _windows(self, key):
        now = self._now()
        entry = self._counts.get(key)
        if entry is None:
            if now >= self._next_prune:
                self.prune()
                self._next_prune = now + min(window for window, _ in self.limits)
            entry = self._counts[key] = [[0.0, 0] for _ in self.limits]
        for (window, _), w in zip(self.limits, entry):
            start = now - (now % window)
            if w[0] != start:
                w[0], w[1] = start, 0
        return entry

    def can_add(self, key, n=1):
        entry = self._windows(key)
        return all(w[1] + n <= limit for (_, limit), w in zip(self.limits, entry))

    def add(self, key, n=1):
        """Count ``n`` events for ``key`` if allowed; returns whether it was."""
        if not self.can_add(key, n):
            return False
        for w in self._counts[key]:
            w[1] += n
        return True

    def count(self, key):
        """Events counted for ``key`` in the shortest window."""
        if key not in self._counts:
            return 0
        return min(w[1] for w in self._windows(key))

    def reset(self, key):
        self._counts.pop(key, None)

    def prune(self):
        """Forget keys whose windows have all expired (call now and then)."""
        now = self._now()
        for key in list(self._counts):
            if all(w[0] + window <= now for (window, _), w in zip(self.limits, self._counts[key])):
                del self._counts[key]
