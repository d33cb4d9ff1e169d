"""moxtw: a mail server on Twisted that does what mox does."""

__version__ = "0.1.0.dev0"
