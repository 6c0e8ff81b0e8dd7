"""Memory and compute budgets: work refused up front, before it allocates or runs.

DESIGN.md "Errors and budgets": a forward pass, a trace (every layer kept, what ``compare``
runs), a decoded image and a download each get at most the **memory budget**; one layer gets
at most the **compute budget** (multiply-accumulates, or window elements for pooling). Work
over a budget raises :class:`refnet.errors.BudgetError` naming the layer, the need and the
limit, before anything big is allocated.

Limits, first found wins:

- memory: :func:`set_memory_budget` (Python), ``$REFNET_MEMORY_BUDGET`` (bytes; suffixes
  K/M/G/T and KiB/MiB/GiB/TiB; ``none`` for no limit), else the smaller of half the available
  memory (``MemAvailable`` of /proc/meminfo, else physical memory) and what is left of the
  process's address-space limit RLIMIT_AS (the limit minus the address space in use now);
- compute: :func:`set_compute_budget`, ``$REFNET_COMPUTE_BUDGET`` (MACs per layer, same
  suffixes, ``none``), else :data:`DEFAULT_COMPUTE` (10^11 per layer: minutes of float64
  reference work on one core; the largest layer of VGG-16 at 224x224 is 1.85 x 10^9).

What is counted (estimates, on the safe side): a forward pass needs the net's parameters in
the run precision plus, at its worst step, every tensor still alive, the step's outputs and
kernel temporaries of up to twice the largest of the step's inputs, its outputs and its
padded working array (the float64 reference kernels pad inputs and build per-tap windows: a
convolution's or N-d pooling's input with its padding, a deconvolution's output before its
padding is cropped: :func:`padded_bytes`), so pads of 10^8 with a stride of 10^8 (a tiny
output) are refused, not allocated. A decoded image needs width x height
x channels x bytes per sample, read from the file header before decoding.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from refnet.errors import BudgetError

__all__ = ["memory_budget", "compute_budget", "set_memory_budget", "set_compute_budget", "parse_size",
           "check_memory", "check_compute", "check_plan", "check_step", "PlanCost", "check_compare", "layer_work",
           "image_need",
           "MEMORY_ENV", "COMPUTE_ENV", "DEFAULT_COMPUTE", "fmt_bytes"]

MEMORY_ENV = "REFNET_MEMORY_BUDGET"
COMPUTE_ENV = "REFNET_COMPUTE_BUDGET"
DEFAULT_COMPUTE = 10**11
_UNSET: Any = object()
_memory_override: Any = _UNSET
_compute_override: Any = _UNSET

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "b": 1}


def parse_size(text: str | int | float | None, what: str = "budget") -> int | None:
    """``"2G"`` -> 2 * 10**9, ``"512MiB"`` -> 2**29, ``"1e9"`` -> 10**9, ``"none"``/``"inf"``/None -> None
    (no limit). ValueError for anything else, naming ``what``."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text != text or text <= 0:
            raise ValueError(f"{what} must be a positive number, got {text!r}")
        return None if math.isinf(text) else int(text)
    s = str(text).strip().lower()
    if s in ("none", "inf", "unlimited", "off"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)", s)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"{what} must be a size such as 4G, 512MiB or 1e9 (or 'none'), got {text!r}")
    n = float(m.group(1)) * _UNITS[m.group(2)]
    if n <= 0 or math.isinf(n):
        raise ValueError(f"{what} must be positive, got {text!r}")
    return int(n)


def fmt_bytes(n: float) -> str:
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = 0
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - used, 0)


def default_memory_budget() -> int | None:
    """min(half the available memory, RLIMIT_AS minus the address space in use); None if neither is known."""
    avail, left = _available_memory(), _address_space_left()
    cands = ([avail // 2] if avail is not None else []) + ([left] if left is not None else [])
    return min(cands) if cands else None


def _budget(override: object, env_name: str, default: Callable[[], int | None]) -> int | None:
    """The override set in this process, else the environment variable, else the default."""
    if override is not _UNSET:
        return override  # type: ignore[return-value]
    env = os.environ.get(env_name)
    return parse_size(env, env_name) if env else default()


def memory_budget() -> int | None:
    """The memory budget in bytes (None: no limit), as the module docstring says."""
    return _budget(_memory_override, MEMORY_ENV, default_memory_budget)


def compute_budget() -> int | None:
    """The compute budget in MACs per layer (None: no limit)."""
    return _budget(_compute_override, COMPUTE_ENV, lambda: DEFAULT_COMPUTE)


def set_memory_budget(limit: int | float | str | None = _UNSET) -> int | None:
    """Set the memory budget in bytes (or ``"4G"``-style text; None or ``"none"`` for no limit);
    called without an argument, go back to the environment/default. Returns the budget now."""
    global _memory_override
    _memory_override = _UNSET if limit is _UNSET else parse_size(limit, "memory budget")
    return memory_budget()


def set_compute_budget(limit: int | float | str | None = _UNSET) -> int | None:
    """Set the compute budget in MACs per layer (None/``"none"``: no limit); no argument: back
    to the environment/default. Returns the budget now."""
    global _compute_override
    _compute_override = _UNSET if limit is _UNSET else parse_size(limit, "compute budget")
    return compute_budget()


def _how_to_raise(kind: str) -> str:
    if kind == "compute":
        return f"raise it with {COMPUTE_ENV} or refnet.set_compute_budget()"
    return f"raise it with {MEMORY_ENV} or refnet.set_memory_budget()"


def check_memory(need: int, what: str, *, layer: str | None = None, limit: int | None = _UNSET) -> None:
    """BudgetError when ``need`` bytes exceed the memory budget (or ``limit``)."""
    limit = memory_budget() if limit is _UNSET else limit
    if limit is not None and need > limit:
        raise BudgetError("memory", what, need=int(need), limit=int(limit), layer=layer,
                          unit="bytes", hint=_how_to_raise("memory"))


def check_compute(work: int, what: str, *, layer: str | None = None) -> None:
    limit = compute_budget()
    if limit is not None and work > limit:
        raise BudgetError("compute", what, need=int(work), limit=int(limit), layer=layer,
                          unit="MACs", hint=_how_to_raise("compute"))


# ---- a forward pass -------------------------------------------------------------------------------
def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(max(0, int(d)) for d in shape))


def layer_work(node: Any, ins: Sequence[Sequence[int]], outs: Sequence[Sequence[int]]) -> int:
    """A layer's work: its MACs (refnet.info's rules), for max pooling its window elements, and
    at least one operation per output element."""
    from refnet.info import layer_macs  # (info imports net; net imports this module)

    try:
        work = layer_macs(node, ins, outs)
    except (KeyError, IndexError, TypeError, ValueError):
        work = 0
    if node.op == "max_pool" and ins and outs:
        from refnet.ops.registry import attrs

        a = attrs(node)
        if a["global_pooling"]:
            work = max(work, _numel(ins[0]))
        else:
            work = max(work, _numel(outs[0]) * int(math.prod(a["kernel"])))
    return max(work, sum(_numel(s) for s in outs))


def padded_bytes(node: Any, ins: Sequence[Sequence[int]], outs: Sequence[Sequence[int]], itemsize: int) -> int:
    """Bytes of the padded array a window kernel works on besides its input and output: a
    ``conv``'s input with its padding (in the run precision), an N-d pooling's (``pool_nd``:
    the reference kernel pads in float64, its ends extended so that ceil-mode windows stay
    inside), a ``deconv``'s full output before ``pad`` crops it; 0 for other ops, and when the
    geometry is not readable (the shape function reports that)."""
    from refnet.ops.registry import attrs

    if node.op not in ("conv", "deconv", "pool_nd") or not ins or not outs or len(ins[0]) < 3:
        return 0
    try:
        a = attrs(node)
        x, y = [max(0, int(d)) for d in ins[0]], [max(0, int(d)) for d in outs[0]]
        if node.op == "conv":
            pt, pl, pb, pr = (int(v) for v in a["pad"])
            return x[0] * x[1] * max(x[2] + pt + pb, 0) * max(x[3] + pl + pr, 0) * itemsize
        if node.op == "deconv":
            (sh, sw), (dh, dw), (pt, pl, _, _) = a["stride"], a["dilation"], a["pad"]
            kh, kw = (int(v) for v in node.params["weight"].shape[2:4])
            hf = max((x[2] - 1) * sh + dh * (kh - 1) + 1, pt + y[2])
            wf = max((x[3] - 1) * sw + dw * (kw - 1) + 1, pl + y[3])
            return y[0] * y[1] * max(hf, 0) * max(wf, 0) * itemsize
        k = len(a["kernel"])
        spans = [max(x[2 + i] + int(a["pads"][i]) + int(a["pads"][k + i]),
                     (y[2 + i] - 1) * int(a["strides"][i]) + (int(a["kernel"][i]) - 1) * int(a["dilations"][i]) + 1)
                 for i in range(k)]
        return x[0] * x[1] * math.prod(max(v, 0) for v in spans) * 8
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return 0


def _step_bytes(node: Any, ins: Sequence[Sequence[int]], outs: Sequence[Sequence[int]], itemsize: int) -> int:
    """What one step adds to the tensors alive before it: its outputs, and kernel temporaries of
    up to twice the largest of its inputs, its outputs and its padded working array."""
    out_bytes = sum(_numel(s) for s in outs) * itemsize
    in_bytes = sum(_numel(s) for s in ins) * itemsize
    return out_bytes + 2 * max(in_bytes, out_bytes, padded_bytes(node, ins, outs, itemsize))


class PlanCost:
    """What :func:`check_plan` found: peak bytes (estimate) and total work (MACs) of a planned run."""

    __slots__ = ("peak_bytes", "work")

    def __init__(self, peak_bytes: int, work: int) -> None:
        self.peak_bytes = peak_bytes
        self.work = work


def check_plan(steps: Iterable[Any], shapes: Mapping[str, Sequence[int]], inputs: Iterable[str],
               itemsize: int, what: str = "a forward pass") -> PlanCost:
    """Refuse a planned run over the compute or memory budget; return its :class:`PlanCost`.

    ``steps`` have ``.node`` (with ``.params``), ``.inputs``, ``.outputs`` and ``.free`` (tensor
    names dropped after the step: the executor's liveness); ``shapes`` every tensor's shape."""
    steps = list(steps)
    mem_limit = memory_budget()
    params = sum(int(getattr(v, "size", 0)) for st in steps for v in st.node.params.values()) * itemsize
    live: dict[str, int] = {t: _numel(shapes[t]) * itemsize for t in inputs if t in shapes}
    cur = sum(live.values())
    peak, total = cur, 0
    for st in steps:
        node = st.node
        ins = [tuple(shapes[t]) for t in st.inputs if t in shapes]
        outs = [tuple(shapes[t]) for t in st.outputs if t in shapes]
        work = layer_work(node, ins, outs)
        check_compute(work, what, layer=node.name)
        total += work
        need = cur + _step_bytes(node, ins, outs, itemsize)
        if need > peak:
            peak = need
            if mem_limit is not None and params + peak > mem_limit:
                check_memory(params + peak, what, layer=node.name, limit=mem_limit)
        for t, s in zip(st.outputs, outs):
            if t not in live:
                live[t] = _numel(s) * itemsize
                cur += live[t]
        for t in st.free:
            cur -= live.pop(t, 0)
    return PlanCost(params + peak, total)


def check_step(node: Any, ins: Sequence[Sequence[int]], outs: Sequence[Sequence[int]], itemsize: int,
               what: str = "a forward pass") -> None:
    """Refuse one step over the compute budget, or whose outputs and temporaries alone (as
    :func:`check_plan` counts them) exceed the memory budget: for a step whose shapes are known
    only at run time (after NonMaxSuppression), checked by the executor just before it runs."""
    check_compute(layer_work(node, ins, outs), what, layer=node.name)
    check_memory(_step_bytes(node, ins, outs, itemsize), what, layer=node.name)


def check_compare(net: Any, feeds: Mapping[str, Any], precisions: Sequence[str] = ("float64", "float32"),
                  cv2_runs: int = 2, chunk_bytes: int = 0) -> int:
    """Refuse a ``compare`` over the memory budget before it starts; return its estimate in bytes.

    A compare keeps every layer's output of the float64 trace (8 bytes per element), of the
    float32 trace (4) when asked, and of ``cv2_runs`` per-layer cv2.dnn runs (4 each, Winograd
    off and on; 0 when cv2.dnn is left out, as for ONNX models), plus the parameters in float64
    and ``chunk_bytes`` (one chunk of another backend's per-layer outputs). Shapes that do not fit
    are left to the trace to report (ShapeError)."""
    from refnet.errors import ShapeError

    try:
        shapes = net.infer_shapes({k: tuple(getattr(v, "shape", ())) for k, v in feeds.items()})
    except ShapeError:
        return 0
    elements = sum(_numel(shapes[t]) for n in net.graph.nodes for t in n.outputs if t in shapes)
    per = 8 + (4 if "float32" in precisions else 0) + 4 * int(cv2_runs)
    params = sum(int(getattr(v, "size", 0)) for n in net.graph.nodes for v in n.params.values()) * 8
    need = elements * per + params + int(chunk_bytes)
    runs = f" and {cv2_runs} cv2.dnn run{'s' if cv2_runs != 1 else ''}" if cv2_runs else ""
    check_memory(need, f"a compare keeping every layer's output ({elements:,} elements) of refnet float64"
                       f"{', float32' if 'float32' in precisions else ''}{runs}")
    return need


# ---- images -------------------------------------------------------------------------------------
def image_need(width: int, height: int, channels: int = 3, bytes_per_sample: int = 1) -> int:
    """Bytes of a decoded ``width`` x ``height`` image: the file's own samples (e.g. 16-bit RGBA)
    and the 8-bit BGR picture made from them."""
    px = max(0, int(width)) * max(0, int(height))
    return px * max(1, int(channels)) * max(1, int(bytes_per_sample)) + px * 3
