"""Shared set-up of the paired old-vs-new kernel scripts (bench/pool_ab.py, bench/im2col_ab.py):
the command line (a saved older copy of a kernels module, --rounds), one thread, and both
modules loaded side by side."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from types import ModuleType


def old_and_new(doc: str, module: str, rounds: int) -> tuple[argparse.Namespace, ModuleType, ModuleType]:
    """(arguments, the old copy given on the command line, refnet's ``module``) at one thread."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("old", help=f"a copy of an older {module.replace('refnet.', '').replace('.', '/')}.py")
    ap.add_argument("--rounds", type=int, default=rounds)
    a = ap.parse_args()
    from refnet.runtime.threads import set_num_threads

    set_num_threads(1)
    spec = importlib.util.spec_from_file_location(module.rsplit(".", 1)[1] + "_old", a.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    return a, old, importlib.import_module(module)
