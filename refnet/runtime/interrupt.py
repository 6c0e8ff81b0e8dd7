"""Ctrl-C during long forward passes.

Numba kernels release the GIL and never return to the interpreter until they finish, so a
SIGINT that arrives during a long kernel waits for it (a 201-byte prototxt with a 1500x1500
pooling window ran for minutes with Ctrl-C ignored). :func:`run_interruptibly` runs a heavy
program in a worker thread (one for the process, fed through a queue) while the main thread
waits in short slices, so ``KeyboardInterrupt`` lands in the caller within
:data:`POLL_SECONDS`. The worker sees the stop request between layers (through the
executor's per-step hook) and ends there; the layer
it is in when Ctrl-C comes finishes in the background first (its result is dropped), and
the next forward pass on any net waits for it (the run lock).

Only programs with at least :data:`THREAD_MIN_WORK` MACs take this path, and only when
called from the main thread (elsewhere KeyboardInterrupt is not delivered anyway): a small
forward pass stays a plain call (the worker thread costs 70-150 us per pass, measured on
this project's loaded 2-core machine: under 0.5% of a pass that heavy in float32).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["run_interruptibly", "THREAD_MIN_WORK", "POLL_SECONDS", "Interrupted"]

THREAD_MIN_WORK = 5 * 10**8  # below: under ~0.5 s even on the float64 reference kernels
POLL_SECONDS = 0.1


class Interrupted(BaseException):
    """Raised inside the worker at the next layer boundary after Ctrl-C (never reaches a user)."""


def run_interruptibly(run: Callable[[Callable | None], Any], lock: Any) -> Any:
    """``run(hook)`` under ``lock``, in the forward worker thread when called from the main thread.

    ``run`` receives a hook to call between steps (``refnet.runtime.program.Program.run``'s
    ``between``) that stops it once the caller was interrupted."""
    if threading.current_thread() is not threading.main_thread():
        with lock:
            return run(None)
    stop = threading.Event()
    done = threading.Event()
    box: dict[str, Any] = {}

    def hook(arg: Any) -> None:
        if stop.is_set():
            raise Interrupted
        return None

    def work() -> None:
        try:
            with lock:
                box["result"] = run(hook)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        finally:
            done.set()

    _worker_jobs().put(work)
    try:
        while not done.wait(POLL_SECONDS):
            pass
    except BaseException:
        stop.set()
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


# The forward worker: one thread for the process's lifetime (a new one after fork), fed through
# a queue. It replaced a new thread per pass (until 2026-12), which cost wall-clock time on a
# loaded machine: a new thread enters the scheduler's queue behind the tasks already running on
# its core (one slice, a few ms), a waiting thread that wakes does not. ResNet-50 at one thread
# with another process on each core (load 2, paired, 25 rounds): wall minus CPU time per pass
# 6.3 ms median with a new thread, 1.5 ms called in the main thread.
_WORKER: dict[str, Any] = {"pid": None, "jobs": None}
_WORKER_LOCK = threading.Lock()


def _worker_jobs() -> queue.SimpleQueue:
    """The forward worker's job queue (the worker started on first use, again in a forked child)."""
    with _WORKER_LOCK:
        if _WORKER["pid"] != os.getpid() or _WORKER["jobs"] is None:
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(jobs,), name="refnet-forward", daemon=True).start()
            _WORKER.update(pid=os.getpid(), jobs=jobs)
        return _WORKER["jobs"]


def _serve(jobs: queue.SimpleQueue) -> None:
    """The worker's loop: run each job in turn (a job catches its own errors)."""
    while True:
        jobs.get()()
