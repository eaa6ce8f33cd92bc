"""Small functional helpers users import from Celery's ``celery.utils.functional``.

``chunks``, ``maybe_list``, ``is_list``, ``first``, ``firstmethod``, ``padlist``,
``mattrgetter``, ``uniq``, ``lookahead``, ``regen``, ``dictfilter``, ``lazy``,
``mlazy``, ``maybe_evaluate``, ``memoize``, ``LRUCache``, ``noop``, ``pass1``,
``maybe``, ``arity_greater``, ``fun_takes_argument``, ``fun_accepts_kwargs``,
``seq_concat_item`` and ``seq_concat_seq`` behave as Celery 5.7's (some of which
Celery takes from kombu).
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from functools import wraps
from itertools import islice, tee, zip_longest
from typing import Any

__all__ = ("LRUCache", "is_list", "maybe_list", "memoize", "mlazy", "noop", "first",
           "firstmethod", "chunks", "padlist", "mattrgetter", "uniq", "regen",
           "dictfilter", "lazy", "maybe_evaluate", "maybe", "fun_accepts_kwargs",
           "fun_takes_argument", "arity_greater", "pass1", "lookahead",
           "seq_concat_item", "seq_concat_seq")


def noop(*args: Any, **kwargs: Any) -> None:
    """Takes any arguments and does nothing."""


def pass1(arg: Any, *args: Any, **kwargs: Any) -> Any:
    """The first positional argument."""
    return arg


class lazy:
    """A call kept for later: ``lazy(fun, *args)()`` (or ``.evaluate()``) calls it,
    each time."""

    def __init__(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._fun, self._args, self._kwargs = fun, args, kwargs

    def __call__(self) -> Any:
        return self.evaluate()

    def evaluate(self) -> Any:
        return self._fun(*self._args, **self._kwargs)

    def __str__(self) -> str:
        return str(self())

    def __repr__(self) -> str:
        return repr(self())

    def __eq__(self, other: object) -> bool:
        return bool(self() == other)

    def __ne__(self, other: object) -> bool:
        return bool(self() != other)

    __hash__ = None  # type: ignore[assignment]


class mlazy(lazy):
    """A lazy call evaluated once; later evaluations return the first value."""

    evaluated = False
    _value: Any = None

    def evaluate(self) -> Any:
        if not self.evaluated:
            self._value = super().evaluate()
            self.evaluated = True
        return self._value


def maybe_evaluate(value: Any) -> Any:
    """The value of a :class:`lazy`; anything else as is."""
    return value.evaluate() if isinstance(value, lazy) else value


def is_list(obj: Any, scalars: tuple[type, ...] = (Mapping, str),
            iters: tuple[type, ...] = (Iterable,)) -> bool:
    """True for an iterable that is not a mapping or a string."""
    return isinstance(obj, iters) and not isinstance(obj, scalars or ())


def maybe_list(obj: Any, scalars: tuple[type, ...] = (Mapping, str)) -> Any:
    """``obj`` itself when it is a list (see :func:`is_list`), else ``[obj]``; None stays
    None."""
    return None if obj is None else obj if is_list(obj, scalars) else [obj]


def dictfilter(d: Mapping[Any, Any] | None = None, **kw: Any) -> dict[Any, Any]:
    """The items of ``d`` (and ``kw``) whose value is not None."""
    items = kw if d is None else (dict(d, **kw) if kw else d)
    return {k: v for k, v in items.items() if v is not None}


def first(predicate: Callable[[Any], Any] | None, it: Iterable[Any]) -> Any:
    """The first item ``predicate`` accepts (not None without one); lazy items are
    evaluated; None when there is none."""
    for value in it:
        value = maybe_evaluate(value)
        if (predicate(value) if predicate is not None else value is not None):
            return value
    return None


def firstmethod(method: str, on_call: Callable[..., Any] | None = None
                ) -> Callable[..., Any]:
    """A function that calls ``method`` on each object of a list in turn and returns the
    first reply that is not None."""
    def matcher(it: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        for obj in it:
            meth = getattr(maybe_evaluate(obj), method, None)
            if meth is None:
                continue
            reply = on_call(meth, *args, **kwargs) if on_call else meth(*args, **kwargs)
            if reply is not None:
                return reply
        return None
    return matcher


def chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` items from the iterator ``it`` (the last may be shorter). As in
    Celery, pass an iterator: a list repeats its items."""
    for item in it:
        yield [item, *islice(it, n - 1)]


def padlist(container: list[Any], size: int, default: Any = None) -> list[Any]:
    """``container`` cut or padded with ``default`` to ``size`` items."""
    return list(container)[:size] + [default] * (size - len(container))


def mattrgetter(*attrs: str) -> Callable[[Any], dict[str, Any]]:
    """A function returning ``{attr: value}`` of an object, None for missing ones."""
    return lambda obj: {attr: getattr(obj, attr, None) for attr in attrs}


def uniq(it: Iterable[Any]) -> Iterator[Any]:
    """The items of ``it`` without repeats, in order."""
    seen: set[Any] = set()
    return (seen.add(obj) or obj for obj in it if obj not in seen)  # type: ignore[func-returns-value]


def lookahead(it: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Pairs of (item, next item); the last one's next is None."""
    a, b = tee(it)
    next(b, None)
    return zip_longest(a, b)


class _regen(list):  # a list, so json encodes it
    """An iterator read once, on first use, then kept: it can be iterated again."""

    def __init__(self, it: Iterable[Any]) -> None:
        super().__init__()
        self._it: Iterator[Any] | None = iter(it)
        self._lock = threading.Lock()

    def _fill(self) -> None:
        with self._lock:
            if self._it is not None:
                list.extend(self, self._it)
                self._it = None

    def __reduce__(self) -> Any:
        self._fill()
        return list, (list(self),)

    def map(self, func: Callable[[Any], Any]) -> None:
        self._fill()
        self[:] = [func(item) for item in list.__iter__(self)]

    def __iter__(self) -> Iterator[Any]:
        self._fill()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return list.__len__(self)

    def __getitem__(self, index: Any) -> Any:
        self._fill()
        return list.__getitem__(self, index)

    def __bool__(self) -> bool:
        self._fill()
        return list.__len__(self) > 0

    def __repr__(self) -> str:
        self._fill()
        return list.__repr__(self)

    def __eq__(self, other: object) -> bool:
        self._fill()
        return list.__eq__(self, other)

    __hash__ = None

    @property
    def data(self) -> list[Any]:
        self._fill()
        return list(list.__iter__(self))


def regen(it: Iterable[Any]) -> Any:
    """A list or tuple as is; any other iterable as a list read from it on first use
    (a generator can then be iterated again)."""
    return it if isinstance(it, (list, tuple)) else _regen(it)


class LRUCache(MutableMapping[Any, Any]):
    """A thread-safe mapping keeping at most ``limit`` items, dropping the least
    recently used."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.mutex = threading.RLock()
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def __getitem__(self, key: Any) -> Any:
        with self.mutex:
            value = self.data[key]
            self.data.move_to_end(key)
            return value

    def __setitem__(self, key: Any, value: Any) -> None:
        with self.mutex:
            self.data[key] = value
            self.data.move_to_end(key)
            while self.limit is not None and len(self.data) > self.limit:
                self.data.popitem(last=False)

    def __delitem__(self, key: Any) -> None:
        with self.mutex:
            del self.data[key]

    def __iter__(self) -> Iterator[Any]:
        with self.mutex:
            return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def incr(self, key: Any, delta: int = 1) -> int:
        with self.mutex:
            value = int(self[key]) + delta
            self[key] = str(value)
            return value

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        with self.mutex:
            return self.data.popitem(last)


def memoize(maxsize: int | None = None, keyfun: Callable[[Any, Any], Any] | None = None,
            Cache: type[LRUCache] = LRUCache) -> Callable[[Callable[..., Any]], Any]:
    """A decorator caching results by arguments (at most ``maxsize``); the function gains
    ``clear()``, ``hits`` and ``misses``."""
    def decorate(fun: Callable[..., Any]) -> Any:
        cache = Cache(limit=maxsize)

        @wraps(fun)
        def memoized(*args: Any, **kwargs: Any) -> Any:
            key = keyfun(args, kwargs) if keyfun else (
                (*args, object, *sorted(kwargs.items())) if kwargs else args)
            try:
                with cache.mutex:
                    value = cache[key]
            except KeyError:
                value = fun(*args, **kwargs)
                memoized.misses += 1  # type: ignore[attr-defined]
                cache[key] = value
            else:
                memoized.hits += 1  # type: ignore[attr-defined]
            return value

        def clear() -> None:
            memoized.hits = memoized.misses = 0  # type: ignore[attr-defined]
            cache.clear()

        memoized.hits = memoized.misses = 0  # type: ignore[attr-defined]
        memoized.clear = clear  # type: ignore[attr-defined]
        memoized.Cache = Cache  # type: ignore[attr-defined]
        return memoized
    return decorate


def maybe(typ: Callable[[Any], Any], val: Any) -> Any:
    """``typ(val)``, or None for None."""
    return typ(val) if val is not None else val


def arity_greater(fun: Callable[..., Any], n: int) -> bool:
    spec = inspect.getfullargspec(fun)
    return bool(spec.varargs or len(spec.args) > n)


def fun_takes_argument(name: str, fun: Callable[..., Any], position: int | None = None
                       ) -> bool:
    """True if ``fun`` takes ``name`` (or has a ``position``-th argument), or takes any."""
    spec = inspect.getfullargspec(fun)
    return bool(spec.varkw or spec.varargs
                or (len(spec.args) >= position if position else name in spec.args))


def fun_accepts_kwargs(fun: Callable[..., Any]) -> bool:
    """True if ``fun`` takes ``**kwargs``."""
    code = getattr(fun, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fun).parameters.values())


def seq_concat_item(seq: Any, item: Any) -> Any:
    """A copy of ``seq`` with ``item`` added (a tuple stays a tuple)."""
    return (*seq, item) if isinstance(seq, tuple) else seq + [item]  # noqa: RUF005


def seq_concat_seq(a: Any, b: Any) -> Any:
    """``a + b`` as the type of the longer one."""
    prefer = type(max([a, b], key=len))
    return (a if isinstance(a, prefer) else prefer(a)) + (
        b if isinstance(b, prefer) else prefer(b))
