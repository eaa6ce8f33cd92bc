"""``app.setup_security()`` and the start-up checks of the ``security_*`` settings.

Two modes: Celery's ``auth`` serializer (:mod:`.auth`) and celeriac's sealed
messages (``security_seal = True``, :mod:`.seal`); both use the same key,
certificate and certificate store settings.

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
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..config.validation import validate
from ..exceptions import ImproperlyConfigured, SecurityWarning
from .auth import AUTH_CONTENT_TYPE, AuthSerializer
from .keys import Certificate, CertStore, PrivateKey, digest_algorithm, require_cryptography
from .replay import guard_for
from .seal import SEAL_HEADER, Sealer, load_fernet

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..messages import Message

logger = logging.getLogger("celeriac.security")

SETTING_MISSING = ("setup_security() signs and verifies task messages only with "
                   "task_serializer = 'auth' and accept_content = ['auth'] (there is no point "
                   "in signing messages that are not verified); got task_serializer={!r}, "
                   "accept_content={!r}")
FILES = ("security_key", "security_certificate", "security_cert_store")
_lock = threading.Lock()


@dataclass
class Security:
    """What ``setup_security()`` set up (``app._security``)."""

    serializer: AuthSerializer
    key_path: str
    cert_path: str
    store_path: str
    digest: str
    #: sealed mode (``security_seal``): seals what is published, opens what is received
    sealer: Sealer | None = None
    broker_url: str = ""
    broker_options: dict[str, Any] = field(default_factory=dict)
    _guard: Any = None
    _guard_pid: int = 0

    @property
    def signer(self) -> str:
        """The id of the certificate messages are signed with (the key id on the wire)."""
        assert self.serializer.cert is not None
        return self.serializer.cert.id

    def guard(self) -> Any:
        """This process's replay guard (None when ``security_replay_window`` is 0)."""
        if self.sealer is None or self.sealer.window <= 0:
            return None
        if self._guard is None or self._guard_pid != os.getpid():
            self._guard, self._guard_pid = guard_for(self.broker_url,
                                                     self.broker_options), os.getpid()
        return self._guard


def _is_auth(value: Any) -> bool:
    return value in serialization.AUTH_NAMES


def uses_auth(conf: Any) -> bool:
    """True when the settings ask for signed task messages (``auth`` or sealed)."""
    if conf.get("security_seal") or _is_auth(conf.get("task_serializer")):
        return True
    return any(_is_auth(name) for name in conf.get("accept_content") or ())


def _check_mode(conf: Any) -> bool:
    """True for sealed mode; ImproperlyConfigured when the serializers do not fit the mode."""
    accept = list(conf.accept_content or ())
    if conf.get("security_seal"):
        if _is_auth(conf.task_serializer) or any(_is_auth(a) for a in accept):
            raise ImproperlyConfigured(
                "setting security_seal: sealed messages replace the auth serializer (the "
                "seal signs headers and body); use task_serializer='json' and "
                "accept_content=['json'] with it, or 'auth' without it")
        return True
    if conf.get("security_encryption_keys"):
        raise ImproperlyConfigured("setting security_encryption_keys: encryption needs "
                                   "security_seal = True")
    if not _is_auth(conf.task_serializer) or len(accept) != 1 or not _is_auth(accept[0]):
        raise ImproperlyConfigured(SETTING_MISSING.format(conf.task_serializer, accept))
    return False


def setup_security(app: Celery, allowed_serializers: Iterable[str] | None = None,
                   key: str | None = None, key_password: str | bytes | None = None,
                   cert: str | None = None, store: str | None = None,
                   digest: str | None = None, serializer: str = "json") -> Security:
    """Load the keys and register the ``auth`` serializer, or set up sealed messages
    (``security_seal``); see the module docstring."""
    require_cryptography()
    conf = app.conf
    sealed = _check_mode(conf)
    key = key or conf.security_key
    key_password = key_password or conf.security_key_password
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    digest = digest or conf.security_digest or "sha256"
    missing = [name for name, value in zip(FILES, (key, cert, store), strict=True) if not value]
    if missing:
        raise ImproperlyConfigured("message signing needs the settings " +
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
    allowed = allowed_serializers if allowed_serializers is not None else ("json",)
    auth = AuthSerializer(private, certificate, trusted, algorithm, serializer, allowed)
    security = Security(auth, str(key), str(cert), str(store), digest)
    if sealed:
        keys = conf.get("security_encryption_keys")
        security.sealer = Sealer(private, certificate, trusted, algorithm,
                                 float(conf.get("security_replay_window") or 0),
                                 load_fernet(keys) if keys else None)
        security.broker_url = app.broker_url
        security.broker_options = app._broker_options()
        if security.sealer.window > 0:
            security.guard()  # an unknown broker fails here, at start-up
    with _lock:
        serialization.disable_insecure_serializers(allowed)
        if not sealed:
            serialization.register(auth.as_serializer())
    vars(app)["_security"] = security  # read back by check_settings and publishing
    return security


def security_of(app: Celery) -> Security | None:
    """The app's security set-up; set up now when the settings ask for it (so a producer
    never publishes unsigned because ``setup_security()`` was not called)."""
    current: Security | None = getattr(app, "_security", None)
    if current is None and uses_auth(app.conf):
        current = setup_security(app)
    return current


def readable(app: Celery, message: Message) -> Message:
    """``message`` with a sealed, encrypted body decrypted (no replay check: for a message
    this worker already accepted, e.g. to follow its errbacks after a hard time limit)."""
    security: Security | None = getattr(app, "_security", None)
    seal = message.headers.get(SEAL_HEADER) if isinstance(message.headers, dict) else None
    if security is None or security.sealer is None or not isinstance(seal, dict) \
            or seal.get("enc") is None:
        return message
    return security.sealer.decrypt(message, seal)


def check_settings(app: Celery) -> Security | None:
    """Start-up checks of a worker: refuse what cannot be honoured, set up ``auth`` when
    the settings ask for it, and check configured key files even when nothing signs."""
    conf = app.conf
    validate(conf)  # event_serializer/result_serializer = 'auth' are refused there
    if uses_auth(conf):
        return security_of(app)
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


__all__ = ["AUTH_CONTENT_TYPE", "Security", "check_settings", "security_of", "setup_security",
           "uses_auth"]
