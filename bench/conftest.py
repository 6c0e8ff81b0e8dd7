"""Benchmarks: collect ``bench_*.py`` files (pytest only collects ``test_*.py`` by default), so
``pytest bench`` (make bench, CI's smoke run) finds every suite in this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # named on the command line: pytest does it
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
