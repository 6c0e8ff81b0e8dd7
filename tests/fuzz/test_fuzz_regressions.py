"""Every input the fuzzing found escaping the error contract, minimised, kept as a regression.

``regressions/index.json`` lists each case: its files, the outcome it must now have, how it
escaped before (measured on the code before the fix) and where it was fixed.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import fuzzlib as F
import pytest

INDEX = json.loads((F.REGRESSIONS / "index.json").read_text())


def test_every_committed_file_is_listed_and_small():
    listed = {f for case in INDEX.values() for f in case["files"].values()} | {"index.json", "README.md"}
    present = {p.name for p in F.REGRESSIONS.iterdir()}
    assert present == listed, present ^ listed
    assert all(p.stat().st_size <= 64 * 1024 for p in F.REGRESSIONS.iterdir())


@pytest.mark.parametrize("name", sorted(INDEX))
def test_regression(name):
    case = INDEX[name]
    files = {role: (F.REGRESSIONS / fn).read_bytes() for role, fn in case["files"].items()}
    tracemalloc.start()
    # CPU time of this process: the contract bounds the loader's work, not what else the machine runs
    t = time.process_time()
    try:
        outcome = F.run_case(F.Case(case["format"], files, name))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome == case["expect"], (name, outcome)
    assert peak < max(256 << 20, 4 * sum(map(len, files.values())))
    assert time.process_time() - t < 5.0


def test_escape_files_written_by_run_long_are_readable(tmp_path):
    """run_long.py's escape files (bytes + a JSON note) load back into the same case."""
    import run_long

    path = run_long._save_escape("caffemodel", 3, "Demo", 0, tmp_path, minimise=False)
    note = json.loads(Path(str(path) + ".json").read_text())
    case, _ = F.generate("caffemodel", 3, 0)
    for role, data in case.files.items():
        ext = {"prototxt": ".prototxt", "caffemodel": ".caffemodel"}[role]
        assert Path(str(path) + ext).read_bytes() == data
    assert note["format"] == "caffemodel" and note["index"] == 3 and note["kind"] == "Demo"
