"""Durable file writing: the fsync dance every part of moxtw that promises "on disk" uses."""

import os
import tempfile


def fsync_dir(path):
    """fsync a directory, making renames and new entries in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fd(fd, data):
    """Write all of ``data`` to ``fd`` and fsync it."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fsync(fd)


def write_new(path, data, mode=0o600):
    """Create ``path`` (must not exist) with ``data``, fsynced. Removed again on error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_fd(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def write_atomic(path, data, mode=None):
    """Replace ``path`` with ``data`` (bytes): temporary file in the same directory, fsync,
    rename, fsync of the directory. ``mode`` defaults to the existing file's, else 0644."""
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # not subject to the umask
        write_fd(fd, data)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
