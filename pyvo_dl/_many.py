"""download_many: many sources at once, one result per item (SPEC §2.3).

Items run on a thread pool by default; the standard-library transport is
shared, so connections to one host are kept alive and reused across items,
and at most ``max_per_host`` run against one host at a time. Any
``concurrent.futures.Executor`` can run the items instead (a process pool,
``dask.distributed.Client.get_executor()``, ``mpi4py.futures.MPIPoolExecutor``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from . import _items, _names, _partfile, _progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Final, Iterable, Sequence

#: download_many's own threads, unless told otherwise.
DEFAULT_WORKERS = 8
#: Seconds a stop (SIGTERM, Ctrl-C) gives the downloads under way to end at
#: their next chunk, keeping their .part, before the call gives up on them.
STOP_GRACE = 10.0
#: 128 + the signal's number: what shells and schedulers report.
EXIT_TERMINATED = 128 + 15


class Terminated(SystemExit):
    """SIGTERM arrived (a scheduler's time limit, ``scancel``, ``kill``): exit 143.

    A ``SystemExit``, so that a script that does not catch it ends with
    the status a SIGTERM gives, after its ``finally`` blocks, its
    downloads stopped cleanly (``.part`` kept, locks released).

    Parameters
    ----------
    message : str
        What was interrupted, in one line.
    """

    def __init__(self, message: str = "terminated by SIGTERM") -> None:
        super().__init__(EXIT_TERMINATED)
        self.message = message

    def __str__(self) -> str:
        return self.message


def raise_terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler: raise :class:`Terminated` in the main thread."""
    raise Terminated()


class TerminationHandler:
    """While active, SIGTERM raises :class:`Terminated` in the main thread.

    Only from the main thread (the only one Python runs handlers in), and
    only where SIGTERM has its default action: a program (or the command
    line) that handles SIGTERM itself keeps its handler. ``installed``
    tells whether this one was.
    """

    def __init__(self) -> None:
        self.installed = False

    def __enter__(self) -> TerminationHandler:
        if (
            hasattr(signal, "SIGTERM")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, raise_terminated)
            self.installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_message(what: str, stopped: int, waiting: int, done: int, where: str = "") -> str:
    """One line saying what a stop interrupted."""
    kept = "its .part is" if stopped == 1 else "their .part files are"
    plural = "" if stopped == 1 else "s"
    return (
        f"{what}: {stopped} download{plural} stopped{where} ({kept} kept for the next "
        f"call), {waiting} not started, {done} done"
    )


def _stopped(exc: BaseException, message: str, installed: bool) -> BaseException:
    """The exception that ends an interrupted call: ``exc``'s kind, saying what it stopped."""
    if isinstance(exc, Terminated):
        if installed:
            # Nobody above handles SIGTERM: this line is all a log will show.
            try:
                sys.stderr.write(f"pyvo_dl: {message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        return Terminated(message)
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt(message)
    return exc


def _is_stop(exc: BaseException) -> bool:
    return isinstance(exc, (Terminated, KeyboardInterrupt, _partfile.Interrupted))


def _what(exc: BaseException) -> str:
    return "terminated by SIGTERM" if isinstance(exc, Terminated) else "interrupted"


def _source_host(source: str) -> str:
    if source.lower().startswith("s3://"):
        return "s3://" + source[5:].split("/", 1)[0]
    import urllib.parse  # only with max_per_host below workers

    return (urllib.parse.urlsplit(source).netloc or "").lower()


def _default_name(source: str) -> str | None:
    if source[:5].lower() == "s3://":
        from ._s3url import parse_s3_uri

        return _names.filename_from_s3_key(parse_s3_uri(source).key)
    return _names.filename_from_url(source)


class NameIn(str):
    """A target still to be named: the folder it goes in (a ``str`` subclass).

    An http(s) URL whose path and query name no file (``/cutout?ra=10``)
    is named as `http_download` names it: from the server's
    ``Content-Disposition``, asked when the item runs.
    """

    __slots__ = ()


#: Threads one download_many call may start: more is a typo (10**6 threads
#: would exhaust the process), and the network would not go faster.
MAX_WORKERS: Final = 256


def plan_items(
    items: Iterable[Any], dest_dir: str, note: Callable[[str], None] | None = None
) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Turn the caller's items into ``(source, target path or error, item options)``.

    ``source`` is the URL or URI of a plain item, else a tuple of
    :data:`~._items.Source` (several sources, or a table row's S3 copy with
    its region). A target is the item's local path (a relative one under
    ``dest_dir``) or a name derived from the sources (a :class:`NameIn`
    where only the server can say it); two items with the same target make
    the second an error rather than a race. Every item that cannot be
    downloaded, whatever its type, becomes its own error (issue 12.11).
    The options are the item's own keyword arguments (a mapping's
    ``checksum``). ``note`` is told what was left out of a table row (a
    ``cloud_access`` value that is not JSON, say) and why.
    """
    planned: list[tuple[Any, Any, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    #: Each planned path's key in ``seen`` (None for the others), made once.
    keys: list[str | None] = []
    # The first item of each target, by what messages call it: an index
    # alone means nothing to a command-line user, who never numbered them.
    first_label: dict[str, str] = {}
    for index, raw in enumerate(items):
        keys.append(None)
        item = _items.parse_item(raw, index)
        if item.error is not None:
            planned.append((item.label, item.error, {}))
            continue
        source = _source_of(item)
        try:
            target = _target_for(item, dest_dir)
        except ValueError as exc:
            planned.append((source, exc, {}))
            continue
        options = {"checksum": item.checksum} if item.checksum is not None else {}
        if item.notes and note is not None:
            for text in item.notes:
                note(f"item {index} ({item.label}): {text}; left out")
        if isinstance(target, NameIn):
            planned.append((source, target, options))
            continue
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            error = ValueError(
                f"{item.label!r} would be written to {target}, "
                f"as {first_label[key]!r} (item {seen[key]}) is"
            )
            planned.append((source, error, {}))
            continue
        seen[key] = index
        first_label[key] = item.label
        keys[index] = key
        planned.append((source, target, options))
    return _refuse_helper_targets(planned, seen, keys)


def _refuse_helper_targets(
    planned: list[tuple[Any, Any, dict[str, Any]]], seen: dict[str, int], keys: list[str | None]
) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Make an error of each item whose target is another item's ``.part``, state or lock.

    ``[(u1, "x.fits.part"), (u2, "x.fits")]``: the download of x.fits would
    write its ``.part`` over the first item's file, or the first item's
    commit land on the second's ``.part``; both reported success. ``keys``:
    each item's key in ``seen`` (its normalised path), None for the others.
    """
    for index, key in enumerate(keys):
        # Only a name with a helper's suffix can be one: one test in C for
        # the others, no table of every item's three helper names.
        if key is None or not key.endswith(_partfile.HELPER_SUFFIXES):
            continue
        owner = _helper_owner(key, seen)
        if owner is not None and owner != index:
            source, target, _ = planned[index]
            error = ValueError(
                f"{target} would hold the partial download of item {owner} "
                f"({planned[owner][1]}); choose another name for it"
            )
            planned[index] = (source, error, {})
    return planned


def _helper_owner(key: str, seen: dict[str, int]) -> int | None:
    """The item whose ``.part``, state or lock ``key`` names, if any."""
    for suffix in _partfile.HELPER_SUFFIXES:
        if key.endswith(suffix):
            owner = seen.get(key[: -len(suffix)])
            if owner is not None:
                return owner
    return None


def _noter(verbose: bool) -> Callable[[str], None]:
    def note(text: str) -> None:
        from ._exchange import log_and_print

        log_and_print(verbose, text)

    return note


def label_of(source: Any) -> str:
    """What messages and results call a planned source: the URL, or the first of several."""
    return source if isinstance(source, str) else str(source[0].uri)


def _source_of(item: Any) -> Any:
    """The plain URL of a one-source item, else the tuple of its sources."""
    (first, *more) = item.sources
    return first.uri if not more and first.region is None else item.sources


def _target_for(item: Any, dest_dir: str) -> str:
    if item.local is not None:
        return item.local if os.path.isabs(item.local) else _join(dest_dir, item.local)
    if len(item.sources) > 1:
        name = _items.name_for_sources(item.sources)
        if not name:
            raise ValueError(
                f"cannot derive a file name from any of the sources of {item.label!r}; "
                "give it a local path"
            )
        return _join(dest_dir, name)
    source = item.sources[0].uri
    if not isinstance(source, str):
        raise ValueError(f"source must be a URL or s3:// URI string, not {source!r}")
    name = _default_name(source)
    if name and "." not in name and source[:4].lower() == "http":
        # A name without a suffix (/cutout?ra=10): the server's
        # Content-Disposition may give a better one, as for http_download
        # (SPEC §2.1). A URL naming no file at all (a folder) stays an error.
        return NameIn(dest_dir)
    if not name:
        raise ValueError(
            f"cannot derive a file name from {source!r}; give a (source, local_path) pair"
        )
    return _join(dest_dir, name)


def _join(dest_dir: str, path: str) -> str:
    # "." adds nothing but a "./" to every path printed and returned.
    return path if dest_dir in ("", ".") else os.path.join(dest_dir, path)


def run_one(download: Callable[..., str], source: str, target: str, kwargs: dict[str, Any]) -> str:
    """Download one item (module-level, so process pools can pickle it).

    ``download`` is the entry row's item download (``pyvo_dl.download``,
    which also takes a :class:`NameIn` target), passed in by the caller so
    that this module does not import the row above it.
    """
    return download(source, target, **kwargs)


def run_counted(
    download: Callable[..., str], source: str, target: str, kwargs: dict[str, Any]
) -> tuple[Any, _progress.ItemTally]:
    """:func:`run_one` in an executor's worker: the outcome and what its transfer did.

    The worker has no display; an :class:`~._progress.ItemTally` notes
    whether a transfer started, from which byte, and the bytes it moved,
    and goes back with the outcome (the path, or the exception the item
    ended with) so that the caller's summary tells the truth.
    """
    tally = _progress.ItemTally()
    try:
        return run_one(download, source, target, dict(kwargs, progress=tally)), tally
    except Exception as exc:  # the item's exception is its result
        return exc, tally


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


def take_shard(count: int, shard: tuple[int, int] | None) -> list[int]:
    """The indexes of ``count`` items that shard ``(I, N)`` takes: I-1, I-1+N, ...

    Examples
    --------
    >>> take_shard(7, (2, 3))
    [1, 4]
    >>> take_shard(3, None)
    [0, 1, 2]
    """
    if shard is None:
        return list(range(count))
    index, of = shard
    return list(range(index - 1, count, of))


def download_many(
    download: Callable[..., str],
    items: Iterable[Any],
    dest_dir: str | os.PathLike[str] = ".",
    *,
    workers: int = 8,
    max_per_host: int | None = None,
    executor: Any = None,
    progress: Any = True,
    shard: tuple[int, int] | None = None,
    **kwargs: Any,
) -> list[tuple[str, Any]]:
    """Run ``pyvo_dl.download_many`` (its parameters are documented there).

    ``download`` downloads one source to one path (or into a
    :class:`NameIn` folder); it is passed in so that this module does not
    import the public entry row above it. ``shard=(I, N)`` keeps items I,
    I+N, ... of the planned list (prefixes already expanded), for job
    arrays. Returns ``(source, path or exception)`` for each item kept.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    if executor is not None:
        _check_executor_options(workers, max_per_host)
    if "checksum" in kwargs:
        raise ValueError(
            "checksum= names one file; give it per item ({'source': ..., 'checksum': ...}) "
            "or per call of http_download/aws_download"
        )
    per_host = workers if max_per_host is None else max_per_host
    if (
        isinstance(per_host, bool)
        or not isinstance(per_host, int)
        or not 1 <= per_host <= MAX_WORKERS
    ):
        raise ValueError(
            f"max_per_host must be a whole number from 1 to {MAX_WORKERS} or None, "
            f"not {max_per_host!r}"
        )
    everything = plan_items(items, os.fspath(dest_dir), _noter(bool(kwargs.get("verbose"))))
    planned = [everything[i] for i in take_shard(len(everything), shard)]
    results: list[Any] = [
        target if isinstance(target, Exception) else None for _, target, _ in planned
    ]
    todo = [i for i, (_, target, _) in enumerate(planned) if not isinstance(target, Exception)]
    display = _progress.make_aggregate(progress, len(planned))
    for _ in range(len(planned) - len(todo)):
        display.item_done(False)
    try:
        if executor is not None:
            _run_on_executor(executor, download, planned, todo, results, kwargs, display)
        else:
            _run_threads(download, planned, todo, results, kwargs, display, workers, per_host)
    finally:
        display.close()
    return [(label_of(source), result) for (source, _, _), result in zip(planned, results)]


def _check_executor_options(workers: int, max_per_host: int | None) -> None:
    """``workers=`` and ``max_per_host=`` size download_many's own threads: say so."""
    for name, value, default in (
        ("workers", workers, DEFAULT_WORKERS), ("max_per_host", max_per_host, None),
    ):  # fmt: skip
        if value != default:
            raise ValueError(
                f"{name}={value!r} applies to download_many's own threads, not to "
                "executor=: the executor decides how many items run at once (size it, "
                "for example ProcessPoolExecutor(max_workers=N)), or drop executor="
            )


def _record(results: list[Any], index: int, outcome: Any, display: Any, child: Any) -> None:
    results[index] = outcome
    display.item_done(not isinstance(outcome, BaseException), child)


def _run_threads(
    download: Callable[..., str],
    planned: Sequence[tuple[str, Any, dict[str, Any]]],
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
    running: set[int] = set()

    def download_one(index: int, child: Any) -> Any:
        source, target, options = planned[index]
        item_kwargs = dict(kwargs, progress=child, **options)
        if limits is None:
            return run_one(download, source, target, item_kwargs)
        with limits.for_host(_source_host(label_of(source))):
            if stop.is_set():
                return None
            return run_one(download, source, target, item_kwargs)

    def work() -> None:
        while not stop.is_set():
            with lock:
                index = next(pending, None)
                if index is None:
                    return
                running.add(index)
            child = display.child()
            try:
                outcome: Any = download_one(index, child)
            except Exception as exc:  # each item's exception is its result
                outcome = exc
            except BaseException as exc:  # not an item's failure: stop the batch
                stop.set()
                crashed.append(exc)
                return
            finally:
                with lock:
                    running.discard(index)
            if outcome is not None:
                _record(results, index, outcome, display, child)

    with TerminationHandler() as handler:
        if len(todo) == 1:
            # One item runs on the calling thread: Ctrl-C or SIGTERM
            # interrupts it at once (its .part is kept), as it does a single
            # http_download.
            work()
            if crashed and _is_stop(crashed[0]):
                source = label_of(planned[todo[0]][0])
                message = (
                    f"{_what(crashed[0])} during {source} (its .part is kept for the next call)"
                )
                raise _stopped(crashed[0], message, handler.installed) from None
        else:
            _join_or_stop(work, workers, todo, results, stop, lock, running, handler)
    if crashed:
        raise crashed[0]


class _Workers:
    """The threads of one call, and a way to wait for them that a signal cannot spoil.

    ``Thread.join()`` interrupted by a signal's exception can mark a thread
    that still runs as stopped (CPython's bpo-45274 handling, 3.11), and a
    later ``join()`` then returns at once: the call would end with a
    download, and its lock, still under way. The threads report their end
    on an event of ours instead.
    """

    def __init__(self, work: Callable[[], None], count: int) -> None:
        self._work = work
        self._left = count
        self._lock = threading.Lock()
        self._done = threading.Event()
        # Daemons: a download that ignores a stop (stuck in a read that only
        # its timeout ends) must not keep the process from exiting after one.
        self._threads = [
            threading.Thread(target=self._run, name=f"pyvo_dl-{n}", daemon=True)
            for n in range(count)
        ]

    def _run(self) -> None:
        try:
            self._work()
        finally:
            with self._lock:
                self._left -= 1
                if not self._left:
                    self._done.set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every thread has ended (or ``timeout``); whether they all have."""
        return self._done.wait(timeout)


def _join_or_stop(
    work: Callable[[], None],
    workers: int,
    todo: list[int],
    results: list[Any],
    stop: threading.Event,
    lock: Any,
    running: set[int],
    handler: TerminationHandler,
) -> None:
    """Run ``work`` on the threads and wait for them; on a signal, stop them cleanly."""
    threads = _Workers(work, min(workers, max(1, len(todo))))
    threads.start()
    try:
        threads.wait()
    except BaseException as exc:
        # SIGTERM or Ctrl-C: nothing new starts, and each download under way
        # stops at its next chunk (its .part and state kept, its lock
        # released); those that do not within STOP_GRACE are left.
        stop.set()
        with lock:
            stopped = len(running)
        _stop_threads(threads)
        done = sum(results[i] is not None for i in todo)
        message = _stop_message(_what(exc), stopped, len(todo) - done - stopped, done)
        raise _stopped(exc, message, handler.installed) from None


def _stop_threads(threads: _Workers) -> None:
    """Make the downloads of ``threads`` stop, and wait for them (STOP_GRACE at most)."""
    _partfile.interrupt("the call was interrupted")
    try:
        threads.wait(STOP_GRACE)
    finally:
        _partfile.clear_interrupt()


def _run_on_executor(
    executor: Any,
    download: Callable[..., str],
    planned: Sequence[tuple[str, Any, dict[str, Any]]],
    todo: list[int],
    results: list[Any],
    kwargs: dict[str, Any],
    display: Any,
) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    if not isinstance(executor, ThreadPoolExecutor):
        _check_picklable(download, kwargs)
    futures: dict[Any, int] = {}
    with TerminationHandler() as handler:
        try:
            for index in todo:
                source, target, options = planned[index]
                futures[
                    executor.submit(
                        run_counted, download, source, _absolute(target), dict(kwargs, **options)
                    )
                ] = index
            for future in as_completed(futures):
                _collect(future, futures[future], planned, results, display)
        except BaseException as exc:
            # Nothing new starts: the items not yet begun are cancelled (a
            # pool would otherwise run every one of them). Those running
            # stop at their next chunk in a thread pool; in other processes
            # they end there (a process group's signal reaches them).
            cancelled = sum(future.cancel() for future in futures)
            left = sum(not future.done() for future in futures)
            _stop_futures([future for future in futures if not future.done()])
            done = sum(results[i] is not None for i in todo)
            waiting = cancelled + len(todo) - len(futures)
            where = " in the executor's workers"
            message = _stop_message(_what(exc), left, waiting, done, where)
            raise _stopped(exc, message, handler.installed) from None


def _stop_futures(running: list[Any]) -> None:
    """Make the downloads of this process stop, and wait for ``running`` (STOP_GRACE at most)."""
    from concurrent.futures import wait

    _partfile.interrupt("the call was interrupted")
    try:
        wait(running, timeout=STOP_GRACE)
    finally:
        _partfile.clear_interrupt()


def _absolute(target: Any) -> Any:
    """The target as an absolute path: a worker's current folder is not the caller's."""
    path = os.path.abspath(target)
    return NameIn(path) if isinstance(target, NameIn) else path


def _collect(
    future: Any,
    index: int,
    planned: Sequence[tuple[str, Any, dict[str, Any]]],
    results: list[Any],
    display: Any,
) -> None:
    tally: Any = None
    try:
        outcome, tally = future.result()
    except Exception as exc:  # the worker itself failed (pickling, a dead process)
        outcome = exc
    if isinstance(outcome, str):
        # The path as the caller planned it (relative stays relative), as
        # the threads return it.
        target = planned[index][1]
        path = (
            _join(str(target), os.path.basename(outcome)) if isinstance(target, NameIn) else target
        )
        outcome = _repath(outcome, path)
    results[index] = outcome
    moved = tally.moved if tally is not None else 0
    display.item_done(not isinstance(outcome, BaseException), tally, moved)


def _repath(outcome: str, path: str) -> str:
    """``path`` as the same kind of string as ``outcome`` (a ``DownloadedPath`` keeps its source)."""
    if type(outcome) is str:
        return path
    # The result types pickle as (type, (path, *attributes)): the same recipe.
    recipe: Any = outcome.__reduce__()
    made: str = recipe[0](path, *recipe[1][1:])
    return made


def _check_picklable(download: Callable[..., str], kwargs: dict[str, Any]) -> None:
    """One clear ``ValueError`` up front for what an executor's processes cannot receive."""
    import pickle

    for name, value in [("the download function", download), *kwargs.items()]:
        try:
            pickle.dumps(value)
        except Exception as exc:  # pickle raises TypeError, PicklingError, AttributeError...
            hint = (
                "pass aws_profile= (a profile name crosses processes) instead of a boto3 session"
                if name == "session"
                else "pass something that pickles, or use the default threads (no executor=)"
            )
            what = name if name.startswith("the ") else f"{name}="
            raise ValueError(
                f"{what} cannot be sent to the executor's worker processes (it cannot be "
                f"pickled: {exc}); {hint}"
            ) from None
