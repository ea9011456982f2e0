# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS := wordnet-base fonts-noto-color-emoji fonts-dejavu-core chromium chromium-driver
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled
# Spinning OpenMP waits slow CPU training several-fold whenever another process wants a core.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test test-fast test-slow lint sysdeps install clean

# System packages: WordNet database files for query lists, colour emoji font for demo images, headless Chromium
# and its driver for `clipmodule serve`'s browser test.
sysdeps:
	@if ! dpkg -s $(SYSDEPS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSDEPS) >/dev/null; \
	  else \
	    echo "missing system packages: $(SYSDEPS) (run as root: apt-get install $(SYSDEPS))" >&2; exit 2; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
# clip-retrieval's ClipClient is `clipmodule serve`'s peer in the tests; its pins would downgrade numpy,
# transformers and open_clip, and the client needs only requests: installed without its dependencies.
	$(PY) -m pip install -q --no-deps "clip-retrieval==2.45.0"
	touch $(STAMP)

install: sysdeps $(STAMP)

# ruff, then the import contracts (pyproject.toml): a broken rule fails fast, before the slow tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Both cores: a worker per core, each test file kept on one worker (module fixtures are built once).
# `-m ""` lifts pyproject's `-m 'not slow'`: the slow tests (multi-rank fits and resume, FSDP, signals, hostile
# URLs end to end, Ray, whole towers against open_clip) are the only checks of those promises, so CI runs them
# too, and the summary lists each with its outcome and time (tests/conftest.py).
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile
test: lint
	$(PYTEST) -m "" --durations=25

# The quick loop while editing: everything but the slow tests.
test-fast: lint
	$(PYTEST) --durations=15

# Only the tests marked slow.
test-slow: install
	$(PYTEST) -m slow --durations=25

demo: install
	$(PY) -m demo

clean:
	rm -rf $(VENV) build *.egg-info .ruff_cache .import_linter_cache
