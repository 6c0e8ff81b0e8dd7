"""Thread counts for every thread pool a refnet process uses: numba's, each BLAS's, cv2's.

Two modes:

* **explicit** -- :func:`set_num_threads` (``n`` threads for numba, cv2 and the GEMM worker
  pool of :mod:`refnet.kernels._workers`; ``blas`` or 1 for the BLAS: the convolutions split
  their GEMMs over the pool, one single-threaded GEMM per block, which scales where
  OpenBLAS's own threads did not; ``REFNET_CONV_SPLIT=0``: no pool, ``blas`` or ``n``).
  The BLAS limit is kept by threadpoolctl and re-applied by :func:`reapply` (called after
  every model load and before every forward pass) whenever the process has imported modules
  since the last time: scipy, imported by numba when it first compiles or loads a kernel,
  brings a second OpenBLAS that a limit set earlier never reached.
* **auto** (the default, and ``set_num_threads("auto")``) -- before a forward pass, at most
  every :data:`AUTO_INTERVAL_S` seconds, :func:`auto_threads` takes the cores this process
  may run on minus the cores that *other* processes use, at least one. Two readings of the
  others' use, the larger counts (:func:`decide`):

  - *now*: ``/proc/loadavg``'s running count minus this process's own running threads (its
    numba, BLAS, GEMM-pool and cv2 threads are its own, never a neighbour), median of three
    samples;
  - *lately*: the cores the machine was busy (``/proc/stat``) minus this process's CPU time
    (``os.times``), averaged since the previous look (:func:`_others_lately`). The snapshot
    alone missed neighbours that come and go (another benchmark pausing between its calls:
    looked at in a pause, the machine seemed free and a 2-thread decision held for the next
    0.5 s while the neighbour ran again); the average sees them. A core counts as taken when
    the others used more than :data:`TAKEN_ABOVE` of it, and a thread is added back only below
    :data:`FREE_BELOW` (hysteresis: a load near the line does not flip the count every look).

  Measured on the 2-core machine of issue 17: with another process spinning on one core,
  refnet at 2 threads ran 1.5-3.5x slower than at one thread before the GEMM worker pool
  (1.06-1.09x after it, GoogLeNet), and far slower with the machine oversubscribed (a parallel
  region waits for its slowest thread, and a descheduled thread is slow by a whole time slice);
  one thread on a quiet 2-core machine costs ~1.2x. So the rule leans to one thread: a busy or
  recently busy machine gets one thread and a quiet one all cores. Child processes (a busy
  neighbour, a peer engine in its own process) are others. :func:`decisions` keeps the last
  decisions and what they saw (``refnet bench`` prints them).

  The count applies to the GEMM worker pool, the BLAS and numba alike, numba included in the
  passes of heavy programs (run in their own thread, refnet.runtime.interrupt: numba's count is
  per thread, so :func:`before_forward` sets it in that thread). For a few hours of 2026-12-06
  those passes kept numba's parallel kernels on all cores, from a measurement under heavier
  load (spinning neighbour plus two other engineers' jobs, load 2.3-3.6: ENet 0.68/0.92,
  GoogLeNet 0.84, MobileNet-SSD 0.95 against everything at one thread). Measured again with
  only the spinning neighbour (`refnet bench --busy-neighbour`, load 1.4-2.1, three rounds per
  model, default vs one thread, median of per-round ratios): numba at all cores GoogLeNet
  1.11/1.03/1.18, MobileNet-SSD 1.16/0.99/1.10, ENet 1.00/1.08/1.01; numba following the count
  0.99/1.14/0.98 (GoogLeNet's 1.14 the noisiest round), 0.89/1.01/0.97, 1.00/1.02/0.98. So it
  follows the count. (Before 2026-12-06 those passes ran numba at all cores by accident:
  numba's count is per thread and their thread never got one; every earlier busy-machine
  number of issue 17 was measured so.)
  An explicit :func:`set_num_threads` count now holds in every thread.

  Small passes run one thread whatever the load (:data:`AUTO_MIN_WORK`, :func:`for_work`): a
  net of small layers lost more to handing them between threads than it gained from the second
  core (yufacedetectnet v2, quiet machine: 1.18x slower at 2 threads than at 1).

Nothing here imports threadpoolctl before a thread count has to be applied, nor numba before
something else loads it (a small net's forward pass may run without it:
refnet.runtime.smallnet); numba's count is applied when it loads.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
from collections import deque
from typing import Any

__all__ = ["set_num_threads", "get_num_threads", "reapply", "auto_threads", "available_cores", "before_forward",
           "AUTO_INTERVAL_S", "AUTO_MIN_WORK", "TAKEN_ABOVE", "FREE_BELOW", "decide", "decisions", "for_work",
           "small_passes", "mode"]

AUTO_INTERVAL_S = 0.5  # seconds between two looks at the machine's load in auto mode
# Forward passes of fewer MACs than this (refnet.runtime.budget's count of the program) run one
# thread in auto mode, whatever the load: their layers are too small to share (quiet machine:
# yufacedetectnet v2 at 320x240, 1.65e8 MACs, 7.6 ms at 1 thread vs 9.0 at the 2 the load
# allowed), while GoogLeNet (1.31e9), MobileNet-SSD (1.09e9) and ENet 512x256 (1.01e9) gain from
# the second core. The line sits just above the measured loser: below it only nets of small
# layers (yolo-fastest 1.1 1.27e8, UltraFace ~1e8, MTCNN, LeNet); SqueezeNet 1.1 (3.9e8),
# yolo-fastest-xl (3.7e8) and tiny-darknet (4.9e8) were not measured quiet and keep the load's count.
AUTO_MIN_WORK = 25 * 10**7
TAKEN_ABOVE = 0.25  # a core the others used more than this (on average since the last look) is taken ...
FREE_BELOW = 0.1  # ... and it is free again (a thread added back) only when they used less than this
MIN_WINDOW_S = 0.1  # a shorter window since the last look is too coarse (/proc/stat counts 10 ms ticks)

_DECISIONS: deque = deque(maxlen=256)  # (time.monotonic(), threads, others now, others lately), recent ones
_LATELY: dict[str, Any] = {"snap": None, "avg": None}  # the last /proc/stat snapshot and average

_STATE: dict[str, Any] = {
    "auto": True,  # no explicit set_num_threads yet (or set_num_threads("auto"))
    "numba": None,  # explicit counts
    "blas": None,
    "blas_applied": None,  # (blas count, len(sys.modules)) at the last threadpoolctl call
    "checked": -1e9,  # time.monotonic() of the last auto decision
    "auto_n": None,  # the last auto decision
    "pending": None,  # numba's count, to set when numba is loaded (not yet)
    "small_passes": 0,  # auto passes run on one thread though the load allowed more (AUTO_MIN_WORK)
}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _own_running() -> int:
    """Threads of this process in state R (running or runnable) right now."""
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rfind(b")") + 2:st.rfind(b")") + 3] == b"R":
                n += 1
    except OSError:  # pragma: no cover - no /proc
        return 1
    return max(1, n)


def _others_running() -> int | None:
    """Runnable threads of other processes right now (median of three samples), or None
    where /proc/loadavg does not exist. Each sample takes this process's running threads
    before and after reading the machine's count and subtracts the smaller: one of its own
    threads waking up in between (a BLAS or OpenMP thread ending its spin) must not hide a
    neighbour, and one falling asleep only makes the machine look busier."""
    samples = []
    for i in range(3):
        own = _own_running()
        try:
            with open("/proc/loadavg", "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return None
        samples.append(max(0, running - min(own, _own_running())))
        if i < 2:
            time.sleep(0.0002)
    return sorted(samples)[1]


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(core-seconds the machine was busy, this process's CPU seconds, time.monotonic()), or
    None where /proc/stat cannot be read. Busy is user + nice + system + irq + softirq + steal
    (the time a hypervisor gave other machines is a neighbour too)."""
    try:
        with open("/proc/stat", "rb") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    if len(v) < 8 or hz <= 0:
        return None
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz
    t = os.times()
    return busy, t.user + t.system, time.monotonic()


def _others_lately() -> float | None:
    """Cores the other processes used on average since the previous call (machine-wide), or
    None for the first call, without /proc/stat. A window shorter than :data:`MIN_WINDOW_S`
    keeps the previous snapshot and answers the previous average."""
    now = _cpu_snapshot()
    prev = _LATELY["snap"]
    if now is None:
        return None
    if prev is None:
        _LATELY["snap"] = now
        return None
    wall = now[2] - prev[2]
    if wall < MIN_WINDOW_S:
        return _LATELY["avg"]
    _LATELY["snap"] = now
    _LATELY["avg"] = max(0.0, ((now[0] - prev[0]) - (now[1] - prev[1])) / wall)
    return _LATELY["avg"]


_others_lately()  # the first window starts at import: a process's first forward pass sees the load since


def decide(cores: int, machine: int, others_now: int | None, others_lately: float | None,
           current: int | None = None) -> int:
    """The thread count for ``cores`` usable cores of a ``machine``-core machine when other
    processes run ``others_now`` threads right now and used ``others_lately`` cores on average
    since the last look (either None: unknown), given the ``current`` count (the module
    docstring: a core is taken above :data:`TAKEN_ABOVE` of use, free again below
    :data:`FREE_BELOW`). Machine-wide counts are taken in proportion to the share of the
    machine's cores this process may use (CPU affinity, a container's cpuset)."""
    share = cores / max(cores, machine)
    busy = 0 if others_now is None else int(others_now * share + 0.5)
    if others_lately is not None:
        lately = others_lately * share
        taken = math.ceil(max(0.0, lately - TAKEN_ABOVE))
        n = max(1, min(cores, cores - max(busy, taken)))
        if current is not None and n > current:  # adding threads back: only when clearly free
            n = max(current, min(n, cores - max(busy, math.ceil(max(0.0, lately - FREE_BELOW)))))
        return n
    return max(1, min(cores, cores - busy))


def small_passes() -> int:
    """Forward passes so far that ran one thread in auto mode because they were smaller than
    :data:`AUTO_MIN_WORK` while the load allowed more (``refnet bench`` reports them)."""
    return int(_STATE["small_passes"])


def decisions(since: float = -math.inf) -> list[tuple[int, int | None, float | None]]:
    """The recent auto decisions (the last 256) made at ``time.monotonic() >= since``, oldest
    first: (threads, other processes' running threads now, cores they used lately)."""
    return [d[1:] for d in _DECISIONS if d[0] >= since]


def auto_threads() -> int:
    """The default thread count now (:func:`decide` on this machine's readings; all available
    cores where the load cannot be read)."""
    cores = available_cores()
    now, lately = _others_running(), _others_lately()
    n = decide(cores, max(cores, os.cpu_count() or cores), now, lately, _STATE["auto_n"])
    _DECISIONS.append((time.monotonic(), n, now, None if lately is None else round(lately, 2)))
    return n


def _apply_blas(n: int) -> None:
    """Limit every loaded BLAS to ``n`` threads, at most the cores this process may run on
    (again only if modules were imported since). More never helps, and OpenBLAS starts them
    all with a buffer each: 64 of them under a 2 GiB address-space limit crashed the process
    (SIGSEGV) at its next library load."""
    n = max(1, min(int(n), available_cores()))
    key = (n, len(sys.modules))
    if _STATE["blas_applied"] == key:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    threadpool_limits(limits=int(n), user_api="blas")
    _STATE["blas_applied"] = (n, len(sys.modules))


def _blas_for(n: int) -> int:
    """The BLAS thread count that goes with ``n`` threads when none was given: 1 while the
    kernels split their GEMMs over ``n`` worker threads themselves (refnet.kernels._workers;
    a multi-threaded BLAS inside them would oversubscribe the cores), else ``n``."""
    from refnet.kernels import _workers

    return 1 if _workers.enabled() else n


def _apply_numba(numba: Any, n: int) -> int:
    from refnet.kernels._parallel import start_layer

    # chosen only before numba's threads start (TBB when installed, else OpenMP for one thread, workqueue
    # for more), and started in this thread (on TBB a start elsewhere could hang the process's exit)
    start_layer(n)
    n_numba = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n_numba)
    return n_numba


def _apply_when_numba_loads(numba: Any) -> None:
    n, _STATE["pending"] = _STATE["pending"], None
    if n is not None:
        _apply_numba(numba, n)


def _apply(n: int, blas: int, cv2_too: bool = True) -> int:
    """Set the counts: the GEMM worker pool's, the BLAS's, cv2's, and numba's once numba is
    loaded (a small net's forward pass may never load it: refnet.runtime.smallnet), else when
    it loads, in the thread loading it (the one about to run a kernel: numba's count is per thread)."""
    from refnet.kernels import _workers
    from refnet.kernels._lazyjit import load_numba, numba_loaded, on_numba_load

    if numba_loaded():
        n_numba = _apply_numba(load_numba(), n)
    else:
        if _STATE["pending"] is None:
            _STATE["pending"] = n
            on_numba_load(_apply_when_numba_loads)
        _STATE["pending"] = n
        n_numba = min(n, _numba_default_threads())
    _workers.set_workers(n if _workers.enabled() else 1)
    _apply_blas(blas)
    cv2 = sys.modules.get("cv2") if cv2_too else None
    if cv2 is not None:
        cv2.setNumThreads(n)
    return n_numba


def _numba_default_threads() -> int:
    """numba's NUMBA_NUM_THREADS without importing numba (its rule: the variable, else the
    cores this process may run on)."""
    try:
        return max(1, int(os.environ.get("NUMBA_NUM_THREADS", "")))
    except ValueError:
        return available_cores()


def _is_count(v: object) -> bool:
    """An integer (Python or NumPy, not a bool) >= 1."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1


def set_num_threads(n: int | str, blas: int | None = None) -> int:
    """Use ``n`` threads for numba kernels, the BLAS (threadpoolctl; ``blas`` if given) and,
    if imported, cv2; ``n="auto"`` returns to the default (see the module docstring).

    Returns the thread count actually set (numba caps it at NUMBA_NUM_THREADS). The BLAS
    limit also reaches BLAS libraries loaded later (see :func:`reapply`). On a machine
    where other processes hold cores, OpenBLAS with several threads ran each GEMM up to 5x
    slower than with one (its threads wait for each other at every call): ``blas=1`` keeps
    the GEMMs single-threaded while numba's kernels use ``n`` threads."""
    if blas is not None and not _is_count(blas):
        raise ValueError(f"blas thread count must be an integer >= 1 or None, got {blas!r}")
    if isinstance(n, str) and n == "auto":
        # (auto_n, the last auto decision, stays: the hysteresis of decide() starts from it)
        _STATE.update(auto=True, numba=None, blas=None, checked=-1e9, blas_applied=None)
        return before_forward(force=True)
    if not _is_count(n):  # (int(1.5) was 1, silently; cv2.setNumThreads refuses floats too)
        raise ValueError(f"thread count must be an integer >= 1 or 'auto', got {n!r}")
    n = int(n)
    b = int(blas) if blas is not None else _blas_for(n)
    _STATE.update(auto=False, numba=n, blas=b, blas_applied=None)
    return _apply(n, b)


def mode() -> str:
    """"auto" or "explicit"."""
    return "auto" if _STATE["auto"] else "explicit"


def reapply() -> None:
    """Apply the thread counts to BLAS libraries loaded since they were set (cheap when no
    module was imported since the last call)."""
    if _STATE["auto"]:
        if _STATE["auto_n"] is not None:
            _apply_blas(_blas_for(_STATE["auto_n"]))
        return
    _apply_blas(_STATE["blas"])


def _numba_here(n: int) -> int:
    """Give the calling thread numba's count for ``n`` threads (when numba is loaded) and return
    it. numba keeps one count per thread, and a heavy forward pass runs in refnet's forward
    worker thread (refnet.runtime.interrupt.run_interruptibly; a new thread per pass until
    2026-12), which starts at NUMBA_NUM_THREADS: until
    2026-12 every such pass ran numba's parallel kernels on all cores whatever refnet's count
    (GoogLeNet at "1 thread" with a neighbour on the other core: numba at 2)."""
    from refnet.kernels._lazyjit import load_numba, numba_loaded

    if not numba_loaded():
        return n  # applied in the thread that loads numba (_apply_when_numba_loads)
    numba = load_numba()
    want = min(n, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
    return want


def for_work(n: int, work: int | None) -> int:
    """The auto count for a forward pass of ``work`` MACs (None: unknown) when the load allows
    ``n`` threads: one below :data:`AUTO_MIN_WORK` (see there), else ``n``."""
    return 1 if work is not None and work < AUTO_MIN_WORK else n


def before_forward(force: bool = False, work: int | None = None) -> int:
    """Called before each forward pass, in the thread that runs it: in auto mode, look at the
    load (at most every AUTO_INTERVAL_S) and set the thread counts when they change, and run a
    pass of fewer than :data:`AUTO_MIN_WORK` MACs (``work``, the program's) on one thread (the
    GEMM pool, and numba in this thread; the load decision and the threading layer it chose
    stay, for the next larger pass); in explicit mode, make sure newly loaded BLAS libraries got
    the limit; in both, give this thread numba's count (:func:`_numba_here`; a heavy program's
    pass runs in the forward worker thread, refnet.runtime.interrupt). Returns numba's thread count
    for this run."""
    if not _STATE["auto"]:
        _apply_blas(_STATE["blas"])
        return _numba_here(int(_STATE["numba"]))
    now = time.monotonic()
    if force or now - _STATE["checked"] >= AUTO_INTERVAL_S:
        _STATE["checked"] = now
        n = auto_threads()
        if n != _STATE["auto_n"] or force:
            _STATE["auto_n"] = n
            _apply(n, _blas_for(n), cv2_too=False)  # the default leaves a user's cv2 alone
    run_n = for_work(int(_STATE["auto_n"]), work)
    if run_n < _STATE["auto_n"]:
        _STATE["small_passes"] += 1
    from refnet.kernels import _workers

    _workers.set_workers(run_n if _workers.enabled() else 1)  # (one assignment)
    _apply_blas(_blas_for(run_n))
    return _numba_here(run_n)


def get_num_threads() -> dict[str, int]:
    """The thread counts in use: {"numba": .., "gemm": .. (the kernels' GEMM worker pool),
    "blas": .., "cv2": .. (when imported)}; the BLAS count is the largest over every BLAS
    loaded. (Imports numba if nothing did yet.)"""
    from refnet.kernels._lazyjit import load_numba

    numba = load_numba()

    from refnet.kernels import _workers

    out = {"numba": int(numba.get_num_threads()), "gemm": _workers.workers()}
    try:
        from threadpoolctl import threadpool_info

        blas = [d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"]
        if blas:
            out["blas"] = int(max(blas))
    except ImportError:  # pragma: no cover
        pass
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        out["cv2"] = int(cv2.getNumThreads())
    return out
