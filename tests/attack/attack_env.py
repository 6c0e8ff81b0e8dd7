"""tests/attack: REFNET_MODELS as the suite finds it (tests/conftest.py), exported for the
child processes too (not a conftest.py: a second module named conftest would shadow the suite's)."""

from __future__ import annotations

import pytest

from refnet.zoo import models_dir as attack_models_dir  # REFNET_MODELS, else ../shared/models


@pytest.fixture(autouse=True)
def models_env(monkeypatch):
    d = attack_models_dir()
    if d is not None:
        monkeypatch.setenv("REFNET_MODELS", str(d))
