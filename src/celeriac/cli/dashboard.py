"""``celeriac dashboard``: serve the web dashboard (needs ``celeriac[dashboard]``).

``--port``/``--address`` choose where it listens (default 127.0.0.1:5555);
listening anywhere but loopback needs auth (``--auth``, users). ``--history``
overrides ``dashboard_history_url``. ``--hash-password`` reads a password and
prints the hash to put in ``dashboard_users`` or the users file.
"""

from __future__ import annotations

import getpass
import logging
from typing import Any

import click

from ..exceptions import ImproperlyConfigured


def _missing_extra(exc: ImportError) -> click.ClickException:
    return click.ClickException(f"the dashboard needs its extra: pip install "
                                f"'celeriac[dashboard]' ({exc})")


@click.command("dashboard")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", "--host", "host", default="127.0.0.1", show_default=True,
              help="Address to listen on (non-loopback needs auth).")
@click.option("--auth", "auth", default=None,
              help="password | header:NAME (reverse-proxy user header) | none "
                   "(default: password when users are configured, else none).")
@click.option("--users-file", type=click.Path(dir_okay=False), default=None,
              help="Users file: one name:role:hash a line (overrides dashboard_users_file).")
@click.option("--history", "history_url", default=None,
              help="History database URL (overrides dashboard_history_url).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("--hash-password", is_flag=True, help="Print a password hash and exit.")
@click.pass_obj
def dashboard(obj: Any, port: int, host: str, auth: str | None, users_file: str | None,
              history_url: str | None, loglevel: str, hash_password: bool) -> None:
    """Serve the web dashboard and its JSON API."""
    from ..dashboard.auth import check_binding
    from ..dashboard.auth import hash_password as make_hash

    if hash_password:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise click.ClickException("the passwords differ")
        click.echo(make_hash(password))
        return
    try:
        from ..dashboard.config import DashboardConfig
        from ..dashboard.server import Dashboard, serve
    except ImportError as exc:
        raise _missing_extra(exc) from None
    logging.basicConfig(level=loglevel.upper(),
                        format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    config = DashboardConfig.from_app(obj.app, host=host, port=port, auth=auth,
                                      users_file=users_file, history_url=history_url)
    try:
        check_binding(host, config.auth)
    except ImproperlyConfigured as exc:
        raise click.ClickException(str(exc)) from None
    board = Dashboard.open(obj.app, config)
    click.echo(f"celeriac dashboard on http://{host}:{port}/ (history: {board.history.db.url}, "
               f"auth: {config.auth.mode})")
    try:
        serve(board, log_level=loglevel)
    finally:
        board.close()
