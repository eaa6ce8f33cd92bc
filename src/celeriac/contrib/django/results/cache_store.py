"""``result_backend = 'django-cache'``: results in Django's cache framework.

:class:`CacheResultStore` keeps Celery's key/value layout in the cache alias
``cache_backend`` (``CELERY_CACHE_BACKEND``, default ``'default'``); the chord
join uses the cache's atomic ``add``/``incr`` (atomic on memcached, Redis and the
local-memory cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from celeriac.app import state as _state
from celeriac.results.store import (
    ResultStore,
    check_chord_args,
    decode_meta,
    encode_meta,
    is_revoked,
)


class CacheResultStore(ResultStore):
    """``django-cache``: Celery's key/value result layout in a Django cache."""

    schemes: ClassVar[tuple[str, ...]] = ("django-cache",)

    def __init__(self, url: str = "django-cache", *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        alias = self.options.get("cache")
        if not alias:
            alias = _state.get_current_app().conf.get("cache_backend")
        self.alias = str(alias or "default")

    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    @staticmethod
    def _timeout(expires: float | None) -> float | None:
        return None if expires is None or expires <= 0 else float(expires)

    def _get_raw(self, key: str) -> str | None:
        value = self.cache.get(key)
        return None if value is None else str(value)

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        found = self.cache.get_many(keys) if keys else {}
        return [found.get(k) for k in keys]

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        self.cache.set(key, value, self._timeout(expires))

    def _delete_raw(self, key: str) -> None:
        self.cache.delete(key)

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """One ``get_many`` for the REVOKED check, one ``set_many`` for the writes. A cache
        has no conditional write, so a revoke racing a result write may lose (documented)."""
        guarded = [key for key, _, guard in rows if guard]
        found = self.cache.get_many(guarded) if guarded else {}
        written = [not (guard and is_revoked(found.get(key))) for key, _, guard in rows]
        data = {key: value for (key, value, _), ok in zip(rows, written, strict=True) if ok}
        if data:
            self.cache.set_many(data, self._timeout(expires))
        return written

    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        check_chord_args(index, size)
        cache, timeout = self.cache, self._timeout(self.expires)
        if not cache.add(f"celeriac-chord-{group_id}-{index}", encode_meta(meta), timeout):
            return None
        counter = f"celeriac-chord-{group_id}"
        cache.add(counter, 0, timeout)
        cache.add(f"{counter}-size", size, timeout)
        if cache.incr(counter) != size:
            return None
        keys = [f"celeriac-chord-{group_id}-{i}" for i in range(size)]
        found = cache.get_many(keys)
        return [decode_meta(found.get(k)) or {} for k in keys]

    def chord_clear(self, group_id: str) -> None:
        counter = f"celeriac-chord-{group_id}"
        size = int(self.cache.get(f"{counter}-size") or 0)
        self.cache.delete_many([counter, f"{counter}-size",
                                *(f"{counter}-{i}" for i in range(size))])
