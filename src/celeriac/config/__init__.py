"""Settings: what ``app.conf`` holds and where each setting is defined.

:mod:`.defaults` has the settings celeriac reads (``USED``), :mod:`.accepted`
the Celery settings accepted without effect (``ACCEPTED_ONLY``),
:mod:`.old_names` Celery's pre-4.0 names; :mod:`.settings` is ``app.conf``
and reading settings from objects; :mod:`.validation` the start-up checks.
"""

from __future__ import annotations

from .accepted import ACCEPTED_ONLY
from .defaults import DEFAULTS, PUBLISH_RETRY_POLICY, USED
from .old_names import OLD_NAMES
from .settings import Settings, constructor_settings, from_mapping, seconds
from .validation import validate

__all__ = ["ACCEPTED_ONLY", "DEFAULTS", "OLD_NAMES", "PUBLISH_RETRY_POLICY", "USED", "Settings",
           "constructor_settings", "from_mapping", "seconds", "validate"]
