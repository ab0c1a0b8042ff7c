"""Named tuples without the collections module.

``collections`` (with ``keyword``, ``operator`` and ``reprlib``) costs more
to import than a small download takes (SPEC §6), and the library needs
only two small records of it (``ContentRange``, ``Checksum``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["named_record"]


def _field(index: int, name: str) -> property:
    return property(lambda self: tuple.__getitem__(self, index), doc=f"Field {index}: {name}")


def named_record(typename: str, field_names: list[str], module: str) -> type:
    """A tuple subclass that behaves as ``collections.namedtuple(typename, field_names)``.

    Fields by name and position, keyword construction, ``_fields``,
    ``_replace``, ``_asdict``, ``_make``, the same repr, equality and
    hashing of a tuple, no ``__dict__``, and pickling.

    Parameters
    ----------
    typename : str
        The class name, as its repr shows it.
    field_names : list of str
        The fields, in order.
    module : str
        The module the class is found in (for pickling): ``__name__``.

    Returns
    -------
    type

    Examples
    --------
    >>> Point = named_record("Point", ["x", "y"], __name__)
    >>> p = Point(1, y=2)
    >>> p, p.y, p._replace(x=0), tuple(p)
    (Point(x=1, y=2), 2, Point(x=0, y=2), (1, 2))
    """
    fields = tuple(field_names)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(fields):
            raise TypeError(f"{typename} takes {len(fields)} arguments, got {len(args)}")
        values = list(args)
        for name in fields[len(args) :]:
            if name not in kwargs:
                raise TypeError(f"{typename} is missing the argument {name!r}")
            values.append(kwargs.pop(name))
        if kwargs:
            raise TypeError(f"{typename} got unexpected arguments {sorted(kwargs)}")
        return tuple.__new__(cls, values)

    def __repr__(self: tuple[Any, ...]) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self))
        return f"{type(self).__name__}({inner})"

    def _replace(self: tuple[Any, ...], **changes: Any) -> Any:
        values = [changes.pop(name, value) for name, value in zip(fields, self)]
        if changes:
            raise ValueError(f"got unexpected field names {sorted(changes)}")
        return type(self)(*values)

    def _asdict(self: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(fields, self))

    def _make(cls: type, iterable: Any) -> Any:
        return cls(*iterable)

    def __getnewargs__(self: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self)

    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": module,
        "__doc__": f"{typename}({', '.join(fields)})",
        "_fields": fields,
        "__new__": __new__,
        "__repr__": __repr__,
        "_replace": _replace,
        "_asdict": _asdict,
        "_make": classmethod(_make),
        "__getnewargs__": __getnewargs__,
    }
    for index, name in enumerate(fields):
        namespace[name] = _field(index, name)
    return type(typename, (tuple,), namespace)
