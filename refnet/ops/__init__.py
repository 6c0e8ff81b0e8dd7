"""IR op implementations. Importing this package registers every op module in it
(refnet/ops/*.py other than registry and doc), so an importer may add its own op module."""

from __future__ import annotations

import importlib
import pkgutil

from refnet.ops.registry import OPS, Ctx, get, known_ops, register

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m not in ("registry", "doc") and not _m.startswith("_"):
        importlib.import_module(f"{__name__}.{_m}")

__all__ = ["OPS", "Ctx", "get", "known_ops", "register"]
