"""The reactor a part uses: the one passed in (tests pass a ``task.Clock`` or a
``MemoryReactor``), else Twisted's global reactor."""


def default_reactor(reactor=None):
    """``reactor``, or Twisted's global reactor when it is None."""
    if reactor is not None:
        return reactor
    # Imported on first use, not at module import: importing twisted.internet.reactor
    # installs the default reactor, and twistd and tests must be able to install theirs first.
    from twisted.internet import reactor as global_reactor

    return global_reactor
