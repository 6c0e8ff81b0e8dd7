"""Ctrl-C during long forward passes.

Numba kernels release the GIL and never return to the interpreter until they finish, so a
SIGINT that arrives during a long kernel waits for it (a 201-byte prototxt with a 1500x1500
pooling window ran for minutes with Ctrl-C ignored). :func:`run_interruptibly` runs a heavy
program in a worker thread while the main thread waits in short slices, so
``KeyboardInterrupt`` lands in the caller within :data:`POLL_SECONDS`. The worker sees the
stop request between layers (through the executor's per-step hook) and ends there; the layer
it is in when Ctrl-C comes finishes in the background first (its result is dropped), and
the next forward pass on any net waits for it (the run lock).

Only programs with at least :data:`THREAD_MIN_WORK` MACs take this path, and only when
called from the main thread (elsewhere KeyboardInterrupt is not delivered anyway): a small
forward pass stays a plain call (the worker thread costs 70-150 us per pass, measured on
this project's loaded 2-core machine: under 0.5% of a pass that heavy in float32).

The worker is one long-lived thread (:data:`PERSISTENT`, ``REFNET_FORWARD_THREAD=0``: a new
thread per pass, as before 2026-12-06): every heavy pass runs in the same thread, so what
refnet and its libraries keep per thread -- the conv kernels' scratch buffers
(``refnet.kernels.conv._scratch``), numba's thread count, TBB's registration of the thread
that launches numba's parallel regions -- is set up once instead of once per pass (a new thread
per pass re-allocated and re-faulted the scratch buffers every pass: GoogLeNet 1 thread 1.3 ms
more CPU per pass, MobileNet-SSD 0.4 ms, loaded machine; A/B: ``python bench/flag_ab.py x
refnet.runtime.interrupt:PERSISTENT --caffe googlenet,mobilenet_ssd --threads 2``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["run_interruptibly", "THREAD_MIN_WORK", "POLL_SECONDS", "Interrupted", "PERSISTENT"]

THREAD_MIN_WORK = 5 * 10**8  # below: under ~0.5 s even on the float64 reference kernels
POLL_SECONDS = 0.1
# one long-lived worker thread for every heavy pass (see the module docstring; the A/B switch)
PERSISTENT = os.environ.get("REFNET_FORWARD_THREAD", "1").strip() not in ("0", "off", "no", "false")

_JOBS: list = []  # [the queue the persistent worker takes its jobs from] once started
_START_LOCK = threading.Lock()


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()  # (a job catches its own exceptions: see run_interruptibly)


def _submit(job: Callable[[], None]) -> None:
    """Run ``job`` in the persistent worker thread (started by the first call)."""
    with _START_LOCK:
        if not _JOBS:
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(jobs,), name="refnet-forward", daemon=True).start()
            _JOBS.append(jobs)
    _JOBS[0].put(job)


def _after_fork() -> None:  # the worker thread does not exist in a forked child
    global _START_LOCK
    _START_LOCK = threading.Lock()
    _JOBS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class Interrupted(BaseException):
    """Raised inside the worker at the next layer boundary after Ctrl-C (never reaches a user)."""


def run_interruptibly(run: Callable[[Callable | None], Any], lock: Any) -> Any:
    """``run(hook)`` under ``lock``, in a worker thread when called from the main thread.

    ``run`` receives a hook to call between steps (``refnet.runtime.program.Program.run``'s
    ``between``) that stops it once the caller was interrupted."""
    if threading.current_thread() is not threading.main_thread():
        with lock:
            return run(None)
    stop = threading.Event()
    box: dict[str, Any] = {}

    def hook(arg: Any) -> None:
        if stop.is_set():
            raise Interrupted
        return None

    done = threading.Event()

    def work() -> None:
        try:
            with lock:
                box["result"] = run(hook)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        finally:
            done.set()

    if PERSISTENT:
        _submit(work)  # (after a Ctrl-C the previous job may still be finishing its layer: this one waits)
    else:
        threading.Thread(target=work, name="refnet-forward", daemon=True).start()
    try:
        while not done.wait(POLL_SECONDS):
            pass
    except BaseException:
        stop.set()
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]
