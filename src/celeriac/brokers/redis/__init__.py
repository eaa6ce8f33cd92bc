"""The Redis engine (``redis://``, ``rediss://``, ``sentinel://``, ``redis+socket://``,
``unix://``): broker, result store and schedule store, wire-compatible with Celery.

:mod:`.client` owns connections, URL parsing and retrying; :mod:`.broker` the
broker (key layout at its top), :mod:`.scripts` its Lua scripts,
:mod:`.bookkeeping` reads of its own keys; :mod:`.results` the result store;
:mod:`.beat_store` the schedule store. Needs ``redis-py``
(``pip install 'celeriac[redis]'``).
"""
