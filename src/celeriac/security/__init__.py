"""Message security: Celery's ``auth`` serializer, celeriac's sealed messages, size limits.

* :mod:`.keys`: keys, certificates and the certificate store (RSA-PSS, as Celery).
* :mod:`.auth`: Celery's ``auth`` serializer (signed bodies; interoperates with Celery 5.7).
* :mod:`.setup`: ``app.setup_security()`` and the start-up checks of the settings.
* :mod:`.intake`: what a worker checks before decoding a message (size, signature).

``cryptography`` is an optional extra (``pip install 'celeriac[security]'``);
it is imported only when signing is configured. See docs/security.md.
"""

from __future__ import annotations

from .setup import Security, check_settings, setup_security, uses_auth

__all__ = ["Security", "check_settings", "setup_security", "uses_auth"]
