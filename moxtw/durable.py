"""Durable file writing: the fsync dance every part of moxtw that promises "on disk" uses.

Also the modes of what moxtw creates: files and directories under the data directory
hold credentials and mail, so they are private to the user moxtw runs as (issue 10),
whatever the umask (``moxtw.filemodes`` sets one and repairs older files).
"""

import os
import tempfile

FILE_MODE = 0o600  # private files: owner read/write only
DIR_MODE = 0o700  # private directories


def fsync_dir(path):
    """fsync a directory, making renames and new entries in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fd(fd, data):
    """Write all of ``data`` (bytes, or a tuple of bytes written one after the other) to
    ``fd`` and fsync it."""
    for piece in data if isinstance(data, tuple) else (data,):
        view = memoryview(piece)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    os.fsync(fd)


def make_dirs(path, mode=DIR_MODE):
    """Like ``os.makedirs(path, exist_ok=True)``, but every directory it creates gets
    ``mode``: os.makedirs gives it only to the last one."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_dirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def create_file(path, mode=FILE_MODE):
    """Create ``path`` empty with ``mode`` unless it exists. For files that others
    create (SQLite databases) and would give the umask's mode."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, mode))


def write_new(path, data, mode=FILE_MODE):
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
    rename, fsync of the directory. ``mode`` defaults to the existing file's, else
    FILE_MODE."""
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = FILE_MODE
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
