"""download_many: many sources at once, one result per item (SPEC §2.3).

Items run on a thread pool by default; the standard-library transport is
shared, so connections to one host are kept alive and reused across items,
and at most ``max_per_host`` run against one host at a time. Any
``concurrent.futures.Executor`` can run the items instead (a process pool,
``dask.distributed.Client.get_executor()``, ``mpi4py.futures.MPIPoolExecutor``).
"""

from __future__ import annotations

import os
import threading

from . import _names, _progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Sequence, Tuple, Union

    Item = Union[str, Tuple[str, Any]]


def _source_host(source: str) -> str:
    if source.lower().startswith("s3://"):
        return "s3://" + source[5:].split("/", 1)[0]
    import urllib.parse  # only with max_per_host below workers

    return (urllib.parse.urlsplit(source).netloc or "").lower()


def _default_name(source: str) -> str | None:
    if source.lower().startswith("s3://"):
        from ._s3url import parse_s3_uri

        return _names.filename_from_s3_key(parse_s3_uri(source).key)
    return _names.filename_from_url(source)


def plan_items(items: Iterable[Item], dest_dir: str) -> list[tuple[str, Any]]:
    """Turn the caller's items into ``(source, target path or error)`` pairs.

    A target is the pair's ``local_path`` (a relative one under
    ``dest_dir``) or a name derived from the source; two items with the same
    target make the second an error rather than a race.
    """
    planned: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            source, local = (item, None) if isinstance(item, str) else _pair(item, index)
        except ValueError as exc:
            planned.append((repr(item), exc))
            continue
        if isinstance(local, Exception):
            planned.append((str(source), local))  # refused while listing a prefix
            continue
        try:
            target = _target_for(source, local, dest_dir)
        except ValueError as exc:
            planned.append((str(source), exc))
            continue
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            planned.append(
                (
                    source,
                    ValueError(f"{source!r} would be written to {target}, as item {seen[key]} is"),
                )
            )
            continue
        seen[key] = index
        planned.append((source, target))
    return planned


def _pair(item: Any, index: int) -> tuple[str, Any]:
    try:
        source, local = item
    except (TypeError, ValueError):
        raise ValueError(
            f"item {index} must be a URL, an s3:// URI or a (source, local_path) pair, not {item!r}"
        ) from None
    return source, local


def _target_for(source: Any, local: Any, dest_dir: str) -> str:
    if not isinstance(source, str):
        raise ValueError(f"source must be a URL or s3:// URI string, not {source!r}")
    if local is not None:
        path = os.fspath(local)
        return path if os.path.isabs(path) else os.path.join(dest_dir, path)
    name = _default_name(source)
    if not name:
        raise ValueError(
            f"cannot derive a file name from {source!r}; give a (source, local_path) pair"
        )
    return os.path.join(dest_dir, name)


def run_one(download: Callable[..., str], source: str, target: str, kwargs: dict[str, Any]) -> str:
    """Download one item (module-level, so process pools can pickle it).

    ``download`` is the public ``pyvo_dl.download``, passed in by the caller
    so that this module does not import the entry-point row above it.
    """
    return download(source, target, **kwargs)


class _HostLimits:
    """At most ``limit`` downloads at once per host."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.Semaphore] = {}

    def for_host(self, host: str) -> threading.Semaphore:
        with self._lock:
            semaphore = self._semaphores.get(host)
            if semaphore is None:
                semaphore = self._semaphores[host] = threading.Semaphore(self._limit)
            return semaphore


def download_many(
    download: Callable[..., str],
    items: Iterable[Item],
    dest_dir: str | os.PathLike[str] = ".",
    *,
    workers: int = 8,
    max_per_host: int | None = None,
    executor: Any = None,
    progress: Any = True,
    **kwargs: Any,
) -> list[Any]:
    """Run ``pyvo_dl.download_many`` (its parameters are documented there).

    ``download`` is ``pyvo_dl.download``, which downloads one source to one
    path; it is passed in so that this module does not import the public
    entry row above it.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, not {workers!r}")
    if "checksum" in kwargs:
        raise ValueError("checksum= names one file; give it per call of http_download/aws_download")
    per_host = workers if max_per_host is None else max_per_host
    if isinstance(per_host, bool) or not isinstance(per_host, int) or per_host < 1:
        raise ValueError(f"max_per_host must be a whole number >= 1, not {max_per_host!r}")
    planned = plan_items(items, os.fspath(dest_dir))
    results: list[Any] = [
        target if isinstance(target, Exception) else None for _, target in planned
    ]
    todo = [i for i, (_, target) in enumerate(planned) if not isinstance(target, Exception)]
    display = _progress.make_aggregate(progress, len(planned))
    display.files_done(len(planned) - len(todo), failed=len(planned) - len(todo))
    if executor is not None:
        _run_on_executor(executor, download, planned, todo, results, kwargs, display)
    else:
        _run_threads(download, planned, todo, results, kwargs, display, workers, per_host)
    display.close()
    return results


def _record(results: list[Any], index: int, outcome: Any, display: Any) -> None:
    results[index] = outcome
    display.files_done(1, failed=int(isinstance(outcome, BaseException)))


def _run_threads(
    download: Callable[..., str],
    planned: Sequence[tuple[str, Any]],
    todo: list[int],
    results: list[Any],
    kwargs: dict[str, Any],
    display: Any,
    workers: int,
    per_host: int,
) -> None:
    # Plain threads taking the next item from a shared iterator: a future,
    # a work item and a semaphore per item cost more than a small download.
    limits = _HostLimits(per_host) if per_host < workers else None
    stop = threading.Event()
    lock = threading.Lock()
    pending = iter(todo)
    crashed: list[BaseException] = []

    def download_one(index: int) -> Any:
        source, target = planned[index]
        item_kwargs = dict(kwargs, progress=display.child())
        if limits is None:
            return run_one(download, source, target, item_kwargs)
        with limits.for_host(_source_host(source)):
            if stop.is_set():
                return None
            return run_one(download, source, target, item_kwargs)

    def work() -> None:
        while not stop.is_set():
            with lock:
                index = next(pending, None)
            if index is None:
                return
            try:
                outcome: Any = download_one(index)
            except Exception as exc:  # each item's exception is its result
                outcome = exc
            except BaseException as exc:  # not an item's failure: stop the batch
                stop.set()
                crashed.append(exc)
                return
            if outcome is not None:
                _record(results, index, outcome, display)

    threads = [
        threading.Thread(target=work, name=f"pyvo_dl-{n}")
        for n in range(min(workers, max(1, len(todo))))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        # Ctrl-C: nothing new starts; downloads under way finish, and one
        # cut short by a second Ctrl-C leaves a .part the next call resumes.
        stop.set()
        for thread in threads:
            thread.join()
        raise
    if crashed:
        raise crashed[0]


def _run_on_executor(
    executor: Any,
    download: Callable[..., str],
    planned: Sequence[tuple[str, Any]],
    todo: list[int],
    results: list[Any],
    kwargs: dict[str, Any],
    display: Any,
) -> None:
    from concurrent.futures import as_completed

    quiet = dict(kwargs, progress=False)  # a bar cannot cross processes
    futures = {
        executor.submit(run_one, download, planned[index][0], planned[index][1], quiet): index
        for index in todo
    }
    for future in as_completed(futures):
        try:
            outcome = future.result()
        except Exception as exc:  # each item's exception is its result
            outcome = exc
        _record(results, futures[future], outcome, display)
