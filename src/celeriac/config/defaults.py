"""The settings celeriac uses, with Celery's defaults (and celeriac's own where it differs).

:data:`USED` lists every setting some part of celeriac reads. Settings
accepted for compatibility without effect are in :mod:`.accepted`, apart, so
setting one can be reported; :data:`DEFAULTS` is both, the defaults
``app.conf`` starts from. Deliberate default differences (``task_acks_late``
is true) are documented in docs/differences.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .accepted import ACCEPTED_ONLY

#: Celery's ``task_publish_retry_policy`` default: every bounded retry starts from it.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                        "interval_max": 1}

#: Settings celeriac reads, with their defaults.
USED: dict[str, Any] = {
    # broker
    "broker_url": None,
    "broker_transport_options": {},
    "broker_use_ssl": False,
    "broker_publish_timeout": 5.0,
    # RabbitMQ queue declarations (x-max-priority, x-queue-type), as Celery declares them
    "task_queue_max_priority": None,
    "task_default_queue_type": "classic",
    "task_queues": None,
    # results
    "result_backend": None,
    "result_backend_transport_options": {},
    "result_expires": timedelta(days=1),
    "result_extended": False,
    "result_failure_expires": None,
    # rpc:// results sent with delivery_mode 2 (Celery's default: transient)
    "result_persistent": None,
    # the Django cache alias of result_backend = 'django-cache' (celeriac.contrib.django)
    "cache_backend": None,
    # tasks
    "task_serializer": "json",
    "task_annotations": None,
    "accept_content": ["json"],
    "task_compression": None,
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_routes": None,
    "task_inherit_parent_priority": False,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    # eager: build the message a publish would (arguments a real publish cannot serialize
    # raise the same error); False runs eagerly with any Python object, as Celery does
    "task_eager_check_serializable": True,
    "task_acks_late": True,
    "task_acks_on_failure_or_timeout": True,
    "task_acks_on_failure": None,  # Celery 5.7's: failures other than time limits
    "task_acks_on_timeout": None,  # Celery 5.7's: a hard time limit (worker/timeouts.py)
    "task_reject_on_worker_lost": None,
    "task_retry_on_worker_lost": False,  # Celery 5.7's (worker/lost.py)
    "task_track_started": False,
    "task_ignore_result": False,
    "task_store_errors_even_if_ignored": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_rate_limit": None,
    "task_publish_retry": True,
    "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
    # celeriac: larger messages are refused at publish and dead-lettered by workers
    "task_message_max_size": 16 * 1024 * 1024,
    # message signing (Celery's, celeriac.security; docs/security.md)
    "security_key": None,
    "security_key_password": None,
    "security_certificate": None,
    "security_cert_store": None,
    "security_digest": "sha256",
    # celeriac's sealed messages: headers and body signed, replay window, encryption
    "security_seal": False,
    "security_replay_window": 3600.0,
    "security_encryption_keys": None,
    # worker
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 1,
    # celeriac: adaptive prefetch, seconds of expected work leased beyond the free slots
    # (used while worker_prefetch_multiplier is not set explicitly)
    "worker_prefetch_budget": 0.1,
    # Celery 5.5's: lease only what free slots can start (no prefetch at all)
    "worker_disable_prefetch": False,
    "worker_pool": "prefork",
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,
    "worker_send_task_events": False,
    "worker_hijack_root_logger": True,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_soft_shutdown_timeout": 30.0,
    "worker_pool_start_method": "fork",
    "worker_disable_rate_limits": False,
    # monitoring: events, remote control, metrics (docs/monitoring.md)
    "task_send_sent_event": False,
    "worker_enable_remote_control": True,
    "worker_pool_restarts": False,
    "event_exchange": "celeryev",
    "control_exchange": "celery",
    # celeriac: target max time-to-start per queue, e.g. {"email_queue": "30s"}
    "task_queue_targets": {},
    # celeriac: leases, heartbeats, poison messages
    "worker_lease_seconds": 30.0,
    "worker_heartbeat_interval": None,
    "worker_max_redeliveries": 3,
    # beat
    "beat_schedule": {},
    "beat_scheduler": None,
    "beat_max_loop_interval": 0,
    "beat_cron_starting_deadline": None,
    "beat_schedule_store": None,
    "beat_redis_key_prefix": None,
    "beat_lease_seconds": 10.0,
    "beat_claim_timeout": 30.0,
    "beat_fire_retention": 3600.0,
    # celeriac.contrib.django: the transactional outbox (docs/django.md)
    "task_outbox": False,
    "task_outbox_database": "default",
    "task_outbox_retention": 86400.0,
    "task_outbox_claim_timeout": 30.0,
    "worker_outbox_relay": True,
    # the dashboard (celeriac.dashboard, docs/dashboard.md)
    "dashboard_history_url": None,
    "dashboard_history_retention": 7 * 86400.0,
    "dashboard_history_max_tasks": None,
    "dashboard_auth": None,
    "dashboard_users": {},
    "dashboard_users_file": None,
    "dashboard_secret_key": None,
    # time
    "timezone": None,
    "enable_utc": True,
    # modules
    "imports": (),
    "include": (),
    # redis tuning
    "redis_max_connections": None,
    "redis_socket_timeout": 120.0,
    "redis_socket_connect_timeout": None,
    "redis_socket_keepalive": False,
    "redis_backend_use_ssl": None,
}

#: Every setting ``app.conf`` knows: the used ones, then those accepted without effect.
DEFAULTS: dict[str, Any] = {**ACCEPTED_ONLY, **USED}
