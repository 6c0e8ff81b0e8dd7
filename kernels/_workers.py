"""A small persistent pool of worker threads that share one kernel's blocks (issue 17).

OpenBLAS's own threads split one GEMM at a time: the small GEMMs of a convolution network
split badly (2 threads gave GoogLeNet ~1.1x), and with another process on a core its threads
wait for each other at every call. Instead, a convolution cuts its work into many blocks
(bands of output rows or columns, output channels, Winograd frequencies) and :func:`run`
hands them out from a shared counter to the calling thread and ``workers() - 1`` pool
threads, each running a single-threaded BLAS GEMM (numpy releases the GIL inside it) and
serial numba builds (``nogil``) on its block. A descheduled thread stalls the call only for
the one block it holds: the others take the rest.

The pool is sized by :func:`set_workers` (``refnet.runtime.threads`` does that together with
the BLAS limit: one BLAS thread while the pool has several, so the two never oversubscribe
the cores); one worker (the default) runs every block in the caller, in order. One ``run`` at a
time uses the pool: a second thread calling ``run`` meanwhile (or a block calling ``run``)
runs its blocks itself, so concurrent callers never wait for each other and never deadlock.
``REFNET_CONV_SPLIT=0`` turns the pool off (every kernel back to one multi-threaded GEMM per
band; the A/B switch of the issue-17 measurements).

Hand-overs (optional, off by default): a pool thread that finished a call may busy-wait up to
:data:`SPIN_US` microseconds for the next one, and the caller up to :data:`WAIT_SPIN_US` for
the other threads' last blocks, both outside the GIL (:func:`refnet.kernels._spin.spin_until`
on a shared counter) before sleeping on a condition variable / event. Measured on the 2-core
machine (11:00, quiet): an OS wake-up costs 10-25 us, but a pool thread's first block started
~45-50 us after the call with or without the wait -- it is held by the GIL (the caller's Python
until its first nogil call), so the waits did not change GoogLeNet's forward time (with the
one-call drivers of ``_blasjit``: 0.96 / 0.91 of the forward time in one quiet run, 1.05 / 1.05
in the next, GoogLeNet / MobileNet-SSD) and stay off
(``REFNET_POOL_SPIN_US`` / ``REFNET_POOL_WAIT_SPIN_US`` or :func:`set_spin` turn them on for
an A/B). They need numba loaded and jitting; otherwise the threads sleep at once.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["run", "run_ranges", "ranges", "set_workers", "workers", "enabled", "BLOCKS_PER_THREAD",
           "MIN_BLOCK_WORK", "set_spin", "SPIN_US", "WAIT_SPIN_US"]

# :func:`ranges` cuts a call into about this many blocks per thread (taken from a shared counter,
# so a descheduled thread holds back one small block, not half the call) ...
BLOCKS_PER_THREAD = 4
# ... none under this many elements of work: a block costs ~5-10 us of Python and numba dispatch
# and a pool wake-up ~20-50 us, while a 3x3 max pooling or an LRN handles 32k elements in ~50 us
# (with 8k, GoogLeNet's 14x14 pools ran 30% slower at 2 threads on a machine without a free core)
MIN_BLOCK_WORK = 1 << 15
# Whether :func:`ranges` splits at all (``REFNET_SPLIT_PLANES=1``; default off). Measured at
# 09:54 on the shared machine (load ~2, `Net.profile`-sized calls, 1 vs 2 threads): the numba
# workqueue builds of the pooling kernels scaled 1.6x on GoogLeNet's large pools where the same
# kernels split over this pool scaled 0.75-1.3x (every block dispatches a numba call under the
# GIL, and a pool thread preempted while holding the GIL stalls the caller), and the Winograd
# transforms in bands were slower than whole. So the pooling, LRN, depthwise and small-map
# Winograd-transform splits are kept (tested, bit-identical) but off until a quiet-machine A/B
# shows them ahead.
SPLIT_PLANES = os.environ.get("REFNET_SPLIT_PLANES", "0") == "1"
# Busy waits (see the module docstring; 0: off): a pool thread waits this long for the next
# call before it sleeps, the caller this long for the last blocks of its call.
SPIN_US = float(os.environ.get("REFNET_POOL_SPIN_US", "0"))
WAIT_SPIN_US = float(os.environ.get("REFNET_POOL_WAIT_SPIN_US", "0"))


def enabled() -> bool:
    """Whether kernels may split their GEMMs over the pool (``REFNET_CONV_SPLIT`` != "0")."""
    return os.environ.get("REFNET_CONV_SPLIT", "1") != "0"


class _Job:
    """Blocks 0..n-1 of one call, taken in order from a shared counter."""

    __slots__ = ("fn", "n", "next", "done", "lock", "finished", "error", "context", "base")

    def __init__(self, fn: Callable[[int], None], n: int, base: int = 0) -> None:
        self.fn, self.n = fn, n
        self.base = base  # _FLAG[1] before this call: it reaches base + n when all blocks are done
        # the caller's context variables (numpy's errstate is one), for the pool's threads
        self.context = contextvars.copy_context()
        self.next = 0
        self.done = 0
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def work(self, in_caller: bool = True) -> None:
        fn = self.fn
        if not in_caller:  # each thread enters its own copy (a context is entered by one thread at a time)
            ctx = self.context.copy()

            def fn(k: int) -> None:
                ctx.run(self.fn, k)
        while True:
            with self.lock:
                k = self.next
                if k >= self.n:
                    return
                self.next = k + 1
            try:
                if self.error is None:
                    fn(k)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller of run()
                if self.error is None:
                    self.error = e
            with self.lock:
                self.done += 1
                if self.done == self.n:
                    self.finished.set()
                _FLAG[1] = self.base + self.done  # (after the set: a caller that saw it finds the event set)


_N = [1]  # threads that work on a run(), the caller included
_COND = threading.Condition()
_STATE: dict = {"job": None, "gen": 0, "threads": []}
_RUN_LOCK = threading.Lock()
# shared with the busy waits (read outside the GIL): [0] the generation of the last call posted
# to the pool, [1] blocks finished by pool calls so far (both only grow)
_FLAG = np.zeros(8, np.int64)
# [spin_until, reads per microsecond] once numba is loaded and jitting (see _spinner)
_SPINNER: list = []
_SPIN_READS = [0, 0]  # reads of SPIN_US and WAIT_SPIN_US


def set_spin(spin_us: float | None = None, wait_spin_us: float | None = None) -> tuple[float, float]:
    """Set :data:`SPIN_US` / :data:`WAIT_SPIN_US` (microseconds, 0: sleep at once); returns both."""
    global SPIN_US, WAIT_SPIN_US
    if spin_us is not None:
        SPIN_US = max(0.0, float(spin_us))
    if wait_spin_us is not None:
        WAIT_SPIN_US = max(0.0, float(wait_spin_us))
    if _SPINNER:
        _SPIN_READS[:] = [int(SPIN_US * _SPINNER[1]), int(WAIT_SPIN_US * _SPINNER[1])]
    return SPIN_US, WAIT_SPIN_US


def _spinner() -> Callable | None:
    """The busy-wait kernel, once numba is loaded and jitting (else None: sleep at once)."""
    if _SPINNER:
        return _SPINNER[0]
    from refnet.kernels._lazyjit import load_numba, numba_loaded

    if (not numba_loaded() or load_numba().config.DISABLE_JIT or (SPIN_US <= 0 and WAIT_SPIN_US <= 0)
            or not sys.platform.startswith(("linux", "darwin"))):  # (sched_yield)
        return None
    from refnet.kernels._spin import reads_per_us, spin_until

    _SPINNER[:] = [spin_until, reads_per_us()]
    set_spin()
    return spin_until


def _loop(idx: int) -> None:
    seen = _STATE["gen"]
    while True:
        if _SPINNER and _SPIN_READS[0] > 0 and idx < _N[0] - 1:
            _SPINNER[0](_FLAG, 0, seen + 1, _SPIN_READS[0])  # (outside the GIL)
        with _COND:
            while _STATE["gen"] == seen or idx >= _N[0] - 1:
                if _STATE["gen"] != seen:  # a job for fewer workers than this one: skip it
                    seen = _STATE["gen"]
                _COND.wait()
            seen = _STATE["gen"]
            job = _STATE["job"]
        if job is not None:
            job.work(in_caller=False)


def set_workers(n: int) -> int:
    """Use ``n`` threads (the caller and ``n - 1`` pool threads) in :func:`run`; returns n.
    Threads are started by the first run that needs them and kept (asleep) when ``n`` goes down."""
    _N[0] = max(1, int(n))
    return _N[0]


def _start_threads(n: int) -> None:
    threads = _STATE["threads"]
    while len(threads) < n - 1:
        t = threading.Thread(target=_loop, args=(len(threads),), name=f"refnet-gemm-{len(threads)}", daemon=True)
        threads.append(t)
        t.start()


def workers() -> int:
    """Threads a :func:`run` call uses now (1: everything in the caller)."""
    return _N[0]


def run(fn: Callable[[int], None], nblocks: int) -> None:
    """Call ``fn(k)`` for every k in ``range(nblocks)``, spread over :func:`workers` threads;
    returns when all are done (re-raises the first exception of a block). ``fn`` must only
    write disjoint outputs per block and use serial kernels (never numba parallel builds)."""
    if _N[0] <= 1 or nblocks <= 1 or not _RUN_LOCK.acquire(blocking=False):
        for k in range(nblocks):
            fn(k)
        return
    try:
        _start_threads(_N[0])
        spin = _spinner()
        job = _Job(fn, nblocks, int(_FLAG[1]))
        with _COND:
            _STATE["job"] = job
            _STATE["gen"] += 1
            _FLAG[0] = _STATE["gen"]
            _COND.notify_all()
        job.work()
        if spin is not None and _SPIN_READS[1] > 0 and not job.finished.is_set():
            spin(_FLAG, 1, job.base + nblocks, _SPIN_READS[1])  # (outside the GIL)
        job.finished.wait()
    finally:
        _STATE["job"] = None
        _RUN_LOCK.release()
    if job.error is not None:
        raise job.error


def ranges(total: int, work: int, min_block_work: int | None = None) -> list[tuple[int, int]]:
    """Consecutive ranges covering ``range(total)`` (``total`` independent units, e.g. the (n, c)
    planes of a pooling) for :func:`run_ranges`: about :data:`BLOCKS_PER_THREAD` per worker, none
    with less than ``min_block_work`` (default :data:`MIN_BLOCK_WORK`) of the call's ``work``
    elements; one range (run the call whole) when the pool has one worker, the call is too
    small to share or :data:`SPLIT_PLANES` is off."""
    nt = _N[0] if SPLIT_PLANES else 1
    least = MIN_BLOCK_WORK if min_block_work is None else min_block_work
    pieces = 1 if nt <= 1 else min(total, BLOCKS_PER_THREAD * nt, work // max(1, least))
    pieces = max(1, pieces)
    return [(total * k // pieces, total * (k + 1) // pieces) for k in range(pieces)]


def run_ranges(fn: Callable[[int, int], None], parts: list[tuple[int, int]]) -> None:
    """``fn(lo, hi)`` for every range of ``parts`` (from :func:`ranges`), over the pool (see
    :func:`run`: disjoint outputs per range, serial kernels only)."""
    run(lambda k: fn(*parts[k]), len(parts))


def _after_fork() -> None:  # the pool's threads do not exist in a forked child
    global _COND, _RUN_LOCK
    _COND = threading.Condition()
    _RUN_LOCK = threading.Lock()
    _FLAG[:] = 0
    _STATE.update(job=None, gen=0, threads=[])  # (started again by the next run)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
