"""Prometheus metrics (the ``monitoring`` extra: ``prometheus-client``).

:mod:`.exporter` builds them from the cluster's events and the broker's queue
statistics; ``celeriac exporter`` serves them for the whole cluster and
``celeriac worker --metrics-port`` for one node (see docs/monitoring.md).
"""
