"""Integrations with frameworks (``celeriac.contrib.django``); each is an optional extra."""
