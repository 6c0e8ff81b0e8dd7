# refnet: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
REFNET_MODELS ?= $(abspath ../shared/models)
export REFNET_MODELS
# numba's cache: the per-user folder refnet picks itself (refnet/kernels/_cache.py), as for direct runs

.PHONY: demo test bench lint fuzz clean venv cv5 attack-readonly

$(VENV)/.installed-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[plot]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base
	$(PIP) install -q -e ".[test,plot]"
	touch $@

# cv2 5.x cannot share a process with the pinned cv2 4.x: it lives in its own venv and is
# driven as a subprocess worker (`--backend cv2@PYTHON`); the tests find it through REFNET_CV5_PYTHON
CV5_VENV := .venv-cv5
$(CV5_VENV)/.installed:
	test -x $(CV5_VENV)/bin/python || $(PYTHON) -m venv $(CV5_VENV)
	$(CV5_VENV)/bin/python -m pip install -q --upgrade pip
	$(CV5_VENV)/bin/python -m pip install -q "opencv-python>=5,<6" "numpy>=2"
	touch $@
export REFNET_CV5_PYTHON ?= $(abspath $(CV5_VENV)/bin/python)

cv5: $(CV5_VENV)/.installed

venv: $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(VENV)/bin/refnet demo --out demo-out

test: $(VENV)/.installed-test $(CV5_VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only --benchmark-columns=min,median,mean,rounds --benchmark-group-by=group $(PYTEST_ARGS)

# fuzzing: the CI suite with 10x its hypothesis examples, then a long run in a memory-limited worker
# (tests/fuzz/run_long.py): FUZZ_EXAMPLES inputs in all (split over the six formats), or FUZZ_SECONDS
FUZZ_EXAMPLES ?= 120000
FUZZ_SECONDS ?= 0
FUZZ_SEED ?= 0
fuzz: $(VENV)/.installed-test
	FUZZ_CI_SCALE=10 $(PY) -m pytest tests/fuzz -q -p no:cacheprovider $(PYTEST_ARGS)
	$(PY) tests/fuzz/run_long.py --total $(FUZZ_EXAMPLES) --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --json fuzz-run.json

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check refnet kernels weights_import tests bench

clean:
	rm -rf .numba_cache .pytest_cache .ruff_cache demo-out bench-out
	find . -name __pycache__ -prune -exec rm -rf {} +

# gradients (issue 19): PyTorch autograd (second oracle of the backward kernels) and scikit-learn
# (the transfer-learning demo's digits and its linear baseline) for the tests; ~30 s from the wheels
$(VENV)/.installed-grad: $(VENV)/.installed-test
	$(PIP) install -q -e ".[test,plot,torch,demo]"
	touch $@
test: $(VENV)/.installed-grad
# issue 16's read-only install, for real (root: a throwaway user, a venv with read-only site-packages)
attack-readonly:
	bash tests/attack/readonly_install.sh
