"""``ResultBase`` and walking a result's tree, as Celery: ``iterdeps()``, ``collect()``
and ``graph``.

A result's ``children`` are the results of the tasks it sent while it ran (the
``trail``, on by default) and a group's are its members. ``collect()`` yields
``(result, value)`` for the result and then each child, breadth first, waiting for
each as ``get()`` does; ``graph`` is the same tree as a :class:`DependencyGraph`
whose ``repr`` is Celery's indented listing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from ..exceptions import IncompleteStream


class DependencyGraph:
    """Each node with the nodes it depends on (Celery's ``celery.utils.graph``, the parts
    a result graph uses)."""

    def __init__(self) -> None:
        self.adjacent: dict[Any, list[Any]] = {}

    def add_arc(self, obj: Any) -> None:
        self.adjacent.setdefault(obj, [])

    def add_edge(self, a: Any, b: Any) -> None:
        self.adjacent.setdefault(a, []).append(b)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.adjacent)

    def __contains__(self, obj: object) -> bool:
        return obj in self.adjacent

    def __getitem__(self, obj: Any) -> list[Any]:
        return self.adjacent[obj]

    def valency_of(self, obj: Any) -> int:
        """The number of nodes reachable from ``obj`` (counted along every path)."""
        if obj not in self.adjacent:
            return 0
        return len(self.adjacent[obj]) + sum(self.valency_of(n) for n in self.adjacent[obj])

    def repr_node(self, obj: Any, level: int = 1) -> str:
        lines = [f"{obj}({self.valency_of(obj)})"]
        for other in self.adjacent.get(obj, ()):
            lines.append("     " * level + f"{other}({self.valency_of(other)})")
            lines.extend(self.repr_node(other, level + 1).split("\n")[1:])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "\n".join(self.repr_node(node) for node in self)


class Traversal:
    """``iterdeps``/``collect``/``graph`` for a result class with ``ready()``, ``get()``
    and ``children``."""

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[Any, Any]]:
        """``(parent, result)`` for this result and its descendants, breadth first; a
        result not ready yet raises ``IncompleteStream`` unless ``intermediate``."""
        stack: deque[tuple[Any, Any]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children or [])
            elif not intermediate:
                raise IncompleteStream()

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, result.get(**kwargs))`` along :meth:`iterdeps`."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def build_graph(self, intermediate: bool = False) -> DependencyGraph:
        graph = DependencyGraph()
        for parent, node in self.iterdeps(intermediate=intermediate):
            graph.add_arc(node)
            if parent is not None:
                graph.add_edge(parent, node)
        return graph

    @cached_property
    def graph(self) -> DependencyGraph:
        return self.build_graph()


class ResultBase(Traversal):
    """Base class of results (Celery's name, for ``isinstance`` checks)."""

    parent: Any = None
