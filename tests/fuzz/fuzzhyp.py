"""The hypothesis side of the fuzz suite, shared by every format's test module."""

from __future__ import annotations

from collections.abc import Callable

import fuzzlib as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def bytes_settings(examples: int) -> settings:
    """Deterministic settings scaled by FUZZ_EXAMPLES (see fuzzlib.examples), health checks on."""
    return settings(max_examples=F.examples(examples), deadline=None, derandomize=True, database=None)


def fuzz_settings(examples: int) -> settings:
    """:func:`bytes_settings` without the too_slow / data_too_large health checks (mutated seeds are big)."""
    return settings(bytes_settings(examples),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def random_bytes(fmt: str, max_size: int) -> st.SearchStrategy[F.Case]:
    """Random bytes (up to ``max_size``) as the one file of a ``fmt`` case."""
    return st.binary(max_size=max_size).map(lambda data: F.Case(fmt, {fmt: data}))


def contract_test(cases: st.SearchStrategy[F.Case], how: settings) -> Callable[..., None]:
    """A test asserting the error contract on every case drawn from ``cases``: it loads, or raises a
    refnet error that names the file and a place (:func:`fuzzlib.run_case` raises Escape otherwise)."""

    @given(cases)
    @how
    def test(case: F.Case) -> None:
        F.run_case(case)

    return test


@st.composite
def mutated(draw, fmt: str, n_ops: int | None = None) -> F.Case:
    """A seed of format ``fmt`` after ``n_ops`` (default: random) structure-aware mutations."""
    seed = draw(st.sampled_from(F.seeds(fmt)))
    rnd = draw(st.randoms(use_true_random=False))
    data, how = F.mutate(seed, rnd, n_ops)
    return seed.case(data, f"{seed.name}/{how}")
