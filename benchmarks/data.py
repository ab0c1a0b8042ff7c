"""The data the servers serve: random bytes, made fresh in a temp folder.

Random, so that nothing compresses or deduplicates, and each small file
different from the others, so that a file written under the wrong name is
caught by its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Tuple

MIB = 1024 * 1024
_CHUNK = 16 * MIB


@dataclass
class Data:
    """The served folder and what is in it.

    Attributes
    ----------
    folder : str
        Served at ``/bench/``; a key ``k`` is ``folder/k``.
    files : dict
        Key to ``(size, sha256 hex)``.
    small : list of str
        The keys of the small files, in order.
    """

    folder: str
    files: Dict[str, Tuple[int, str]] = field(default_factory=dict)
    small: List[str] = field(default_factory=list)

    def expected(self, key: str, name: str | None = None) -> Dict[str, Tuple[int, str]]:
        """``{output name: (size, sha256)}`` for one key (named after its base name)."""
        return {name or os.path.basename(key): self.files[key]}

    def expected_small(self, count: int) -> Dict[str, Tuple[int, str]]:
        """``{base name: (size, sha256)}`` for the first ``count`` small files."""
        return {os.path.basename(key): self.files[key] for key in self.small[:count]}


def size_label(size: int) -> str:
    """``256M``, ``1G``, ``16K``: a size in the binary units of the table."""
    for unit, scale in (("G", 1024 * MIB), ("M", MIB), ("K", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def write_random(path: str, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(_CHUNK, remaining))
            digest.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def make_data(folder: str, big_sizes: List[int], small_count: int, small_size: int) -> Data:
    """Make the files ``f<size>.bin`` and ``small/f0000.bin`` ... in ``folder``."""
    data = Data(folder)
    os.makedirs(os.path.join(folder, "small"), exist_ok=True)
    for size in big_sizes:
        key = f"f{size_label(size)}.bin"
        data.files[key] = (size, write_random(os.path.join(folder, key), size))
    for i in range(small_count):
        key = f"small/f{i:04d}.bin"
        data.files[key] = (small_size, write_random(os.path.join(folder, key), small_size))
        data.small.append(key)
    return data
