# trm-sre developer entry points. `make help` lists the targets.
#
# Override any variable on the command line, e.g.
#   make test PYTEST_ARGS='tests/test_controlplane.py -x'
#   make run RUN_ARGS='--verbose'
#   VENV=/tmp/venv make test

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY = $(VENV)/bin/python
# The interpreter the venv is made from: 3.11 is what requirements.lock targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)

CACHE := $(HOME)/.cache/trm-sre
export UV_CACHE_DIR ?= $(CACHE)/uv
export PIP_CACHE_DIR ?= $(CACHE)/pip
# uv must use the interpreter we name, never fetch one of its own.
export UV_PYTHON_DOWNLOADS := never

# The stamp is keyed on the lock file's content (not its mtime), so a fresh
# clone reuses a cached venv and any lock change reinstalls; and on this
# checkout's path, so the editable install never points at an old clone.
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-12)
TREE_HASH := $(shell echo '$(CURDIR)' | sha256sum | cut -c1-8)
STAMP := $(VENV)/.installed-$(LOCK_HASH)-$(TREE_HASH)

RUN_ARGS ?=
PYTEST_ARGS ?=
TRAIN_ARGS ?=
# The per-source table on the held-out sources (repositories the model never trained on).
EVAL_ARGS ?= models/datasets/sources --by-source --selector trm --batch-size 64
BENCH ?=
BENCH_ARGS ?=

.PHONY: help venv run envtest bench-peer test lint format train eval bench e2e-kind lock clean distclean

help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## create or update the venv (VENV=.venv) from requirements.lock

$(STAMP): requirements.lock pyproject.toml
	@uv=""; \
	if command -v uv >/dev/null; then uv=uv; \
	elif python3 -m uv --version >/dev/null 2>&1; then uv="python3 -m uv"; \
	elif python3 -m pip install --user --quiet uv; then uv="python3 -m uv"; fi; \
	if [ -n "$$uv" ]; then \
	  [ -x $(PY) ] || $$uv venv --python $(PYTHON) $(VENV); \
	  $$uv pip sync --python $(PY) requirements.lock; \
	  $$uv pip install --python $(PY) --no-deps -e .; \
	else \
	  echo "uv unavailable; falling back to venv + pip"; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet -r requirements.lock; \
	  $(PY) -m pip install --quiet --no-deps -e .; \
	fi
	@rm -f $(VENV)/.installed-*
	@touch $@

run: venv ## run the controller standalone on the embedded default policy, no cluster needed (RUN_ARGS=...)
	$(PY) -m controller run --standalone $(RUN_ARGS)

envtest: ## build kube-apiserver, kubectl, etcd, alertmanager, amtool, helm and the bench peer into ~/.cache/trm-sre/bin
	tests/envtest/build.sh all
	tests/envtest/build-helm.sh
	bench/peer/build.sh >/dev/null

bench-peer: ## build prometheus-am-executor (the benchmark's peer) into ~/.cache/trm-sre/bin
	bench/peer/build.sh

# pytest exits 5 when it collects nothing; make treats that as a failure too.
test: venv envtest ## run the test suite (PYTEST_ARGS='-m "not envtest"' for a quick subset)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The layers (tools > app > edge > operator > engine > observability > decision > schemas) are import-linter
# contracts in pyproject.toml; ruff checks and formats the tree.
lint: venv ## check the import contracts (lint-imports), ruff check, ruff format --check and hadolint (Dockerfile)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

format: venv ## apply ruff's formatter and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: venv ## train the Tiny Recursive Model, then export it to ONNX (model.onnx beside the weights; TRAIN_ARGS=...)
	$(PY) -m controller train $(TRAIN_ARGS)

eval: venv ## evaluate a trained model (EVAL_ARGS=...)
	$(PY) -m controller eval $(EVAL_ARGS)

# BENCH=full runs the long benchmark (60 s load phases); BENCH_ARGS passes anything else to `python -m bench`.
# The peer (prometheus-am-executor) is built first when Go is there; without it the bench says why it is missing.
bench: venv ## run the benchmarks, write BENCHMARKS.md + bench/results/latest.json (BENCH=full for the long run)
	-bench/peer/build.sh >/dev/null
	$(PY) -m bench $(if $(filter full,$(BENCH)),--full,) $(BENCH_ARGS)

e2e-kind: venv ## end to end on a kind cluster (needs Docker and kind; deploy/kind/e2e.sh)
	deploy/kind/e2e.sh

.PHONY: docs
docs: venv ## regenerate docs/policy-reference.md (from the CRD) and the settings table in docs/operations.md
	$(PY) -m controller.tools.policy_reference --write
	$(PY) -m controller.tools.settings_reference --write

lock: ## regenerate requirements.lock from pyproject.toml
	uv pip compile pyproject.toml --extra train --extra test --extra dev --python-version 3.11 -o requirements.lock

clean: ## remove build leftovers and Python caches (keeps the venv and built binaries)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove the venv; built binaries stay in ~/.cache/trm-sre/bin
	rm -rf $(VENV)
