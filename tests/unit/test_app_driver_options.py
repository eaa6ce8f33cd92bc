"""Celery settings that configure broker/result drivers reach them as driver options."""

from __future__ import annotations

from celeriac import Celery


def test_broker_use_ssl_and_transport_options_reach_the_broker() -> None:
    app = Celery("opts", broker="redis://127.0.0.1:6379/11")
    app.conf.broker_use_ssl = {"ssl_cert_reqs": "required"}
    app.conf.broker_transport_options = {"global_keyprefix": "p:"}
    options = app._broker_options()
    assert options["ssl"] == {"ssl_cert_reqs": "required"}
    assert options["global_keyprefix"] == "p:"
    assert options["retry_policy"] == app.conf.task_publish_retry_policy


def test_only_redis_result_settings_the_user_set_are_passed() -> None:
    app = Celery("opts", broker="redis://127.0.0.1:6379/11")
    assert app._backend_options() == {}  # Celery's defaults do not override the driver's
    app.conf.update(redis_socket_timeout=7, redis_max_connections=3,
                    redis_backend_use_ssl={"ssl_cert_reqs": "none"})
    app.conf.result_backend_transport_options = {"global_keyprefix": "r:"}
    assert app._backend_options() == {"socket_timeout": 7, "max_connections": 3,
                                      "ssl": {"ssl_cert_reqs": "none"},
                                      "global_keyprefix": "r:"}
