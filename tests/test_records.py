"""The plain records (``_records.Record``) behave as the dataclasses they replace.

A first download no longer imports ``dataclasses`` (with ``inspect`` under
it, a third of its imports): each record is checked here against a
dataclass with the same fields.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import pytest

from pyvo_dl._exchange import FetchRequest, ObjectInfo
from pyvo_dl._partfile import PartRange, PartState, pause


@dataclasses.dataclass
class _Range:
    start: int
    end: int
    done: int = 0


@dataclasses.dataclass
class _State:
    identity: str
    url: str
    validator: Optional[str]
    etag: Optional[str]
    size: Optional[int]
    last_modified: Optional[str] = None
    checksums: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    parts: List[_Range] = dataclasses.field(default_factory=list)


def test_a_part_range_compares_and_shows_as_a_dataclass() -> None:
    assert PartRange(0, 9) == PartRange(0, 9, 0)
    assert PartRange(0, 9, 1) != PartRange(0, 9, 2)
    assert PartRange(0, 9) != _Range(0, 9)  # another class, as dataclasses compare
    assert repr(PartRange(0, 9, 3)) == repr(_Range(0, 9, 3)).replace("_Range", "PartRange")
    with pytest.raises(TypeError):
        hash(PartRange(0, 9))  # mutable, so unhashable, as a dataclass is


def test_a_state_compares_and_shows_as_a_dataclass() -> None:
    args = ("s3://b/k", "http://h/k", '"e"', '"e"', 10)
    state, twin = PartState(*args), _State(*args)
    assert repr(state) == repr(twin).replace("_State", "PartState")
    assert state == PartState(*args, None, [], [])
    other = PartState(*args, checksums=[("md5", "00")])
    assert other != state
    # Each state its own lists (a dataclass's default_factory).
    state.parts.append(PartRange(0, 9))
    assert PartState(*args).parts == []


def test_a_request_has_the_defaults_and_refuses_an_unknown_option() -> None:
    first = FetchRequest(url="http://h/a", target="a")
    second = FetchRequest("http://h/b", "b", retries=2, headers={"X": "1"})
    assert (first.label, first.identity, first.retries) == ("http://h/a", "http://h/a", 5)
    assert second.retries == 2
    assert second.headers == {"X": "1"}
    first.headers["Y"] = "2"
    assert FetchRequest(url="http://h/c", target="c").headers == {}  # not shared
    assert first.sleep is pause  # the function, not a method bound to the request
    assert first == FetchRequest(url="http://h/a", target="a", headers={"Y": "2"})
    assert "retries=5" in repr(first)
    with pytest.raises(TypeError, match="retrys"):
        FetchRequest(url="http://h/a", target="a", retrys=2)
    assert ObjectInfo(1, {}, "u") == ObjectInfo(1, {}, "u") != ObjectInfo(2, {}, "u")
