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


def give_to(path, uid, gid):
    """lchown everything under ``path`` (and itself) not owned by uid:gid. Blocking;
    returns the number of entries changed.

    Symbolic links are not followed (lchown, os.walk without followlinks). A file with
    other hard links that the user does not own yet is left alone, with a warning: the
    other link may be a file outside the data directory (say /etc/shadow, linked in by
    the unprivileged user where fs.protected_hardlinks is off), which root must not hand
    over. moxtw's own hard links (COPY of a message) are made by the user and owned by it."""
    changed = 0

    def fix(p):
        nonlocal changed
        st = os.lstat(p)
        if (st.st_uid, st.st_gid) == (uid, gid):
            return
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and st.st_uid != uid:
            log.warn("not giving {path} to the user: it has {n} hard links", path=p, n=st.st_nlink)
            return
        os.lchown(p, uid, gid)
        changed += 1

    fix(os.path.realpath(path))
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                fix(os.path.join(top, name))
            except FileNotFoundError:
                pass
    return changed


def share_config(path, gid):
    """Let group ``gid`` read the config directory ``path``: everything under it gets that
    group and group read (directories also search) permission; owners and other bits
    stay, so the unprivileged server reads its key files (DKIM, TLS) but cannot change
    its configuration. Symbolic links and files with several hard links are skipped, as
    in give_to. Blocking; returns the number of entries changed."""
    changed = 0

    def fix(p):
        nonlocal changed
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        isdir = stat.S_ISDIR(st.st_mode)
        if not isdir and st.st_nlink > 1:
            log.warn("not sharing {path} with the server's group: it has {n} hard links", path=p, n=st.st_nlink)
            return
        want = stat.S_IRGRP | (stat.S_IXGRP if isdir else 0)
        if st.st_gid != gid:
            os.lchown(p, -1, gid)
        elif st.st_mode & want == want:
            return
        os.chmod(p, stat.S_IMODE(st.st_mode) | want)
        changed += 1

    fix(os.path.realpath(path))
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                fix(os.path.join(top, name))
            except FileNotFoundError:
                pass
    return changed


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
