"""Dropping root after binding: ``serve`` started as root runs as ``User`` (default
``moxtw``) once its sockets are bound, as mox does.

Started as root, the listeners bind (privileged ports need root), then, unless
``NoFixPermissions`` is set, everything under the data directory not owned by the user is
given to it, and the process switches its groups, gid and uid. ``User = "root"`` keeps
running as root (a warning says so); a user that does not exist stops the start with an
error. Started as another user, there is nothing to drop, and a different ``User`` gets
a warning that it has no effect.
"""

import grp
import os
import pwd
import stat

from twisted.logger import Logger

log = Logger(namespace="moxtw.privileges")

DEFAULT_USER = "moxtw"


class PrivilegeError(Exception):
    """The configured user cannot be switched to."""


def lookup(name):
    """The passwd entry of a user name or numeric uid; PrivilegeError if none."""
    try:
        if name.isdigit():
            return pwd.getpwuid(int(name))
        return pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            f"user {name!r} (User in moxtw.toml, default {DEFAULT_USER!r}) does not exist: "
            f"create it (useradd --system {name}), set User to an existing user, or set "
            f'User = "root" to keep running as root') from None


def _each_entry(path, fix):
    """Call ``fix(st, dir_fd, name, shown)`` for ``path`` itself (name None, dir_fd its
    own) and every entry below it, with the entry's lstat. Walked by directory file
    descriptors (os.fwalk, symlinks not followed): a directory swapped for a symbolic
    link during the walk cannot lead root outside the tree, as path names could.
    Returns the number of entries ``fix`` changed (it returns True for those)."""
    changed = 0
    path = os.path.realpath(path)  # the configured directory may itself be a link
    for top, dirs, files, dfd in os.fwalk(path, follow_symlinks=False):
        if top == path and fix(os.fstat(dfd), dfd, None, top):
            changed += 1
        for name in dirs + files:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if fix(st, dfd, name, os.path.join(top, name)):
                    changed += 1
            except FileNotFoundError:
                pass
    return changed


def _several_links(st, owner, shown):
    """A file with other hard links not owned by ``owner`` is left alone: the other link
    may be a file outside the tree (say /etc/shadow, linked in by the unprivileged user
    where fs.protected_hardlinks is off), which root must not hand over."""
    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and st.st_uid != owner:
        log.warn("not changing {path}: it has {n} hard links", path=shown, n=st.st_nlink)
        return True
    return False


def give_to(path, uid, gid):
    """Give everything under ``path`` (and itself) not owned by uid:gid to them. Blocking;
    returns the number of entries changed. Symbolic links are changed themselves, never
    followed; moxtw's own hard links (COPY of a message) are made by the user and
    already its own."""

    def fix(st, dfd, name, shown):
        if (st.st_uid, st.st_gid) == (uid, gid) or _several_links(st, uid, shown):
            return False
        if name is None:
            os.fchown(dfd, uid, gid)
        else:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        return True

    return _each_entry(path, fix)


def share_config(path, gid):
    """Let group ``gid`` read the config directory ``path``: everything under it gets that
    group and group read (directories also search) permission; owners and other bits
    stay, so the unprivileged server reads its key files (DKIM, TLS) but cannot change
    its configuration. Symbolic links and files with several hard links are skipped.
    Blocking; returns the number of entries changed."""

    def fix(st, dfd, name, shown):
        if stat.S_ISLNK(st.st_mode) or _several_links(st, -1, shown):
            return False
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            return False
        want = stat.S_IRGRP | (stat.S_IXGRP if stat.S_ISDIR(st.st_mode) else 0)
        if st.st_gid == gid and st.st_mode & want == want:
            return False
        # Changed through a descriptor opened without following links, checked to be
        # the entry that was looked at.
        fd = dfd if name is None else os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return False
            os.fchown(fd, -1, gid)
            os.fchmod(fd, stat.S_IMODE(now.st_mode) | want)
        finally:
            if fd != dfd:
                os.close(fd)
        return True

    return _each_entry(path, fix)


def drop(static, data_dir, check_install=True, config_dir=None):
    """Switch to the configured user if running as root. Returns the passwd entry
    switched to, or None. ``check_install``: refuse to go on when the user cannot read
    the Python installation or moxtw."""
    name = static.User or DEFAULT_USER
    if os.getuid() != 0:
        if static.User:
            try:
                other = lookup(static.User).pw_uid != os.getuid()
            except PrivilegeError:
                other = True  # not started as root: nothing is switched, a warning is enough
            if other:
                log.warn("User {user} has no effect: moxtw was not started as root", user=static.User)
        return None
    pw = lookup(name)
    if pw.pw_uid == 0:
        # "root", "0", "00" or any other name for uid 0.
        log.warn("running as root, as configured (User = {user})", user=name)
        return None
    if not static.NoFixPermissions and os.path.isdir(data_dir):
        n = give_to(data_dir, pw.pw_uid, pw.pw_gid)
        if n:
            log.info("gave {count} files under {path} to user {user}", count=n, path=data_dir, user=pw.pw_name)
    if not static.NoFixPermissions and config_dir and os.path.isdir(config_dir):
        n = share_config(config_dir, pw.pw_gid)
        if n:
            log.info("let group {gid} read {count} entries under {path}", gid=pw.pw_gid, count=n, path=config_dir)
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    os.setgroups(groups)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if check_install:
        # Modules are imported as they are first needed: a Python (or moxtw) the user
        # cannot read would fail later, message by message. Python under /root is typical.
        for what, path in (("the Python installation", os.path.dirname(os.__file__)),
                           ("moxtw", os.path.dirname(os.path.abspath(__file__)))):
            if not os.access(path, os.R_OK | os.X_OK):
                raise PrivilegeError(
                    f"user {pw.pw_name} cannot read {what} at {path}: install Python and moxtw "
                    "where the user can read them (not under /root)")
    if os.path.isdir(data_dir) and not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise PrivilegeError(
            f"user {pw.pw_name} cannot use the data directory {data_dir}: let it reach the "
            "directory (its parents need x permission for it)")
    log.info("running as user {user} (uid {uid}, gid {gid}, group {group})", user=pw.pw_name,
             uid=pw.pw_uid, gid=pw.pw_gid, group=_group_name(pw.pw_gid))
    return pw


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
