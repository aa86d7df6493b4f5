"""One background thread that writes to DuckDB files in submission order.

Why: a DuckDB statement costs about a millisecond, and the trading loop must not wait for
disks. The journal and the paper account share one ``Writer``, so their writes reach disk in
the order they were made: a killed process leaves both files at the same point in the run
(every write before some instant, none after), which is what a restart reconciles from.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable

__all__ = ["Writer"]

log = logging.getLogger(__name__)
_open: "weakref.WeakSet[Writer]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Finish queued writes before the interpreter tears down DuckDB (a daemon thread killed
    mid-write at exit aborts the process)."""
    for writer in list(_open):
        writer.close()


class Writer:
    """Runs submitted jobs (callables) one at a time on a daemon thread, in order."""

    def __init__(self, name: str = "tradeflow-writer") -> None:
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; a failure is kept and raised by the next :meth:`check` (jobs after it are skipped)."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
                    _open.add(self)
        self._queue.put(job)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self.failed is None:
                    job()
            except BaseException as exc:
                self.failed = exc
                log.error("background write failed: %s", exc)
            finally:
                self._queue.task_done()

    def sync(self) -> None:
        """Wait until every queued job has run."""
        if self._thread is not None:
            self._queue.join()

    def check(self) -> BaseException | None:
        return self.failed

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._thread = None
