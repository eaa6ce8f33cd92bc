"""Testing helpers (Celery's ``celery.contrib.testing``): a test app, an in-process worker,
enqueue assertions, ``drain`` and a controllable clock.

* :mod:`.app`: ``TestApp`` and ``setup_default_app`` (the app trap);
* :mod:`.worker`: ``start_worker``, a real worker (consumer, pool, leases, results) in a
  thread of the test process;
* :mod:`.tasks`: the ``celery.ping`` task ``start_worker`` checks the worker with;
* :mod:`.enqueued`: what waits in the broker, ``assert_enqueued`` and friends;
* :mod:`.drain`: run everything enqueued to completion in the test's thread;
* :mod:`.clock`: ``TestClock``, the process clock frozen and moved by the test, running
  what became due (delays, retries, beat) as it moves.

The pytest fixtures built on them are :mod:`celeriac.contrib.pytest`; see docs/testing.md.
"""

from __future__ import annotations
