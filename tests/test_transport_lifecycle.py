"""The transport's state across forks, interruptions and many calls (issue 11)."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
def test_the_read_buffer_is_private_after_a_fork() -> None:
    """Each thread's read buffer is an anonymous mmap: MAP_SHARED would share it with children.

    Forked from a thread that has downloaded before, a child's downloads
    and the parent's would then read into the same memory.
    """
    from pyvo_dl import _exchange

    view = _exchange.buffer()
    view[:6] = b"parent"
    pid = os.fork()
    if pid == 0:
        _exchange.buffer()[:6] = b"child!"
        os._exit(0)
    os.waitpid(pid, 0)
    assert bytes(view[:6]) == b"parent"
