"""The RabbitMQ engine (``amqp://``, ``amqps://``, ``pyamqp://``): a broker wire-compatible
with Celery 5.7 on RabbitMQ, and the ``rpc://`` result store.

:mod:`.connection` owns URLs, connections and retrying; :mod:`.wire` the
message format; :mod:`.topology` what is declared (queues, kombu's delay
layout, dead-letter queues); :mod:`.broker` the broker (:mod:`.consuming` its
consumers and leases, :mod:`.holding` deliveries kept past ``consumer_timeout``);
:mod:`.admin` dead letters, counts and the queue catalog; :mod:`.broadcast`
events and remote control; :mod:`.rpc` the ``rpc://`` result store. Needs py-amqp
(``pip install 'celeriac[amqp]'``).
"""
