"""tests/attack: REFNET_MODELS as the suite finds it (tests/conftest.py), exported for the
child processes too (not a conftest.py: a second module named conftest would shadow the suite's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def attack_models_dir() -> Path | None:
    p = os.environ.get("REFNET_MODELS")
    if p and Path(p).is_dir():
        return Path(p)
    guess = Path(__file__).resolve().parents[3] / "shared" / "models"
    return guess if guess.is_dir() else None


@pytest.fixture(autouse=True)
def models_env(monkeypatch):
    d = attack_models_dir()
    if d is not None:
        monkeypatch.setenv("REFNET_MODELS", str(d))
