"""Keys and certificates of message signing: loading them, naming them, signing and verifying.

Celery's model, file for file: one RSA private key (``security_key``, PEM,
optionally protected by ``security_key_password``) and its X.509 certificate
(``security_certificate``) sign; a certificate store (``security_cert_store``:
a file, a directory or a glob of PEM certificates) holds every certificate a
receiver trusts. A certificate is named by its *id*, Celery's
``"<issuer attribute values joined by spaces> <serial number>"``; the id is
the key id carried in each signed message, so keys rotate without downtime:
add the new certificate to every store, switch the signers, remove the old one.

Signatures are RSA-PSS with MGF1 and the maximum salt length over
``security_digest`` (``sha256`` by default), exactly as Celery signs.

Every loading failure raises :class:`~celeriac.exceptions.ImproperlyConfigured`
naming the setting and the file (a missing, unreadable, malformed, non-RSA or
expired key or certificate stops start-up); verification failures raise
:class:`~celeriac.exceptions.SecurityError`.
"""

from __future__ import annotations

import datetime
import glob
import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import ImproperlyConfigured, SecurityError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

CRYPTOGRAPHY_MISSING = ("message signing needs the cryptography library: "
                        "pip install 'celeriac[security]'")


def require_cryptography() -> None:
    """Raise ImproperlyConfigured when ``cryptography`` is not installed (it is imported
    only here and below, when signing is configured: ``import celeriac`` stays light)."""
    try:
        importlib.import_module("cryptography.x509")
    except ImportError:
        raise ImproperlyConfigured(CRYPTOGRAPHY_MISSING) from None


def _module(name: str) -> Any:
    require_cryptography()
    return importlib.import_module(f"cryptography.{name}")


def digest_algorithm(name: str, setting: str = "security_digest") -> hashes.HashAlgorithm:
    """``"sha256"`` -> the hash object (Celery's ``get_digest_algorithm``)."""
    hashes = _module("hazmat.primitives.hashes")
    algorithm = getattr(hashes, str(name).upper().replace("-", "_"), None)
    if not (isinstance(algorithm, type) and issubclass(algorithm, hashes.HashAlgorithm)):
        raise ImproperlyConfigured(f"setting {setting}: unknown digest {name!r} "
                                   f"(e.g. 'sha256', 'sha512')")
    try:
        return algorithm()
    except TypeError:  # SHAKE/BLAKE2 need a digest size: not usable with PSS here
        raise ImproperlyConfigured(f"setting {setting}: digest {name!r} needs a size; "
                                   f"use sha256, sha384 or sha512") from None


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    padding = _module("hazmat.primitives.asymmetric.padding")
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.MAX_LENGTH)


def read_file(path: str, setting: str) -> bytes:
    """The bytes of ``path``; ImproperlyConfigured naming ``setting`` when it cannot be read."""
    try:
        with open(os.path.expanduser(str(path)), "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"setting {setting}: cannot read {path!r}: "
                                   f"{exc.strerror or exc}") from None


class PrivateKey:
    """An RSA private key that signs (Celery's ``PrivateKey``)."""

    def __init__(self, pem: bytes, password: str | bytes | None = None,
                 where: str = "security_key") -> None:
        serialization, rsa = _module("hazmat.primitives.serialization"), _module(
            "hazmat.primitives.asymmetric.rsa")
        if isinstance(password, str):
            password = password.encode("utf-8")
        try:
            key = serialization.load_pem_private_key(pem, password=password or None)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"setting {where}: not a usable PEM private key "
                                       f"(or wrong security_key_password): {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ImproperlyConfigured(f"setting {where}: only RSA keys are supported "
                                       f"(as in Celery), got {type(key).__name__}")
        self._key = key

    @classmethod
    def from_file(cls, path: str, password: str | bytes | None = None) -> PrivateKey:
        return cls(read_file(path, "security_key"), password,
                   where=f"security_key ({path})")

    def sign(self, data: bytes, digest: hashes.HashAlgorithm) -> bytes:
        return self._key.sign(data, _pss(digest), digest)

    def matches(self, cert: Certificate) -> bool:
        """True when ``cert`` holds this key's public half."""
        public = self._key.public_key().public_numbers()
        return cert.public_numbers == public


class Certificate:
    """An X.509 certificate with an RSA public key (Celery's ``Certificate``)."""

    def __init__(self, pem: bytes, where: str = "security_certificate") -> None:
        x509, rsa = _module("x509"), _module("hazmat.primitives.asymmetric.rsa")
        try:
            self._cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise ImproperlyConfigured(f"setting {where}: not a PEM certificate: {exc}") from None
        public = self._cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ImproperlyConfigured(f"setting {where}: only RSA certificates are supported "
                                       f"(as in Celery)")
        self._public = public
        self.id = f"{' '.join(str(a.value) for a in self._cert.issuer)} " \
                  f"{self._cert.serial_number}"

    @classmethod
    def from_file(cls, path: str, setting: str = "security_certificate") -> Certificate:
        return cls(read_file(path, setting), where=f"{setting} ({path})")

    @property
    def public_numbers(self) -> rsa.RSAPublicNumbers:
        return self._public.public_numbers()

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self._cert.not_valid_after_utc

    def has_expired(self) -> bool:
        return datetime.datetime.now(datetime.timezone.utc) >= self.not_valid_after

    def verify(self, data: bytes, signature: bytes, digest: hashes.HashAlgorithm) -> None:
        """Raise SecurityError unless ``signature`` is this certificate's over ``data``."""
        if self.has_expired():
            raise SecurityError(f"expired certificate: {self.id!r}")
        invalid = _module("exceptions").InvalidSignature
        try:
            self._public.verify(signature, data, _pss(digest), digest)
        except (invalid, ValueError, TypeError):
            raise SecurityError(f"bad signature (signer {self.id!r})") from None

    def __repr__(self) -> str:
        return f"<Certificate {self.id!r}>"


class CertStore:
    """The certificates a receiver trusts, by id (Celery's ``CertStore``)."""

    def __init__(self, certs: Iterable[Certificate] = ()) -> None:
        self._certs: dict[str, Certificate] = {}
        for cert in certs:
            self.add(cert)

    def add(self, cert: Certificate, where: str = "security_cert_store") -> None:
        if cert.id in self._certs:
            raise ImproperlyConfigured(f"setting {where}: duplicate certificate {cert.id!r}")
        self._certs[cert.id] = cert

    def __getitem__(self, cert_id: str) -> Certificate:
        try:
            return self._certs[cert_id]
        except KeyError:
            raise SecurityError(f"unknown certificate {cert_id!r} (not in the certificate "
                                f"store)") from None

    def __contains__(self, cert_id: object) -> bool:
        return cert_id in self._certs

    def __len__(self) -> int:
        return len(self._certs)

    def ids(self) -> list[str]:
        return sorted(self._certs)

    @classmethod
    def from_path(cls, path: str) -> CertStore:
        """Load every certificate of a file, a directory or a glob (Celery's ``FSCertStore``).

        Nothing found, an unreadable or malformed file, or an expired
        certificate is an ImproperlyConfigured naming ``security_cert_store``.
        """
        require_cryptography()
        pattern = os.path.expanduser(str(path))
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not files:
            raise ImproperlyConfigured(f"setting security_cert_store: no certificate found "
                                       f"at {path!r}")
        store = cls()
        for file in files:
            cert = Certificate.from_file(file, "security_cert_store")
            if cert.has_expired():
                raise ImproperlyConfigured(f"setting security_cert_store: certificate "
                                           f"{cert.id!r} in {file!r} expired on "
                                           f"{cert.not_valid_after:%Y-%m-%d}")
            store.add(cert, f"security_cert_store ({file})")
        return store
