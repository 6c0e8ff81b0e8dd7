"""Serial and parallel twins of the fast numba kernels, chosen per call.

A ``parallel=True`` kernel pays for its launch on every call. With numba's OpenMP layer and
one thread the launch runs inline (about a microsecond) and the parallel build is the better
code (numba marks the outlined loop body's arrays ``noalias``: up to 2x faster inner loops
than a plain ``jit`` build); with the workqueue layer every launch wakes a worker thread,
measured 20-100 us per call on a loaded machine (a 74-layer face detector ran 2.5x slower).
With several threads, OpenMP stalled for milliseconds per launch on the oversubscribed
machine while workqueue did not; TBB (the ``tbb`` extra) launches in ~10 us and is taken for
several threads when installed, so that split convolutions run their drivers as one parallel
region (:func:`region_threads`; see :func:`choose_threading_layer`).

:func:`twin` compiles the same Python function twice with the options of
:mod:`refnet.kernels._jit` -- ``pjit`` (``prange`` over disjoint outputs) and ``jit`` (``prange``
runs as ``range``) -- and per call runs the parallel build when it is cheap to launch (one
thread, OpenMP layer) or worth sharing (several threads and at least
:data:`PARALLEL_MIN_WORK` elements of work -- :data:`TBB_MIN_WORK` on the TBB layer --, the
``.size`` of one array argument), else the serial build. Both compute every output element in
the same order: results are identical.
Parallel builds run one at a time in the process (:data:`refnet.kernels._jit.PARALLEL_LOCK`):
numba's workqueue layer aborts when two threads launch parallel regions at once.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from typing import Any

from refnet.kernels._jit import PARALLEL_LOCK, jit, pjit
from refnet.kernels._lazyjit import MODE, load_numba, on_numba_load

__all__ = ["twin", "Twin", "PARALLEL_MIN_WORK", "TBB_MIN_WORK", "choose_threading_layer", "start_layer",
           "threading_layer", "region_drivers", "region_threads"]

# below this many work elements a kernel runs serially even when several threads are allowed
PARALLEL_MIN_WORK = 1 << 17
# ... on numba's TBB layer (launches in ~10 us): this many (``REFNET_TBB_MIN_WORK``). Measured
# (2 threads, quiet, back to back, ms serial / parallel build): GoogLeNet's 14x14 inception max
# pools (480 x 14 x 14 input) 0.167 / 0.090, 7x7 ones (832 x 7 x 7) 0.126 / 0.071.
TBB_MIN_WORK = int(os.environ.get("REFNET_TBB_MIN_WORK", str(1 << 15)))

_INLINE: list[bool] = []  # [True] once the layer is known to run one-thread launches inline


def threads_launched() -> bool:
    """Whether numba has started its threading layer (after which it cannot change)."""
    if "numba" not in sys.modules:
        return False
    import numba

    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def threading_layer() -> str:
    """The numba threading layer in use, or the one that will be used (not started yet)."""
    numba = load_numba()
    try:
        return str(numba.threading_layer())
    except ValueError:
        return str(numba.config.THREADING_LAYER)


def choose_threading_layer(n_threads: int) -> str:
    """Pick numba's threading layer for ``n_threads`` before it starts (no-op afterwards or
    when NUMBA_THREADING_LAYER is set): TBB when :func:`region_drivers` is on and TBB loads
    (launches in ~10 us), whatever ``n_threads`` -- the layer is fixed once started
    (``numba.set_num_threads`` starts it), and a process that begins at one thread and later
    runs at two needs TBB for the split convs' regions (at one thread the parallel builds then
    run serially: :class:`Twin`); else OpenMP for one thread (inline launches), workqueue for
    more (no multi-millisecond stalls when the machine is oversubscribed)."""
    numba = load_numba()
    layer = os.environ.get("NUMBA_THREADING_LAYER", "")
    if layer == "tbb":
        _load_tbb()  # (numba looks for libtbb.so.12 by name: pip's tbb puts it in <prefix>/lib)
    elif not layer and not threads_launched():
        if region_drivers() and _load_tbb():
            numba.config.THREADING_LAYER = "tbb"
        else:
            numba.config.THREADING_LAYER = "omp" if int(n_threads) <= 1 else "workqueue"
    return threading_layer()


_TBB: list[bool] = []  # [whether TBB's library is loaded and new enough for numba] once tried


def _load_tbb() -> bool:
    """Load TBB's runtime (``libtbb.so.12``, from the loader's path or ``<sys.prefix>/lib``
    where the ``tbb`` wheel puts it) so that numba's TBB layer can start; False if absent."""
    if _TBB:
        return _TBB[0]
    import ctypes

    ok = False
    if sys.platform.startswith("linux"):
        for name in ("libtbb.so.12", os.path.join(sys.prefix, "lib", "libtbb.so.12")):
            try:
                lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
                ok = int(lib.TBB_runtime_interface_version()) >= 12060  # (numba's minimum)
                break
            except (OSError, AttributeError):
                continue
    _TBB.append(ok)
    return ok


def region_drivers() -> bool:
    """Whether split convolutions may run their drivers as one numba parallel region
    (``REFNET_NUMBA_DRIVERS``: "1", the default, where the layer is TBB -- installed with the
    ``tbb`` extra --, "any" with any layer (A/B only), "0" never: the worker pool of
    refnet.kernels._workers)."""
    return os.environ.get("REFNET_NUMBA_DRIVERS", "1") in ("1", "any")


def region_threads(nt: int) -> int:
    """Threads for one numba parallel region of the split-convolution drivers asked for ``nt``
    (at most numba's count in this thread), or 0: use the worker pool instead (switch off,
    layer not TBB, numba not started, fewer than 2 threads)."""
    mode = os.environ.get("REFNET_NUMBA_DRIVERS", "1")
    if nt <= 1 or mode not in ("1", "any"):
        return 0
    if not _tbb_layer() and (mode == "1" or not _LAYER):  # (_LAYER empty: numba not started)
        return 0
    return min(nt, _GET_NUM_THREADS[0]() if _GET_NUM_THREADS else load_numba().get_num_threads())


_LAYER: list[str] = []  # [numba's threading layer] once started (it never changes afterwards)


@on_numba_load
def _default_layer(numba: Any) -> None:  # the choice for numba's default thread count, until set_num_threads
    if choose_threading_layer(numba.config.NUMBA_NUM_THREADS) == "tbb":
        start_layer(numba.config.NUMBA_NUM_THREADS)  # now, in the thread loading numba (see start_layer)


def start_layer(n_threads: int) -> str:
    """Choose numba's threading layer for ``n_threads`` (:func:`choose_threading_layer`) and
    start it in this thread; no-op once started. Returns the layer.

    On TBB, numba's start leaves one empty task (``task_group.run``) in the starting thread's
    own TBB arena, and numba's module teardown waits for that task at interpreter exit. Where
    TBB has no worker thread -- a process allowed one CPU (``taskset -c 0``, a one-CPU
    container) -- nothing but the starting thread can run it, so a start from any thread other
    than the main one (refnet's forward thread, a user's thread) hung the process at exit,
    forever (ResNet-50 under ``taskset -c 0``, 2026-12-06). The starting thread runs it here
    (numba's ``synchronize``: ``task_group.wait``), which returns at once where a worker took it."""
    layer = choose_threading_layer(n_threads)
    if threads_launched():
        return layer
    load_numba().get_num_threads()  # (starts the layer)
    if _tbb_layer():
        _run_start_task()
    return threading_layer()


def _run_start_task() -> None:
    """Wait in this thread for the task numba's TBB start left in this thread's arena."""
    import ctypes

    addr = getattr(sys.modules.get("numba.np.ufunc.tbbpool"), "synchronize", None)
    if isinstance(addr, int) and addr:
        ctypes.CFUNCTYPE(None)(addr)()  # (ctypes releases the GIL around the call)


def _inline_launch() -> bool:
    if not _INLINE:
        _INLINE.append(threading_layer() == "omp")
    return _INLINE[0]


def _tbb_layer() -> bool:
    """Whether numba's threading layer is TBB (asked once numba's threads started)."""
    if not _LAYER:
        if not threads_launched():
            return False
        _LAYER.append(threading_layer())
    return _LAYER[0] == "tbb"


class Twin:
    """A kernel compiled serial (``.serial``) and parallel (``.parallel``); calling it picks one
    (or its NumPy twin ``.numpy``, when it has one, under ``numpy_kernels()``)."""

    numpy: Callable[..., Any] | None = None  # see refnet.kernels._lazyjit.numpy_twin

    def __init__(self, fn: Callable[..., Any], work_arg: int) -> None:
        self.parallel = pjit(fn)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                    fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"  # its own numba cache files
        serial.__module__ = fn.__module__
        serial.__doc__ = fn.__doc__
        self._serial = jit(serial)
        self.work_arg = work_arg
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @property
    def serial(self) -> Any:
        """The serial build -- or, in a thread inside ``numpy_kernels()``, the NumPy twin (if
        any): code that takes ``.serial`` to run blocks of one call on other threads (a GEMM
        split) then runs the same kernels as a plain call would."""
        if self.numpy is not None and MODE.on:
            return self.numpy
        return self._serial

    def __call__(self, *args: Any) -> Any:
        if self.numpy is not None and MODE.on:
            return self.numpy(*args)
        if _GET_NUM_THREADS:
            n = _GET_NUM_THREADS[0]()
        else:
            n = load_numba().get_num_threads()
            _GET_NUM_THREADS.append(sys.modules["numba"].get_num_threads)
        if n == 1:  # (this starts the threading layer if nothing did yet)
            if not _inline_launch():
                return self._serial(*args)
        elif args[self.work_arg].size < (min(PARALLEL_MIN_WORK, TBB_MIN_WORK) if _tbb_layer() else PARALLEL_MIN_WORK):
            return self._serial(*args)
        with PARALLEL_LOCK:  # numba's threading layers abort on parallel regions entered concurrently
            return self.parallel(*args)


_GET_NUM_THREADS: list[Callable[[], int]] = []  # [numba.get_num_threads] once numba is loaded


def twin(work_arg: int = -1) -> Callable[[Callable[..., Any]], Twin]:
    """Decorator: compile ``fn`` as a :class:`Twin`; ``work_arg`` is the index of the array
    argument whose size measures the work (default: the last argument, usually the output)."""

    def deco(fn: Callable[..., Any]) -> Twin:
        return Twin(fn, work_arg)

    return deco
