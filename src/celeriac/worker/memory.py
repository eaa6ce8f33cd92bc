"""Memory-leak debugging commands: ``memsample``, ``memdump`` and ``objgraph``.

Celery's three inspect commands (``celery/worker/control.py`` with
``celery/utils/debug.py``), with its reply shapes:

* ``memsample`` records the resident set size (RSS) of the process answering
  and returns it as Celery's human string (``"52.316MB"``);
* ``memdump(samples=10)`` returns a text report of the recorded samples (at
  most ``samples`` of them, spread evenly), then the RSS after a full garbage
  collection, and forgets the samples;
* ``objgraph(type="Request", num=200, max_depth=10)`` draws the back
  references of up to ``num`` live objects whose class is named ``type``
  (needs the optional :pypi:`objgraph` package: the ``debug`` extra) and
  returns ``{"filename": path}``.

The process that answers is the node's remote-control process: the worker
process for the solo, threads and asyncio pools, the **supervisor** under
prefork (Celery also measures its main process; the children run the tasks).

RSS comes from :pypi:`psutil` when installed, else from ``/proc/self/statm``
(Linux), so the commands work without psutil there; where neither is
available the replies are Celery's (``None`` and ``"- rss: (psutil not
installed)."``). Celery's ``memdump`` ignores ``samples`` (it always shows 10);
here it is honoured. ``objgraph`` renders a PNG with Graphviz's ``dot`` as
Celery does; without ``dot`` on the PATH it writes the graph's source
(``.dot``, render it elsewhere) instead of Celery's empty PNG.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .remote import RemoteControl

logger = logging.getLogger("celeriac.worker.remote")

_UNITS = ((2 ** 40.0, "TB"), (2 ** 30.0, "GB"), (2 ** 20.0, "MB"), (2 ** 10.0, "KB"),
          (0.0, "b"))
_samples: list[str] = []
_lock = threading.Lock()


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (None when it cannot be read)."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.Process(os.getpid()).memory_info().rss)
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def humanbytes(size: float) -> str:
    """Celery's ``humanbytes``: ``54857728`` -> ``"52.316MB"``."""
    for div, unit in _UNITS:
        if size >= div:
            value = size / div if div else size
            shown: float | str = int(value) if int(value) == value else f"{value:.5}"
            return f"{shown}{unit}"
    return f"{size}b"


def mem_rss() -> str | None:
    size = rss_bytes()
    return None if size is None else humanbytes(size)


def spread(items: list[str], n: int) -> Iterator[str]:
    """Celery's ``sample``: ``n`` items taken at even steps from the start."""
    step = len(items) // n
    index = 0
    for _ in range(n):
        if index >= len(items):
            return
        yield items[index]
        index += step


def memsample(rc: RemoteControl | None = None, **_: Any) -> str | None:
    """Record and return the current RSS (``None`` when it cannot be read)."""
    current = mem_rss()
    if current is not None:
        with _lock:
            _samples.append(current)
    return current


def memdump(rc: RemoteControl | None = None, samples: Any = 10, **_: Any) -> str:
    """The recorded samples (up to ``samples``) and the RSS after ``gc.collect()``."""
    count = max(1, int(samples if samples is not None else 10))
    if rss_bytes() is None:
        return "- rss: (psutil not installed).\n"
    with _lock:
        recorded = list(_samples)
        _samples.clear()
    shown = recorded if len(recorded) <= count else list(spread(recorded, count))
    gc.collect()
    lines = []
    if shown:
        lines.append("- rss (sample):")
        lines += [f"-    > {mem}," for mem in shown]
    lines.append(f"- rss (end): {mem_rss()}.")
    return "\n".join(lines) + "\n"


def objgraph(rc: RemoteControl | None = None, num: Any = 200, max_depth: Any = 10,
             type: Any = "Request", **_: Any) -> dict[str, str]:
    """Draw the back references of up to ``num`` objects of class ``type``."""
    try:
        import objgraph as graphs
    except ImportError:
        raise ImportError("Requires the objgraph library") from None
    name = str(type if type is not None else "Request")
    logger.info("Dumping graph for type %r", name)
    suffix = ".png" if shutil.which("dot") else ".dot"
    with tempfile.NamedTemporaryFile(prefix="cobjg", suffix=suffix, delete=False) as fh:
        filename = fh.name
    objects = graphs.by_type(name)[:int(num if num is not None else 200)]
    graphs.show_backrefs(objects, max_depth=int(max_depth if max_depth is not None else 10),
                         highlight=lambda v: v in objects, filename=filename)
    if os.path.getsize(filename) == 0:
        raise RuntimeError(f"Graphviz's dot could not render {filename}")
    return {"filename": filename}


HANDLERS: dict[str, Callable[..., Any]] = {"memsample": memsample, "memdump": memdump,
                                           "objgraph": objgraph}
