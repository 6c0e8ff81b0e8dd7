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
