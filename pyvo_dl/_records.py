"""Typed records without the dataclasses module.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis`` and
``tokenize``), and its decorator compiles code for each class: about a
third of what the first download of a process imports (SPEC §6). The
request and the ``.part`` state are plain classes with typed attributes
and an ``__init__`` of their own; :class:`Record` gives them the equality
and the ``repr`` a dataclass would.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Tuple


class Record:
    """Equality and ``repr`` by the fields named in ``_fields``, as a dataclass has them.

    Equal when of the same class with equal fields; unhashable, since the
    fields may change (a dataclass that is not frozen is too).

    Examples
    --------
    >>> class Point(Record):
    ...     _fields = ("x", "y")
    ...     def __init__(self, x: int, y: int) -> None:
    ...         self.x, self.y = x, y
    >>> Point(1, 2) == Point(1, 2), Point(1, 2)
    (True, Point(x=1, y=2))
    """

    _fields: ClassVar[Tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"
