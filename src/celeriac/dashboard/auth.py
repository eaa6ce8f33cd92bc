"""Who may use the dashboard: users, password hashes, roles, the proxy header, CSRF.

Three modes (``--auth`` / ``dashboard_auth``):

``password``
    users from ``dashboard_users`` (``{"alice": {"password": HASH, "role": "admin"}}``)
    and/or ``dashboard_users_file`` (one ``name:role:HASH`` a line, ``#`` comments);
    the browser logs in with a form (a signed session cookie), programs send HTTP
    Basic credentials. Hashes are scrypt (``celeriac dashboard --hash-password``
    prints one); a plain-text password is refused at start-up.
``header:NAME``
    a reverse proxy that authenticated the user sets header ``NAME``; the user's
    role comes from ``dashboard_users`` (a ``role`` without a password), else
    ``read``. Only safe behind a proxy that strips the header from clients.
``none``
    no login, everyone is admin: refused unless the dashboard listens on a
    loopback address only.

Roles: ``read`` sees every page; ``admin`` also acts. Every state-changing
request needs the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``), except a Basic-authenticated request with a JSON body,
which a browser cannot forge cross-site.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import ImproperlyConfigured

ROLES = ("read", "admin")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), what the users settings hold."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return (f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def is_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == "scrypt"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash (constant time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(base64.b64decode(digest)))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _user(name: str, role: str, password_hash: str | None, where: str) -> User:
    if role not in ROLES:
        raise ImproperlyConfigured(f"{where}: user {name!r} has role {role!r} "
                                   f"(use one of {', '.join(ROLES)})")
    if password_hash is not None and not is_hash(password_hash):
        raise ImproperlyConfigured(
            f"{where}: the password of {name!r} is not a scrypt hash (make one with "
            f"`celeriac dashboard --hash-password`); plain-text passwords are refused")
    return User(name, role, password_hash)


def load_users(users: Mapping[str, Any] | None, users_file: str | None) -> dict[str, User]:
    """Users of ``dashboard_users`` and ``dashboard_users_file`` (the file wins)."""
    found: dict[str, User] = {}
    if users is not None and not isinstance(users, Mapping):
        raise ImproperlyConfigured("dashboard_users must be a dict: name -> "
                                   "{'password': HASH, 'role': 'admin'|'read'}")
    for name, spec in (users or {}).items():
        if isinstance(spec, str):
            spec = {"password": spec}
        if not isinstance(spec, Mapping):
            raise ImproperlyConfigured(f"dashboard_users[{name!r}] must be a dict")
        found[str(name)] = _user(str(name), str(spec.get("role", "read")),
                                 spec.get("password"), "dashboard_users")
    if users_file:
        try:
            with open(users_file, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise ImproperlyConfigured(f"dashboard_users_file: cannot read {users_file}: "
                                       f"{exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":", 2)
            if len(parts) != 3:
                raise ImproperlyConfigured(f"dashboard_users_file line {number}: expected "
                                           f"name:role:hash")
            found[parts[0]] = _user(parts[0], parts[1], parts[2],
                                    f"dashboard_users_file line {number}")
    return found


@dataclass(frozen=True)
class AuthConfig:
    """The resolved auth settings of one dashboard."""

    mode: str                      # password | header | none
    users: Mapping[str, User]
    header: str | None = None

    @classmethod
    def build(cls, auth: str | None, users: Mapping[str, User]) -> AuthConfig:
        spec = (auth or ("password" if users else "none")).strip()
        if spec == "password":
            if not any(u.password_hash for u in users.values()):
                raise ImproperlyConfigured("--auth password needs users with passwords "
                                           "(dashboard_users or dashboard_users_file)")
            return cls("password", users)
        if spec.startswith("header:") and spec[7:].strip():
            return cls("header", users, spec[7:].strip())
        if spec == "none":
            return cls("none", users)
        raise ImproperlyConfigured(f"dashboard_auth: {spec!r} is not password, header:NAME "
                                   f"or none")

    def login(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None or not user.password_hash:
            check_password(password, hash_password("x", b"0" * 16))  # same time either way
            return None
        return user if check_password(password, user.password_hash) else None

    def from_header(self, name: str) -> User:
        known = self.users.get(name)
        return User(name, known.role if known else "read")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, auth: AuthConfig) -> None:
    """Refuse to serve without auth on anything but a loopback address."""
    if auth.mode == "none" and not is_loopback(host):
        raise ImproperlyConfigured(
            f"refusing to serve the dashboard on {host} without authentication: configure "
            f"users (dashboard_users / --users-file) or --auth header:NAME, or bind to "
            f"127.0.0.1")


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)
