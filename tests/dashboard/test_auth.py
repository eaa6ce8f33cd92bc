"""Dashboard security: every route needs credentials, roles, CSRF, binding rules, hashes."""

from __future__ import annotations

import base64
import re

import pytest
from starlette.routing import Mount, Route

from celeriac.dashboard.auth import (
    AuthConfig,
    User,
    check_binding,
    check_password,
    hash_password,
    load_users,
)
from celeriac.dashboard.server import PUBLIC, create_app
from celeriac.exceptions import ImproperlyConfigured

from .conftest import PASSWORDS, csrf_of


def basic(name: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{PASSWORDS[name]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_refuses_anonymous_requests(secured) -> None:  # type: ignore[no-untyped-def]
    board, client = secured
    app = create_app(board, start_ingestor=False)
    checked = 0
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        if any(route.path == p or (p.endswith("/") and route.path.startswith(p))
               for p in PUBLIC):
            continue
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            response = client.request(method, concrete(route.path))
            assert response.status_code in (401, 403), (method, route.path,
                                                         response.status_code)
            checked += 1
    assert checked >= 35
    # the public ones are only these
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/login").status_code == 200


def test_read_only_role_sees_but_cannot_act(secured) -> None:  # type: ignore[no-untyped-def]
    _, client = secured
    assert client.get("/api/tasks", headers=basic("reader")).status_code == 200
    response = client.post("/api/tasks/x/revoke", headers=basic("reader"), json={})
    assert response.status_code == 403
    assert client.post("/api/tasks/x/revoke", headers=basic("admin"), json={}).status_code == 200


def test_wrong_password_is_refused(secured) -> None:  # type: ignore[no-untyped-def]
    _, client = secured
    bad = base64.b64encode(b"admin:nope").decode()
    assert client.get("/api/tasks", headers={"Authorization": f"Basic {bad}"}
                      ).status_code == 401


def test_login_form_session_and_csrf(secured) -> None:  # type: ignore[no-untyped-def]
    _, client = secured
    assert client.get("/tasks").status_code == 401
    token = csrf_of(client)
    wrong = client.post("/login", data={"username": "admin", "password": "x",
                                        "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong user name" in wrong.text
    ok = client.post("/login", data={"username": "admin", "password": PASSWORDS["admin"],
                                     "csrf_token": token, "next": "/tasks"},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/tasks"
    page = client.get("/tasks")
    assert page.status_code == 200
    session_token = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert session_token != token  # rotated at login
    # a state-changing request without the token, or with a wrong one, is refused
    assert client.post("/tasks/x/revoke").status_code == 403
    assert client.post("/tasks/x/revoke", headers={"X-CSRF-Token": "forged"}
                       ).status_code == 403
    assert client.post("/tasks/x/revoke", data={"csrf_token": token}).status_code == 403
    assert client.post("/tasks/x/revoke", headers={"X-CSRF-Token": session_token}
                       ).status_code == 200
    assert client.post("/tasks/x/revoke", data={"csrf_token": session_token}
                       ).status_code == 200
    # Basic credentials without a JSON body are not enough either (a form post cross-site)
    assert client.post("/api/tasks/x/revoke", headers=basic("admin"),
                       data={"a": "b"}).status_code == 403
    client.post("/logout", data={"csrf_token": session_token})
    assert client.get("/tasks").status_code == 401


def test_proxy_header_mode(celery_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from .conftest import board_for

    celery_app.conf.dashboard_users = {"ops": {"role": "admin"}}
    board = board_for(celery_app, tmp_path, auth="header:X-Remote-User")
    with TestClient(create_app(board, start_ingestor=False)) as client:
        assert client.get("/api/tasks").status_code == 401
        assert client.get("/api/tasks", headers={"X-Remote-User": "guest"}).status_code == 200
        assert client.post("/api/tasks/x/revoke", headers={"X-Remote-User": "guest"},
                           json={}).status_code == 403
        csrf = csrf_of(client)
        assert client.post("/tasks/x/revoke", headers={"X-Remote-User": "ops",
                                                       "X-CSRF-Token": csrf}).status_code == 200
    board.close()


def test_binding_needs_auth_off_loopback() -> None:
    none = AuthConfig.build("none", {})
    check_binding("127.0.0.1", none)
    check_binding("::1", none)
    check_binding("localhost", none)
    for host in ("0.0.0.0", "192.0.2.10", "example.org", "::"):
        with pytest.raises(ImproperlyConfigured, match="without authentication"):
            check_binding(host, none)
    users = {"a": User("a", "admin", hash_password("pw"))}
    check_binding("0.0.0.0", AuthConfig.build(None, users))


def test_password_hashes_and_user_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and check_password("correct horse", stored)
    assert not check_password("wrong", stored) and not check_password("x", "garbage")
    with pytest.raises(ImproperlyConfigured, match="plain-text passwords are refused"):
        load_users({"a": {"password": "hunter2", "role": "admin"}}, None)
    with pytest.raises(ImproperlyConfigured, match="role 'root'"):
        load_users({"a": {"password": stored, "role": "root"}}, None)
    users_file = tmp_path / "users"
    users_file.write_text(f"# comment\nbob:read:{stored}\n")
    assert load_users({}, str(users_file))["bob"].role == "read"
    users_file.write_text("broken line\n")
    with pytest.raises(ImproperlyConfigured, match="line 1"):
        load_users({}, str(users_file))
    with pytest.raises(ImproperlyConfigured, match="needs users with passwords"):
        AuthConfig.build("password", {})
    with pytest.raises(ImproperlyConfigured, match="dashboard_auth"):
        AuthConfig.build("kerberos", {})
