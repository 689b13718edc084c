# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs

.PHONY: install demo test test-fast lint format bench clean browser

# The lowest Optuna pyproject.toml allows, kept beside the venv's (the highest) for the
# contract tests (tests/test_optuna_contract.py run both).
OPTUNA_LOWEST := $(shell sed -n 's/^ *"optuna>=\([0-9.]*\),.*/\1/p' pyproject.toml)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
	  --target $(VENV)/optuna-lowest 'optuna==$(OPTUNA_LOWEST)'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: search the digits study with 2 workers, show
## its status, export the best params, and train on them.
demo: $(STAMP)
	$(BIN)/hpo-trainer search studies/digits_mlp.py --workers 2 --runs-dir $(RUNS)
	$(BIN)/hpo-trainer status --runs-dir $(RUNS)
	$(BIN)/hpo-trainer export --runs-dir $(RUNS) --out $(RUNS)/best.json
	$(BIN)/hpo-trainer train studies/digits_mlp.py --params $(RUNS)/best.json --runs-dir $(RUNS)
	@echo
	@echo "Browse the study:   $(BIN)/hpo-trainer dashboard --runs-dir $(RUNS)"
	@echo "Curves:             $(BIN)/tensorboard --logdir $(RUNS)"

# The dashboard's browser test uses Debian's headless Chromium. A system install, so it is
# its own target (`.ci/run` calls it before `make test`); without a browser that test skips,
# unless HPO_TRAINER_REQUIRE_BROWSER=1 (set by .ci/run) makes it required.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "warning: could not install chromium; the browser test will skip (fail in CI)"

## The whole suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The fast tier, under 2 minutes: space, loop, checkpoints, callbacks, pruning decisions,
## CLI parser: the tests marked `fast` (a test with no tier mark is slow; tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "fast and not slow"

lint: $(STAMP)
	$(BIN)/ruff check hpo_trainer studies tests benchmarks
	$(BIN)/ruff format --check hpo_trainer studies tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format hpo_trainer studies tests benchmarks
	$(BIN)/ruff check --fix hpo_trainer studies tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loop.py
	$(BIN)/python benchmarks/bench_search.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
