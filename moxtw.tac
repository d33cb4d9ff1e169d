# A custom moxtw deployment: run with  twistd -ny moxtw.tac
#
# It builds the same service tree as `twistd moxtw serve`, through the public
# moxtw.app.makeService, and may add or replace services. Set MOXTW_CONFIG to the
# configuration directory (default: ./config).
import os

from twisted.application import service
from twisted.logger import ILogObserver

from moxtw import app
from moxtw import config as mconfig
from moxtw import log as mlog

config = mconfig.load(os.environ.get("MOXTW_CONFIG", "config"))

application = service.Application("moxtw")
# logfmt lines on standard output, with LogLevel/PackageLogLevels from moxtw.toml.
application.setComponent(ILogObserver, mlog.twistd_observer())

# Started as root: runs as the config's User (default moxtw) once the ports are bound.
root = app.makeService(config, switch_user=True)
root.setServiceParent(application)

# Example of an addition: a service of your own next to moxtw's, e.g.
#   from twisted.application import internet
#   internet.TimerService(3600, my_hourly_job, root.store).setServiceParent(application)
