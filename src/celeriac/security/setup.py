"""``app.setup_security()`` and the start-up checks of the ``security_*`` settings.

:func:`setup_security` is Celery's: it requires ``task_serializer = 'auth'``
and ``accept_content = ['auth']``, loads ``security_key`` (with
``security_key_password``), ``security_certificate`` and
``security_cert_store``, switches off decoding with every serializer but
``allowed_serializers`` (``json`` by default) and registers the ``auth``
serializer. As in Celery the registration is process-wide.

Where celeriac does more (docs/security.md, docs/differences.md):

* every failure names the setting and the file (a missing or unreadable file,
  a wrong password, a key that does not match its certificate, an expired
  certificate, an empty store) and is raised by ``setup_security()`` itself;
* a worker whose settings ask for ``auth`` calls it at start-up, so a worker
  never runs unsigned because the call was forgotten, and a configured
  ``security_*`` file is checked at start-up even when nothing signs;
* ``digest`` defaults to the ``security_digest`` setting (Celery's method
  passes ``'sha256'``, so the setting is ignored there);
* settings that cannot be honoured are refused (by :mod:`celeriac.config.validation`):
  ``event_serializer`` or ``result_serializer`` set to ``'auth'``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..config.validation import validate
from ..exceptions import ImproperlyConfigured, SecurityWarning
from .auth import AUTH_CONTENT_TYPE, AuthSerializer
from .keys import Certificate, CertStore, PrivateKey, digest_algorithm, require_cryptography

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.security")

SETTING_MISSING = ("setup_security() signs and verifies task messages only with "
                   "task_serializer = 'auth' and accept_content = ['auth'] (there is no point "
                   "in signing messages that are not verified); got task_serializer={!r}, "
                   "accept_content={!r}")
FILES = ("security_key", "security_certificate", "security_cert_store")
_lock = threading.Lock()


@dataclass(frozen=True)
class Security:
    """What ``setup_security()`` set up (``app.security``)."""

    serializer: AuthSerializer
    key_path: str
    cert_path: str
    store_path: str
    digest: str

    @property
    def signer(self) -> str:
        """The id of the certificate messages are signed with (the key id on the wire)."""
        assert self.serializer.cert is not None
        return self.serializer.cert.id


def _is_auth(value: Any) -> bool:
    return value in serialization.AUTH_NAMES


def uses_auth(conf: Any) -> bool:
    """True when the settings ask for signed task messages."""
    accept = conf.get("accept_content") or ()
    return _is_auth(conf.get("task_serializer")) or any(_is_auth(a) for a in accept)


def setup_security(app: Celery, allowed_serializers: Iterable[str] | None = None,
                   key: str | None = None, key_password: str | bytes | None = None,
                   cert: str | None = None, store: str | None = None,
                   digest: str | None = None, serializer: str = "json") -> Security:
    """Load the keys and register the ``auth`` serializer (see the module docstring)."""
    require_cryptography()
    conf = app.conf
    accept = list(conf.accept_content or ())
    if not _is_auth(conf.task_serializer) or len(accept) != 1 or not _is_auth(accept[0]):
        raise ImproperlyConfigured(SETTING_MISSING.format(conf.task_serializer, accept))
    key = key or conf.security_key
    key_password = key_password or conf.security_key_password
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    digest = digest or conf.security_digest or "sha256"
    missing = [name for name, value in zip(FILES, (key, cert, store), strict=True) if not value]
    if missing:
        raise ImproperlyConfigured("the auth serializer needs the settings " +
                                   ", ".join(missing) + " (a PEM private key, its "
                                   "certificate, and the certificates to trust)")
    algorithm = digest_algorithm(digest)
    private = PrivateKey.from_file(str(key), key_password)
    certificate = Certificate.from_file(str(cert))
    if not private.matches(certificate):
        raise ImproperlyConfigured(f"setting security_certificate: {cert!r} is not the "
                                   f"certificate of security_key {key!r}")
    if certificate.has_expired():
        raise ImproperlyConfigured(f"setting security_certificate: {certificate.id!r} "
                                   f"expired on {certificate.not_valid_after:%Y-%m-%d}")
    trusted = CertStore.from_path(str(store))
    if certificate.id not in trusted:
        logger.warning("The signing certificate %r is not in security_cert_store %r: "
                       "workers using that store refuse this process's messages",
                       certificate.id, store)
    auth = AuthSerializer(private, certificate, trusted, algorithm, serializer,
                          allowed_serializers if allowed_serializers is not None
                          else ("json",))
    with _lock:
        serialization.disable_insecure_serializers(
            allowed_serializers if allowed_serializers is not None else ("json",))
        serialization.register(auth.as_serializer())
    security = Security(auth, str(key), str(cert), str(store), digest)
    vars(app)["_security"] = security  # read back by check_settings (worker start-up)
    return security


def check_settings(app: Celery) -> Security | None:
    """Start-up checks of a worker: refuse what cannot be honoured, set up ``auth`` when
    the settings ask for it, and check configured key files even when nothing signs."""
    conf = app.conf
    validate(conf)  # event_serializer/result_serializer = 'auth' are refused there
    if uses_auth(conf):
        current = getattr(app, "_security", None)
        return current if current is not None else setup_security(app)
    configured = [name for name in FILES if conf.get(name)]
    if configured:
        for name in configured:
            path = conf.get(name)
            if name == "security_cert_store":
                CertStore.from_path(str(path))
            elif name == "security_key":
                PrivateKey.from_file(str(path), conf.get("security_key_password"))
            else:
                Certificate.from_file(str(path))
        message = (f"{', '.join(configured)} set but task_serializer is not 'auth': task "
                   f"messages are neither signed nor verified (set task_serializer='auth' "
                   f"and accept_content=['auth'])")
        warnings.warn(message, SecurityWarning, stacklevel=2)
        logger.warning(message)
    return None


__all__ = ["AUTH_CONTENT_TYPE", "Security", "check_settings", "setup_security", "uses_auth"]
