# A fresh clone needs only python3, git and make: every target sets up what it needs (docs/architecture.md §10).
SHELL := /bin/bash
PY ?= python3
UV_VERSION ?= 0.13.8
# The environment's Python: 3.12 (lerobot 0.6 needs >= 3.12). Found on PATH or in pyenv; PYTHON=/path overrides.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1); do \
  $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p; break; }; done)
# Optional dependency groups (pyproject's extras): "" = the lean CPU pipeline (no torch); "lerobot" adds
# LeRobot 0.6 + torch (load/train/publish, the dataset's LeRobot load-check); "gpu" adds transformers + torch.
EXTRAS ?=
EXTRA_FLAGS = $(foreach e,$(EXTRAS),--extra $(e))
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= $(or $(EGO_ASSETS_HOME),$(CURDIR)/.ego_assets)
MODEL := models/hand_landmarker.task

# Write .pyc caches (some machines set PYTHONDONTWRITEBYTECODE=1, which makes every process recompile
# dagster, scipy and torch from source: seconds per step process).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: sync setup demo test test-fast lint ui bench browser postgres clean

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# The environment as locked (uv.lock), the project in editable mode, plus the EXTRAS asked for. --inexact:
# an extra installed before (by make test) stays, so `make demo` after `make test` still checks the dataset
# with LeRobot; `make clean` starts over.
sync: $(UV)
	$(UV) sync --frozen --inexact --quiet \
	  $(if $(PYTHON),--python $(PYTHON)) $(EXTRA_FLAGS)

# The hand models: built from the networks inside the mediapipe 0.10.21 wheel (PyPI), verified by
# sha256 (see README, "Hand model", for the official bundle). A setup step: the runtime package only
# verifies a model, it never reaches an index.
$(MODEL): | sync
	$(BIN)/python scripts/provision_hand_model.py provision

setup: sync $(MODEL)
	@echo "environment ready: $(VENV) (activate with: source $(BIN)/activate)$(if $(EXTRAS),; extras: $(EXTRAS),; lean: add LeRobot with make setup EXTRAS=lerobot)"

# Debian's Chromium for the browser test of the UI (skipped where apt-get is not available).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium install failed: the UI test will be skipped"; fi

# Debian's PostgreSQL server for the instance-storage test (skipped where apt-get is not available).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null \
	  && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  mkdir -p /etc/postgresql-common && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "postgresql install failed: the PostgreSQL instance test will be skipped"; fi

demo: setup
	EGO_ASSETS_HOME=$(HOME_DIR) $(BIN)/ego-assets demo

# the tests need both extras (LeRobot's loader and lerobot-train; the GPU backends' tests on random weights)
test test-fast: EXTRAS = lerobot gpu
test: setup browser postgres
	$(BIN)/python -m pytest -q

# the unit layer (pyproject's markers): no subprocess CLI, no real-clip pipeline, no services, no kills
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not ui"

# ruff with the rule set of pyproject's [tool.ruff] (pyflakes and a few bug classes; the reasons are there)
lint: sync
	$(BIN)/ruff check .

# Dagster's UI + daemon on 127.0.0.1:PORT (exit 1 with a clear line when the port is taken; Ctrl-C or
# SIGTERM stops every process within seconds). See ego_assets/ui.py.
PORT ?= 3000
ui: setup
	@exec $(BIN)/python -m ego_assets.ui --port $(PORT) --home $(HOME_DIR)

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .ego_assets models
