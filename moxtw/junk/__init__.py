"""Junk filtering (mox's ``junk`` package).

``words`` turns a message into the words the Bayesian filter counts; ``bayes`` keeps the
per-account word database (``accounts/<name>/junkfilter.db``) and classifies. Both are
blocking and depend only on ``moxtw.message`` and ``moxtw.db``: delivery runs them in a
thread and decides what to do with the probability.
"""
