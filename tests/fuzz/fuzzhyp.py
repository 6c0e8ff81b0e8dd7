"""The hypothesis side of the fuzz suite, shared by every format's test module."""

from __future__ import annotations

import fuzzlib as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(examples: int) -> settings:
    """Deterministic settings scaled by FUZZ_EXAMPLES (see fuzzlib.examples)."""
    return settings(max_examples=F.examples(examples), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, fmt: str, n_ops: int | None = None) -> F.Case:
    """A seed of format ``fmt`` after ``n_ops`` (default: random) structure-aware mutations."""
    seed = draw(st.sampled_from(F.seeds(fmt)))
    rnd = draw(st.randoms(use_true_random=False))
    data, how = F.mutate(seed, rnd, n_ops)
    return seed.case(data, f"{seed.name}/{how}")
