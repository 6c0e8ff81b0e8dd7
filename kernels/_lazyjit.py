"""Kernels that import numba (and compile, or load from numba's cache) on their first call.

``import refnet.kernels`` used to import numba (0.15-0.2 s) and build ~60 numba dispatchers;
loading a model (which needs only the shape rules) and ``refnet info`` paid for it, and numba
plus LLVM are most of a small model's resident memory. :func:`lazy_njit` returns a decorator
whose :class:`LazyDispatcher` imports numba and builds the real ``numba.njit`` dispatcher the
first time the kernel is called (or an attribute of the dispatcher is asked for); from then on
the module's global name is the real dispatcher, so calls pay no extra hop.

Inside jitted code a call to another kernel resolves through numba's ``typeof`` of the
:class:`LazyDispatcher`, registered when numba is first imported; ``prange`` is a plain-range
stand-in until then and is swapped for ``numba.prange`` in the kernel modules' namespaces
before anything compiles (numba recognises parallel loops by that object).

numba's CPU target imports ``numba.np.arraymath`` on its first compile, which imports
``scipy.linalg`` only to learn whether ``np.dot`` can use a BLAS (0.13-0.2 s and a second
OpenBLAS library in memory). refnet's jitted kernels never call ``np.dot``, ``np.vdot``,
``np.convolve``/``np.correlate`` or ``np.linalg`` (their GEMMs run in NumPy), so that probe
runs with scipy's ``cython_blas`` hidden: the only effect is that ``np.convolve`` and
``np.correlate`` inside jitted code would use a plain loop; ``np.dot`` and ``np.linalg`` still
import scipy when something compiles them.

NumPy twins (small nets without numba): a jitted helper may carry a vectorised NumPy
implementation with the same signature and results (``kernel.numpy``, set by
:func:`numpy_twin`; the twins live in :mod:`refnet.kernels._numpy_twins`). Inside
``with numpy_kernels():`` (per thread) a call of such a helper runs the NumPy twin, so a
forward pass whose helpers all have twins never imports numba and LLVM (~0.3 s and ~120 MB
of a small model's start-up and memory). Helpers without a twin still run on numba there.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["lazy_njit", "LazyDispatcher", "prange", "load_numba", "on_numba_load", "numba_loaded",
           "jit_disabled", "numpy_kernels", "numpy_kernels_on", "numpy_twin"]

_HOOKS: list[Callable[[Any], None]] = []
_LOADED: list[Any] = []  # [numba] once load_numba ran


def prange(*args: int) -> range:
    """``numba.prange`` before numba is imported (kernel modules' globals get the real one)."""
    return range(*args)


def on_numba_load(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``fn(numba)`` to run once, when :func:`load_numba` first imports numba (or
    now, if it already did)."""
    if _LOADED:
        fn(_LOADED[0])
    else:
        _HOOKS.append(fn)
    return fn


def numba_loaded() -> bool:
    """Whether :func:`load_numba` ran in this process."""
    return bool(_LOADED)


def jit_disabled() -> bool:
    """numba's ``DISABLE_JIT``, without importing numba (a small net's program may never load it:
    refnet.runtime.smallnet)."""
    if _LOADED:
        return bool(_LOADED[0].config.DISABLE_JIT)
    import os

    return os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0")


class _Mode(threading.local):
    on = False


MODE = _Mode()  # MODE.on: this thread runs the NumPy twins of jitted helpers (numpy_kernels)


@contextlib.contextmanager
def numpy_kernels(on: bool = True) -> Iterator[None]:
    """Within the block, this thread's calls of jitted helpers that have a NumPy twin run the
    twin (``on=False``: the numba kernels, e.g. to compare both)."""
    before = MODE.on
    MODE.on = bool(on)
    try:
        yield
    finally:
        MODE.on = before


def numpy_kernels_on() -> bool:
    """Whether this thread is inside ``numpy_kernels()``."""
    return MODE.on


def numpy_twin(kernel: Any, unloaded: Callable[..., bool] | None = None
               ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the NumPy twin of ``kernel`` (a :class:`LazyDispatcher` or a
    :class:`refnet.kernels._parallel.Twin`): same arguments, same outputs to float32 rounding.
    ``unloaded(*args)`` (a plain :class:`LazyDispatcher` only): also use the twin outside
    ``numpy_kernels()`` while numba is not loaded, for calls it returns True for (where the
    twin is as fast, e.g. NMS of a few hundred boxes after a small net's forward pass)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        kernel.numpy = fn
        if unloaded is not None:
            kernel.numpy_unloaded = unloaded
        return fn

    return deco


def _import_numba_without_scipy_probe() -> Any:
    import numba

    if "numba.np.arraymath" not in sys.modules and "scipy.linalg.cython_blas" not in sys.modules:
        hidden = "scipy.linalg.cython_blas"
        sys.modules[hidden] = None  # type: ignore[assignment]  # `import` of it raises ImportError
        try:
            import numba.np.arraymath  # noqa: F401
        finally:
            if sys.modules.get(hidden, 0) is None:
                del sys.modules[hidden]
    return numba


def load_numba() -> Any:
    """Import numba (once), register the lazy dispatcher type with it, run the hooks."""
    if _LOADED:
        return _LOADED[0]
    from refnet.kernels._cache import install_numba_hooks
    from refnet.kernels._jit import CACHE

    if CACHE.note:
        print(CACHE.note, file=sys.stderr)
    numba = _import_numba_without_scipy_probe()
    if CACHE.path is not None:
        numba.config.CACHE_DIR = CACHE.path  # in case numba was imported before refnet chose it
    install_numba_hooks()
    from numba.core import types
    from numba.core.typing.typeof import typeof_impl

    @typeof_impl.register(LazyDispatcher)
    def _typeof_lazy(val: LazyDispatcher, c: Any) -> Any:
        return types.Dispatcher(val.materialize())

    _LOADED.append(numba)
    while _HOOKS:
        _HOOKS.pop(0)(numba)
    return numba


class LazyDispatcher:
    """A jitted function not built yet: calling it (or asking for a dispatcher attribute)
    builds ``numba.njit(**options)(py_func)`` and rebinds the module's global name to it
    (unless it has a NumPy twin: then calls keep passing here, to pick one per call)."""

    numpy: Callable[..., Any] | None = None  # the NumPy twin (numpy_twin), used under numpy_kernels()
    numpy_unloaded: Callable[..., bool] | None = None  # and for these calls while numba is not loaded

    def __init__(self, py_func: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, py_func)
        self.py_func = py_func
        self._options = options
        self._real: Any = None

    def materialize(self) -> Any:
        """The real numba dispatcher (built on the first call)."""
        if self._real is None:
            numba = load_numba()
            g = self.py_func.__globals__
            for k, v in list(g.items()):
                if v is prange:
                    g[k] = numba.prange
            try:
                self._real = numba.njit(**self._options)(self.py_func)
            except RuntimeError:  # "cannot cache function ...: no locator available": run uncached
                self._real = numba.njit(**{**self._options, "cache": False})(self.py_func)
            name = self.py_func.__name__
            if self.numpy is None and g.get(name) is self:
                g[name] = self._real
            pkg = sys.modules.get("refnet.kernels")
            if self.numpy is None and pkg is not None and getattr(pkg, name, None) is self:
                setattr(pkg, name, self._real)
        return self._real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.numpy is not None and (MODE.on or (self.numpy_unloaded is not None and not _LOADED
                                                   and self.numpy_unloaded(*args, **kwargs))):
            return self.numpy(*args, **kwargs)
        real = self._real if self._real is not None else self.materialize()
        return real(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_real", "_options", "py_func", "numpy", "numpy_unloaded"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __repr__(self) -> str:
        return f"<lazy numba dispatcher {self.py_func.__qualname__}{' (built)' if self._real is not None else ''}>"


def lazy_njit(**options: Any) -> Callable[[Callable[..., Any]], LazyDispatcher]:
    """Like ``numba.njit(**options)`` used as a bare decorator, but numba is imported and the
    dispatcher built on the first call."""

    def deco(fn: Callable[..., Any]) -> LazyDispatcher:
        return LazyDispatcher(fn, dict(options))

    return deco
