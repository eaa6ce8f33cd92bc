"""Running a worker in the background: ``worker --detach`` and its pidfile.

:func:`check_pidfile` refuses to start when the pidfile names a live process
(a stale one, whose process is gone, is removed); :func:`detach` turns the
process into a daemon (double fork, new session, ``--workdir``, ``--umask``,
standard streams to the log file or ``/dev/null``), as ``celery worker
--detach`` does; :class:`Pidfile` writes the pid and removes the file at exit
if it still holds this process's pid; :func:`drop_privileges` is ``--uid``/``--gid``
(switch to that user and group, with the user's supplementary groups, as Celery's
``maybe_drop_privileges``). :func:`daemon_options` adds Celery's daemonization
options (``--detach``, ``-f``, ``--pidfile``, ``--uid``, ``--gid``, ``--umask``,
``--executable``) to ``beat`` and ``events``; :func:`daemonize` applies them.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def read_pid(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise click.ClickException(f"cannot read pidfile {path}: {exc}") from None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_pidfile(path: str) -> None:
    """Refuse to start when ``path`` names a live process; remove a stale one."""
    pid = read_pid(path)
    if pid is not None and pid != os.getpid() and alive(pid):
        raise click.ClickException(f"Pidfile ({path}) already exists: a worker with pid "
                                   f"{pid} is still running")
    if os.path.exists(path):
        os.unlink(path)


class Pidfile:
    """Holds ``path`` with this process's pid while the worker runs."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def write(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            check_pidfile(self.path)
            fd = os.open(self.path, flags, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    def remove(self) -> None:
        if read_pid(self.path) == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def detach(logfile: str | None, workdir: str | None, umask: int | None) -> None:
    """Become a daemon: the caller returns in the grandchild; the parents exit 0."""
    if logfile:  # fail here, visibly, rather than silently in the daemon
        directory = os.path.dirname(os.path.abspath(logfile))
        os.makedirs(directory, exist_ok=True)
        open(logfile, "a").close()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    if workdir:
        os.chdir(workdir)
    if umask is not None:
        os.umask(umask)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if logfile else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)


def _user(uid: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
    except KeyError:
        raise click.ClickException(f"--uid: no such user: {uid}") from None


def _group_id(gid: str) -> int:
    try:
        return int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
    except KeyError:
        raise click.ClickException(f"--gid: no such group: {gid}") from None


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """Run as ``uid``/``gid`` (names or numbers) from now on: the group first (``--gid``, or
    the user's primary group), the user's supplementary groups, then the user. Refuses
    (exit 1) when the switch fails or could be undone."""
    if not uid and not gid:
        return
    user = _user(uid) if uid else None
    group = _group_id(gid) if gid else (user.pw_gid if user else None)
    try:
        if group is not None and group != os.getgid():
            os.setgid(group)
            os.setegid(group)
        if os.geteuid() == 0 and user is not None:
            os.initgroups(user.pw_name, group if group is not None else user.pw_gid)
        elif os.geteuid() == 0 and group is not None:
            os.setgroups([group])
        if user is not None and user.pw_uid != os.getuid():
            os.setuid(user.pw_uid)
            os.seteuid(user.pw_uid)
    except PermissionError as exc:
        raise click.ClickException(f"cannot drop privileges to uid={uid} gid={gid}: "
                                   f"{exc.strerror}") from None
    if user is not None and user.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise click.ClickException("non-root user able to restore privileges after "
                                       "setuid: refusing to run")


def check_executable(executable: str | None) -> None:
    """``--executable``: only the interpreter running now (celeriac detaches by forking)."""
    if not executable:
        return
    try:
        same = os.path.samefile(executable, sys.executable)
    except OSError:
        same = False
    if not same:
        raise click.UsageError(
            f"--executable {executable}: celeriac detaches by forking the running interpreter "
            f"({sys.executable}); start celeriac with that Python instead "
            f"({executable} -m celeriac ...)")


def daemon_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Celery's daemonization options, passed to the command as ``daemon`` (a dict)."""
    names = ("detach", "logfile", "pidfile", "uid", "gid", "umask", "executable")

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["daemon"] = {name: kwargs.pop(name) for name in names}
        return fn(*args, **kwargs)

    for decorator in (
            click.option("--executable", help="Accepted when it is the running Python."),
            click.option("--umask", help="The process's umask (octal, e.g. 022)."),
            click.option("--gid", help="Drop privileges to this group (name or id)."),
            click.option("--uid", help="Drop privileges to this user (name or id)."),
            click.option("--pidfile", help="Write the pid here (refuses to start if it names "
                                           "a live process)."),
            click.option("-f", "--logfile", help="Log to this file (default: stderr)."),
            click.option("--detach", is_flag=True, help="Run in the background (a daemon).")):
        run = decorator(run)
    return run


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@contextmanager
def daemonize(daemon: dict[str, Any]) -> Iterator[None]:
    """Apply :func:`daemon_options` in Celery's order: pidfile check, privileges, detach
    (or umask), then hold the pidfile while the body runs."""
    check_executable(daemon.get("executable"))
    pidfile = daemon.get("pidfile")
    if pidfile:
        check_pidfile(pidfile)
    drop_privileges(daemon.get("uid"), daemon.get("gid"))
    umask = int(daemon["umask"], 8) if daemon.get("umask") else None
    if daemon.get("detach"):
        detach(daemon.get("logfile"), None, umask)
    elif umask is not None:
        os.umask(umask)
    held = Pidfile(pidfile) if pidfile else None
    if held is not None:
        held.write()
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # exit through the finally below
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if held is not None:
            held.remove()
