"""Pure retry-delay arithmetic: Celery's exponential backoff with full jitter."""

from __future__ import annotations

import random


def exponential_backoff(factor: float, retries: int, maximum: float,
                        full_jitter: bool = False, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    ``factor * 2 ** retries`` capped at ``maximum``; with ``full_jitter`` a
    uniform draw in ``[0, that]`` (as ``celery.utils.time.get_exponential_backoff_interval``).
    """
    countdown = min(maximum, factor * (2 ** retries))
    if full_jitter:
        countdown = (rng or random).randrange(int(countdown) + 1) if countdown >= 1 else 0.0
    return max(0.0, float(countdown))
