"""When the compiled scanners (``_textscan``, ``_wirescan``) are worth their start-up cost.

Both scanners are numba code. In a process that has not run a numba kernel yet, their first
call imports numba and initialises its CPU target (0.4-0.6 s measured on the issue-17
machine), while the pure-Python paths they shortcut (the token parser, the schema-driven
decoder) read every zoo model in 0.2-15 ms. So a load uses the compiled scanners once numba
is loaded anyway (a forward pass ran, or a kernel), once this process has spent
:data:`PYTHON_BUDGET_S` seconds in the Python paths (many loads in one process: then the
compiled start-up pays for itself, as in renting skis until their price is spent), or for
text so large (:data:`TEXT_COMPILED_FROM`) that the token parser's token list outweighs numba's
start-up memory; else the Python path. Both give the same result on every input
(tests/fuzz/test_fuzz_prototxt.py, test_fuzz_caffemodel.py), so this is a speed and memory
choice only.

Why the scanners stay (issue 12, measured with ``python bench/scan_decision.py``: CPU seconds of
one ``load_caffe`` in a fresh child, median of 3, paths alternating; 2 shared cores, load 8-10):

=================================  =========  =============  =============  ===============
case                               Python     compiled,      compiled,      compiled, numba
                                   decoders   cold cache     warm cache     already loaded
=================================  =========  =============  =============  ===============
prototxt, 100k layers (7.8 MB)     2.17 s     9.97 s         1.89 s         1.44 s
GoogLeNet, 28 MB caffemodel        0.089 s    14.9 s         0.42 s         0.014 s
yufacedetectnet-v2, 3.5 MB (real)  0.049 s    15.3 s         0.45 s         0.005 s
=================================  =========  =============  =============  ===============

(peak RSS: 207 / 484 / 306 / 306 MiB for the prototxt; 131 / 419 / 201 / 201 MiB for GoogLeNet.)
In a fresh process the Python decoders win (numba's start-up, 0.4 s, is more than they take),
which is what this policy picks there. Once numba is loaded (a forward ran: compare, demo,
bench, an application loading several models) the wire scanner reads real caffemodels 6-10x
faster (5 ms vs 49 ms for yufacedetectnet-v2; bench/bench_load.py's refnet-vs-cv2 load ratios,
issue 17, are measured with them), and the text scanner reads long prototxts 1.5x faster. A
cold numba cache costs ~10-15 s of compilation once per cache folder. So they stay, as the
optional fast path: nothing depends on them but speed.
"""

from __future__ import annotations

import sys

__all__ = ["compiled_scan_pays", "spent_in_python", "TEXT_COMPILED_FROM", "PYTHON_BUDGET_S"]

# bytes of prototxt from which a fresh process takes the compiled scanner anyway. Measured on a
# 7.8 MB, 100k-layer prototxt in a fresh process: the same CPU time both ways (2.4-2.6 s user,
# import included), but 227 MiB peak with the token parser and 358 MiB with the scanner (numba's
# start-up alone is ~150 MiB); the token parser's transient token list (~8 bytes per byte of
# text) outgrows numba's start-up only past ~16 MiB of text.
TEXT_COMPILED_FROM = 16 << 20
PYTHON_BUDGET_S = 0.3  # about what the compiled scanners' first call costs in a fresh process
_SPENT = [0.0]  # seconds spent in the Python paths because of this policy, in this process


def spent_in_python(seconds: float) -> None:
    """Count ``seconds`` spent in a Python path that a compiled scanner could have taken."""
    _SPENT[0] += seconds


def _numba_loaded() -> bool:
    return "numba" in sys.modules


def compiled_scan_pays(nbytes: int, python_from: int | None = None) -> bool:
    """Whether to use a compiled scanner on ``nbytes`` of input: numba is loaded already, the
    Python paths have had their budget, or the input is at least ``python_from`` bytes (None:
    never too large for the Python path)."""
    if _numba_loaded() or _SPENT[0] >= PYTHON_BUDGET_S:
        return True
    return python_from is not None and nbytes >= python_from
