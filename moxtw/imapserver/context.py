"""Search and sort contexts (RFC 5267 4, CONTEXT=SEARCH and CONTEXT=SORT).

A SEARCH or SORT with ``RETURN (UPDATE)`` leaves a context behind: its result, kept
current while the mailbox stays selected. When messages arrive, change flags or are
expunged, the session re-evaluates the program for just those messages and tells the
client what joined and what left with unsolicited ``ESEARCH (TAG "t") ADDTO (...)`` and
``REMOVEFROM (...)`` responses, until CANCELUPDATE or the mailbox is deselected.

This module holds a context's result and computes the changes; the session evaluates
the program (``moxtw.imapserver.search``) and writes the responses. Results are UIDs:
sequence numbers are only made when a response is written, so they are right whatever
was expunged in between.

SEARCH contexts report position 0 (RFC 5267 4.3: positions are for sorted results).
SORT contexts keep each message's sort keys, so an addition is placed by a binary search
and nothing is sorted again; a message's sort keys (dates, size, subject, addresses)
never change, so flag changes only add or remove.
"""

import array
import bisect
import functools

from moxtw.imapserver.response import format_seqset

# Contexts one selected mailbox keeps; a further SEARCH/SORT with UPDATE is answered
# without one (NOUPDATE, RFC 5267 4.3.1).
MAX_CONTEXTS = 10
# A SORT context keeps sort keys for each message of its result: results larger than
# this get NOUPDATE instead (SEARCH contexts keep 4 bytes a message and have no limit).
MAX_SORT_RESULT = 50_000


class SearchContext:
    """The result of a SEARCH with UPDATE: a sorted array of UIDs."""

    sorted = False

    def __init__(self, tag, uid, key, found):
        self.tag = tag
        self.uid = uid  # UID SEARCH: responses carry UIDs, else sequence numbers
        self.key = key  # the program, with RECENT/NEW/OLD as they were at the command
        self.members = array.array("I", sorted(found))

    def __contains__(self, uid):
        i = bisect.bisect_left(self.members, uid)
        return i < len(self.members) and self.members[i] == uid

    def __len__(self):
        return len(self.members)

    def remove(self, uids):
        """Take ``uids`` out of the result; [(0, uid)] of those that were in it."""
        out = []
        for u in sorted(set(uids)):
            i = bisect.bisect_left(self.members, u)
            if i < len(self.members) and self.members[i] == u:
                del self.members[i]
                out.append((0, u))
        return out

    def update(self, candidates, matching, keys=None):
        """Apply a re-evaluation of ``candidates``, of which ``matching`` match now:
        (removals, additions) as [(position, uid)]."""
        removals = self.remove(u for u in candidates if u not in matching)
        additions = []
        for u in sorted(matching):
            i = bisect.bisect_left(self.members, u)
            if i == len(self.members) or self.members[i] != u:
                self.members.insert(i, u)
                additions.append((0, u))
        return removals, additions


class SortContext:
    """The result of a SORT with UPDATE: UIDs in sort order and their sort keys."""

    sorted = True

    def __init__(self, tag, uid, key, criteria, found, keys):
        self.tag = tag
        self.uid = uid
        self.key = key
        self.criteria = criteria  # [(name, reverse)]
        self.keys = {u: keys[u] for u in found}
        self.order = list(found)
        self._key = functools.cmp_to_key(self._compare)

    def __contains__(self, uid):
        return uid in self.keys

    def __len__(self):
        return len(self.order)

    def _compare(self, a, b):
        # RFC 5256 3: each criterion in turn (REVERSE flips it), then mailbox order.
        ka, kb = self.keys[a], self.keys[b]
        for (_, reverse), x, y in zip(self.criteria, ka, kb):
            if x != y:
                c = -1 if x < y else 1
                return -c if reverse else c
        return (a > b) - (a < b)

    def _position(self, uid):
        """0-based index of ``uid`` (in the result)."""
        return bisect.bisect_left(self.order, self._key(uid), key=self._key)

    def remove(self, uids):
        """Take ``uids`` out: [(position, uid)], highest position first, each position
        from 1 in the result as it was before that removal (so also as it was before
        all of them)."""
        found = sorted(((self._position(u), u) for u in set(uids) if u in self.keys), reverse=True)
        for i, u in found:
            del self.order[i]
            del self.keys[u]
        return [(i + 1, u) for i, u in found]

    def update(self, candidates, matching, keys=None):
        removals = self.remove(u for u in candidates if u not in matching)
        new = [u for u in matching if u not in self.keys and u in keys]
        for u in new:
            self.keys[u] = keys[u]
        # Inserted in sort order, each at its final position from 1: later insertions
        # land after it, so every reported position holds in the final result.
        new.sort(key=self._key)
        additions = []
        for u in new:
            i = self._position(u)
            self.order.insert(i, u)
            additions.append(u)
        return removals, [(self._position(u) + 1, u) for u in additions]


def uid_ranges(uids):
    """((lo, hi), ...) of sorted runs in ``uids``, for a SeqSet."""
    out = []
    for u in sorted(set(uids)):
        if out and u == out[-1][1] + 1:
            out[-1][1] = u
        else:
            out.append([u, u])
    return tuple((lo, hi) for lo, hi in out)


def pairs_text(pairs, number, sort_order):
    """The inside of ADDTO/REMOVEFROM's parentheses: "position set" pairs (RFC 5267
    4.3). ``pairs``: [(position, uid)]; ``number(uid)`` the number to send (None: the
    client cannot be told of it any more, it is left out). SEARCH contexts give one pair
    "0 set"; SORT contexts one pair per run of consecutive positions holding consecutive
    ascending numbers, in the order given."""
    numbered = [(p, number(u)) for p, u in pairs]
    numbered = [(p, n) for p, n in numbered if n is not None]
    if not numbered:
        return None
    if not sort_order:
        nums = sorted(n for _, n in numbered)
        return "0 " + format_seqset(nums)
    runs = []
    for p, n in numbered:
        last = runs[-1] if runs else None
        if last is not None and p == last[0] + len(last[1]) and n == last[1][-1] + 1:
            last[1].append(n)
        elif last is not None and p == last[0] - 1 and n == last[1][0] - 1:
            # Removals come highest position first: a run grows downwards.
            last[0] = p
            last[1].insert(0, n)
        else:
            runs.append([p, [n]])
    return " ".join(f"{p} {format_seqset(ns)}" for p, ns in runs)

