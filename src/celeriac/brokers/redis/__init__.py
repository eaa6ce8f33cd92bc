"""The Redis engine (``redis://``, ``rediss://``, ``sentinel://``, ``redis+socket://``,
``unix://``): broker, result store and schedule store, wire-compatible with Celery.

:mod:`.client` owns connections and URL parsing, :mod:`.scripts` the broker's
Lua scripts; the broker's consuming half is :mod:`.consume`. Needs ``redis-py``
(``pip install 'celeriac[redis]'``).
"""
