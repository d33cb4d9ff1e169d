"""Input handling shared by the SMTP and IMAP protocols: buffered bytes, one command at a
time, in order.

A protocol appends received bytes with ``_feed`` and implements ``_process_buffer``,
which consumes commands from ``self._buf`` while ``self._busy`` is false. A command
whose handler returns a Deferred sets ``_busy``; ``_resume`` (added as the handler's last
callback) continues with the next buffered command. Handlers whose Deferred has already
fired continue the same loop instead of recursing, and the transport is paused while a
large backlog waits behind a slow command.
"""


class SerialInput:
    max_backlog = 1024 * 1024
    closed_mode = None  # the protocol's value of ``_mode`` once closed

    def _init_input(self):
        self._buf = b""
        self._busy = False
        self._in_process = False
        self._paused = False

    def _feed(self, data):
        self._buf += data
        self._process()
        if self._busy and len(self._buf) > self.max_backlog and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _process(self):
        if self._in_process:
            return
        self._in_process = True
        try:
            self._process_buffer()
        finally:
            self._in_process = False
        if not self._busy and self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def _resume(self, _):
        self._busy = False
        if self._mode != self.closed_mode:
            self._process()
