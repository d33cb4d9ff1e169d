"""Input handling shared by the SMTP and IMAP protocols: buffered bytes, one command at a
time, in order, and no more input than the client reads output.

A protocol appends received bytes with ``_feed`` and implements ``_process_buffer``,
which consumes commands from ``self._buf`` while ``_may_process()`` is true. A command
whose handler returns a Deferred sets ``_busy``; ``_resume`` (added as the handler's last
callback) continues with the next buffered command. Handlers whose Deferred has already
fired continue the same loop instead of recursing.

No command is taken while the client does not read its replies: ``_watch_output``
registers a streaming producer with the transport at connection start, which the
transport pauses when its write buffer exceeds its bufferSize and resumes once the buffer
drained. Reading from the transport is paused for as long as any reason holds: a large
backlog waits behind a slow command or unread replies ("backlog"), or the protocol waits
for something of its own (e.g. a spool write). A client that pipelines commands but never
reads thus costs one buffer of replies and one backlog of input, not one reply per
command. (Reading is not paused the moment the output is full: a TLS layer buffers the
greeting until its handshake is done, and it must read the handshake.)
Long responses wait for ``wait_output()`` between slices instead of registering producers
of their own (a transport takes one producer).
"""

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class _OutputWatch:
    """Told by the transport when its write buffer is full and when it drained."""

    def __init__(self, conn):
        self._conn = conn

    def pauseProducing(self):
        self._conn._output_paused()

    def resumeProducing(self):
        self._conn._output_resumed()

    def stopProducing(self):
        self._conn._output_stopped()


class SerialInput:
    """Mix into a Protocol that has ``callLater`` (TimeoutMixin's, or a clock's)."""

    max_backlog = 1024 * 1024
    commands_per_turn = 100  # commands (or input steps) taken per event from the reactor
    closed_mode = None  # the protocol's value of ``_mode`` once closed

    def _init_input(self):
        self._buf = bytearray()  # front deletions are cheap: no copy per command
        self._busy = False
        self._in_process = False
        self._pauses = set()  # why reading from the transport is paused
        self.output_full = False
        self.output_stopped = False  # the connection is gone: writers should stop
        self._drain_waiters = []
        self._watching = False
        self._turn_left = self.commands_per_turn
        self._turn_call = None

    # -- pausing reading

    def _pause_reading(self, why):
        if not self._pauses:
            self.transport.pauseProducing()
        self._pauses.add(why)

    def _resume_reading(self, why):
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if not self._pauses and not self.output_stopped:
            self.transport.resumeProducing()

    # -- output flow

    def _watch_output(self):
        """Call at connection start. Without a transport that takes producers (a test
        transport may not), output is never considered full."""
        try:
            self.transport.registerProducer(_OutputWatch(self), True)
        except (RuntimeError, AttributeError):
            return
        self._watching = True

    def _lose_connection(self):
        """``loseConnection`` (the output still buffered is sent), with the output watch
        removed first: a TLS transport does not shut down while a producer is
        registered. Writers waiting for the output are released and see
        ``output_stopped``."""
        if self._watching:
            self._watching = False
            self.transport.unregisterProducer()
        self._output_stopped()
        self._buf = bytearray()  # input after the close is not answered: do not keep it
        self.transport.loseConnection()

    def _output_paused(self):
        self.output_full = True

    def _output_resumed(self):
        self.output_full = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)
        if self._mode != self.closed_mode:
            self._process()

    def _output_stopped(self):
        self.output_stopped = True
        if self._turn_call is not None:
            if self._turn_call.active():
                self._turn_call.cancel()
            self._turn_call = None
        self.output_full = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def wait_output(self):
        """Deferred firing once the transport takes more output (at once when it does);
        check ``output_stopped`` after it fired."""
        if not self.output_full or self.output_stopped:
            return defer.succeed(None)
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    # -- input

    def _may_process(self):
        """Whether the next buffered command may be taken now. Call it once per command
        taken: it counts them against this turn's share."""
        if self._busy or self.output_full or self._mode == self.closed_mode:
            return False
        if self._turn_left <= 0:
            self._yield_turn()
            return False
        self._turn_left -= 1
        return True

    def _yield_turn(self):
        """Let other connections have the reactor before taking more commands: a client
        pipelining thousands of cheap commands must not hold it for the time they take."""
        if self._turn_call is None:
            self._pause_reading("turn")
            self._turn_call = self.callLater(0, self._next_turn)

    def _next_turn(self):
        self._turn_call = None
        self._turn_left = self.commands_per_turn
        self._resume_reading("turn")
        if self._mode != self.closed_mode:
            self._process()

    def _feed(self, data):
        self._buf += data
        if self._turn_call is None:
            self._turn_left = self.commands_per_turn
        self._process()
        if (self._busy or self.output_full) and len(self._buf) > self.max_backlog:
            self._pause_reading("backlog")

    def _process(self):
        if self._in_process:
            return
        self._in_process = True
        try:
            self._process_buffer()
        finally:
            self._in_process = False
        if not self._busy and not self.output_full:
            self._resume_reading("backlog")

    def _resume(self, _):
        self._busy = False
        if self._turn_call is None:
            self._turn_left = self.commands_per_turn  # a new event: a new turn
        if self._mode != self.closed_mode:
            self._process()
