"""QueueRunner: the queue's part of the service tree. Opens the queue database, then
runs the QueueService under it; closes the database at stop."""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="moxtw.queue")


class QueueRunner(service.MultiService):
    name = "queue-runner"

    def __init__(self, queue, queue_service):
        super().__init__()
        self.queue = queue
        self.queue_service = queue_service
        self._ready = None

    def startService(self):
        service.Service.startService(self)
        self._ready = self.queue.open()

        def opened(_):
            if self.running:
                self.queue_service.setServiceParent(self)
            return None

        self._ready.addCallback(opened)
        self._ready.addErrback(lambda f: log.failure("opening the queue", f))

    def wait_ready(self):
        """A Deferred that fires once the queue is open."""
        d = defer.Deferred()
        self._ready.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        return d.addBoth(lambda _: self.queue.close())
