"""File modes of the data directory: private to the user moxtw runs as (issue 10).

The data directory holds credentials (SCRAM keys and CRAM-MD5 states in
``accounts/*/index.db``), messages and their decoded texts, the queue and received
reports. Its files are FILE_MODE (0600) and its directories DIR_MODE (0700):

- ``serve`` and ``localserve`` set UMASK (077) before anything is written, so files that
  libraries create (SQLite's -wal and -shm, temporary files) are private too;
- moxtw's own code creates files and directories with explicit modes (``moxtw.durable``),
  independent of the umask: also commands run next to the server, and ``.tac`` files;
- :class:`FileModesService` repairs the modes of a data directory an older moxtw (or a
  copy, a restore) left readable by others, at start, before the stores open.
"""

import errno
import os
import stat

from twisted.application import service
from twisted.logger import Logger

from moxtw.durable import DIR_MODE, FILE_MODE

log = Logger(namespace="moxtw.filemodes")

UMASK = 0o077  # no group or other permission bits on anything the process creates
_OTHERS = 0o077  # group and other permission bits


def set_umask():
    """Set the process umask to UMASK; returns the previous one."""
    return os.umask(UMASK)


def fix_modes(data_dir):
    """Make everything under ``data_dir`` (and itself) private: directories with group or
    other bits become DIR_MODE, other entries FILE_MODE. Symbolic links are neither
    followed nor changed. Blocking. Returns the number of entries changed."""
    fixed = 0
    # The data directory itself may be a symlink (to another disk): its target counts.
    if _fix(os.path.realpath(data_dir), DIR_MODE):
        fixed += 1
    for top, dirs, files in os.walk(data_dir, onerror=_walk_error):
        # os.walk lists symlinks to directories in dirs, but does not descend into them.
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed meanwhile
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
            if _fix(path, mode, st):
                fixed += 1
    return fixed


def _fix(path, mode, st=None):
    """chmod ``path`` to ``mode`` if it has group or other bits. True if changed."""
    try:
        if st is None:
            st = os.lstat(path)
        if stat.S_IMODE(st.st_mode) & _OTHERS == 0:
            return False
        if not _chmod_nofollow(path, mode):
            return False
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warn("making {path} private: {err}", path=path, err=e)
        return False
    return True


def _chmod_nofollow(path, mode):
    """chmod without following a symlink; False if ``path`` is one (left alone)."""
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except (NotImplementedError, OSError) as e:
        # Without lchmod, Python uses fchmodat(AT_SYMLINK_NOFOLLOW), which older C
        # libraries refuse for every file; the lstat of the caller said no symlink.
        if isinstance(e, OSError) and e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return False
        os.chmod(path, mode)
    return True


def _walk_error(err):
    log.warn("checking file modes under the data directory: {err}", err=err)


class FileModesService(service.Service):
    """Runs :func:`fix_modes` at start, synchronously: it is added before the store,
    queue and report services, so their files are private before they are opened.
    ``fixed`` is the count of entries changed."""

    name = "filemodes"

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.fixed = None

    def startService(self):
        super().startService()
        if not os.path.isdir(self.data_dir):
            self.fixed = 0
            return
        self.fixed = fix_modes(self.data_dir)
        if self.fixed:
            log.info("made {count} files and directories under {path} private (0600/0700)",
                     count=self.fixed, path=self.data_dir)
