"""The RabbitMQ engine (``amqp://``, ``amqps://``, ``pyamqp://``): a broker wire-compatible
with Celery 5.7 on RabbitMQ, and the ``rpc://`` result store.

:mod:`.connection` owns URLs, connections and retrying; :mod:`.wire` the
message format; :mod:`.topology` what is declared (queues, kombu's delay
layout, dead-letter queues); :mod:`.broker` the broker; :mod:`.admin` dead
letters, counts and the queue catalog. Needs py-amqp
(``pip install 'celeriac[amqp]'``).
"""
