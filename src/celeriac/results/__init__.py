"""Task results: reading them (``AsyncResult``, ``GroupResult``) and storing them.

:mod:`.async_result` and :mod:`.group` are what callers hold;
:mod:`.store` is the result store interface every engine's store implements
(``celeriac.brokers.<engine>.results``); :mod:`.meta` is Celery's result
metadata format they all share, and the safe rebuilding of stored exceptions.
``celeriac.result`` re-exports the caller's side at Celery's path.
"""
