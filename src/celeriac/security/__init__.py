"""Message security: Celery's ``auth`` serializer, celeriac's sealed messages, size limits.

* :mod:`.keys`: keys, certificates and the certificate store (RSA-PSS, as Celery).
* :mod:`.auth`: Celery's ``auth`` serializer (signed bodies; interoperates with Celery 5.7).
* :mod:`.seal`: celeriac's sealed messages (headers and body signed, replays refused,
  optional encryption) and :mod:`.replay`, the nonces seen, kept beside the broker.
* :mod:`.setup`: ``app.setup_security()`` and the start-up checks of the settings.

The worker's intake (``celeriac.worker.job``) checks size, signature or seal before
decoding anything; ``task_message_max_size`` is enforced by :mod:`celeriac.messages`.

``cryptography`` is an optional extra (``pip install 'celeriac[security]'``);
it is imported only when signing is configured. See docs/security.md.
"""

from __future__ import annotations

from .setup import Security, check_settings, setup_security, uses_auth

__all__ = ["Security", "check_settings", "setup_security", "uses_auth"]
