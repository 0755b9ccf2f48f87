# Entry points: `make study` runs the notebooks in order, `make test` runs the test suite, `make lab`
# opens JupyterLab on notebooks/, `make browser-test` drives JupyterLab in Chromium.
# All create (or reuse) the virtual environment first.
PYTHON  ?= python3
VENV    ?= .venv
# The data folder and the profile are settings with one default each, read by every entry point (make,
# JupyterLab, papermill, the command line, the tests): `make study DATA=/path/to/cifar10-jpeg PROFILE=cpu`
# exports them as $FEDVIT_DATA and $FEDVIT_PROFILE. Unset: pyproject.toml's [tool.fedvit] data_root, and
# the quick profile (fedvit_utils/paths.py, fedvit_utils/profiles.py).
DATA    ?=
PROFILE ?=
RUN     ?=
LAB_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
BIN      = $(VENV)/bin

ifneq ($(DATA),)
export FEDVIT_DATA := $(abspath $(DATA))
endif
ifneq ($(PROFILE),)
export FEDVIT_PROFILE := $(PROFILE)
endif
export MPLBACKEND = Agg
export PYTHONHASHSEED = 0

.DEFAULT_GOAL := help
help: ## list the entry points (this text)
	@echo "make <target> [PROFILE=smoke|quick|cpu|paper] [DATA=/path/to/cifar10-jpeg] [RUN=run folder]"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## /  \1\t/' | expand -t 18

.PHONY: help venv lock flower-venv serve-venv serve serve-demo bench-serve book-venv book study table1-spread test test-fast lint bench bench-flower flower-sim flower-deploy gpu-check clean lab browser-test

venv: $(VENV)/.installed ## create .venv with the study's packages (from the lock file) and fedvit_utils

# Installs the exact, hash-checked set of requirements.lock (made from requirements.txt by `make lock`), so a
# fresh machine gets the environment that was tested. The kernel and JupyterLab settings in jupyter/ go into
# the venv: no "TCP without encryption" notice from kernels papermill starts, no news pop-up in JupyterLab.
$(VENV)/.installed: requirements.lock pyproject.toml jupyter/ipython_kernel_config.py jupyter/overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	install -D -m 0644 jupyter/ipython_kernel_config.py $(VENV)/etc/ipython/ipython_kernel_config.py
	install -D -m 0644 jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $@

# The lock files: one per requirements file (requirements-X.txt -> requirements-X.lock, on top of
# requirements.txt), every version and every file hash pinned, all sets taken from one resolution so they can
# be installed into one venv together. For Python 3.11 and newer on any platform (uv's universal resolution).
# Rerun after changing any requirements*.txt; it needs the package index (PyPI).
UV_VERSION = 0.13.9
REQUIREMENTS = requirements.txt $(filter-out requirements.txt,$(wildcard requirements*.txt))
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --custom-compile-command "make lock"
lock: venv ## refresh requirements*.lock (exact versions with hashes) from requirements*.txt
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_COMPILE) --no-annotate $(REQUIREMENTS) -o .lock-all.tmp
	grep -E '^[A-Za-z0-9._-]+==' .lock-all.tmp > lock-resolution.tmp
	for r in $(REQUIREMENTS); do \
	  $(UV_COMPILE) --generate-hashes -c lock-resolution.tmp requirements.txt $$([ $$r = requirements.txt ] || echo $$r) \
	    -o $${r%.txt}.lock || exit 1; done
	rm -f .lock-all.tmp lock-resolution.tmp

# Flower (requirements-flower.txt) on top of the study's environment: only the test command and the Flower
# commands need it, so `make study` stays light. The Flower app (flower/) is installed editable beside fedvit_utils.
flower-venv: $(VENV)/.flower-installed ## add Flower and the Flower app (flower/) to .venv

$(VENV)/.flower-installed: $(VENV)/.installed requirements-flower.lock flower/pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-flower.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e flower
	touch $@

# The model server (serving/, docs/serving.md): Ray Serve from requirements-serve.txt on top of the study's
# environment, and the serving/ app installed editable beside fedvit_utils. Only the serve commands, the test
# command and notebook 08 need it.
serve-venv: $(VENV)/.serve-installed ## add Ray Serve and the model server (serving/) to .venv

$(VENV)/.serve-installed: $(VENV)/.installed requirements-serve.lock serving/pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-serve.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e serving
	touch $@

# `make serve` listens on loopback (a free port, printed) with the store in $(SERVE_STORE) until Ctrl-C;
# `make serve-demo` runs two clients end to end against a server of its own and stops it.
SERVE_STORE ?= runs/serve/store
SERVE_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),smoke)
serve: serve-venv ## the model server on 127.0.0.1 (a free port, printed) until Ctrl-C (SERVE_STORE=)
	$(BIN)/python -m fedvit_serve serve --store $(SERVE_STORE)

serve-demo: serve-venv ## two clients end to end against a local model server (PROFILE=, RUN=)
	$(BIN)/python -m fedvit_serve demo --profile $(SERVE_PROFILE) $(if $(RUN),--run-dir $(RUN))

bench-serve: serve-venv ## the model server against in-process inference (ratios in one run)
	$(BIN)/python benchmarks/bench_serve.py

study: venv ## run the notebooks in order into runs/<profile> (PROFILE=smoke|quick|cpu|paper, DATA=, RUN=)
	$(BIN)/python -m fedvit_utils study $(if $(RUN),--run-dir $(RUN))

# The book (docs/book.md): a static HTML site of a run's executed notebooks, docs/*.md and a landing page, built
# with Sphinx + MyST-NB (requirements-book.txt) into <run>/book/ in seconds; nothing is executed or fetched.
book-venv: $(VENV)/.book-installed ## add the book's tools (Sphinx, MyST-NB, Furo) to .venv

$(VENV)/.book-installed: $(VENV)/.installed requirements-book.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-book.lock
	touch $@

book: book-venv ## build the book of the executed study: runs/<profile>/book/index.html (RUN= another run folder)
	$(BIN)/python -m fedvit_utils book $(if $(RUN),--run-dir $(RUN))

# JupyterLab on notebooks/ (the .ipynb only; their paired scripts are in notebook_scripts/) with this project's
# kernel (the venv's kernelspec comes first on JUPYTER_PATH), its data and profile settings, matplotlib's inline
# backend, and no calls home: no news pop-up or update check (jupyter/overrides.json, installed by make venv).
lab: venv ## JupyterLab on notebooks/ with this project's kernel
	env -u MPLBACKEND JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(BIN)/jupyter lab --notebook-dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) --KernelManager.transport_encryption=auto \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  --LabApp.extension_manager=readonly $(LAB_ARGS)

# Opens notebooks in JupyterLab in a real (headless) Chromium, runs all cells, checks what renders.
# Installs what it needs: playwright (requirements-browser.txt) and Debian's chromium (Playwright's own
# browser download is not used).
browser-test: venv serve-venv book-venv ## open the notebooks in JupyterLab in headless Chromium and check what renders
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-browser.lock
	test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  { echo "browser-test needs Chromium at $(CHROMIUM): apt-get install chromium (as root)"; exit 1; }
	FEDVIT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:cacheprovider browser_tests

# Table 1 with its spread: the study's run plus one run per further seed (training and key seed alike),
# then notebook 07 over all of them; published to figures/<profile>/table1_spread.*.
SEEDS ?= 1 2
SPREAD_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),quick)
SPREAD_RUN = $(or $(RUN),runs/$(SPREAD_PROFILE))
table1-spread: study ## Table 1 over further seeds (SEEDS="1 2"), notebook 07
	for s in $(SEEDS); do \
	  $(BIN)/python -m fedvit_utils study --profile $(SPREAD_PROFILE) --run-dir $(SPREAD_RUN)-seed$$s \
	    --training-seed $$s --key-seed $$s --only 01 02 03 05 --no-publish || exit 1; done
	$(BIN)/python -m fedvit_utils study --profile $(SPREAD_PROFILE) --run-dir $(SPREAD_RUN) --only 07 \
	  --spread-runs $(SPREAD_RUN) $(foreach s,$(SEEDS),$(SPREAD_RUN)-seed$(s))

test: venv flower-venv serve-venv book-venv ## ruff and the whole test suite (CI runs this, then browser-test)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider

# The inner loop: unit tests only (no notebook kernels, Flower, browser, paper miniature or 224x224 ViTs;
# tests marked `slow` are left out). `make test` stays the full suite CI runs.
test-fast: venv ## ruff and the unit tests only (no notebooks, Flower or browser): the inner loop
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

lint: venv ## ruff check .
	$(BIN)/ruff check .

bench: venv ## encryption and federated-training benchmarks
	$(BIN)/python benchmarks/bench_encryption.py
	$(BIN)/python benchmarks/bench_federated.py

bench-flower: flower-venv ## Flower engines against the in-process engine (BENCH_FLAGS=--clients 5 where memory is short)
	$(BIN)/python benchmarks/bench_flower.py $(BENCH_FLAGS)

# The Flower app (docs/flower.md): one simulated client per partition of the profile, or
# a SuperLink and N SuperNodes as separate processes on this machine. CLIENTS unset: the profile's num_clients.
# FLOWER_FLAGS=--fast-nodes: warm SuperNodes on Flower 1.42 internals (opt-in; docs/flower.md).
CLIENTS ?=
FLOWER_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),quick)
flower-sim: flower-venv ## the Flower app, one simulated client per partition (CLIENTS=)
	$(BIN)/python -m fedvit_flower simulate --profile $(FLOWER_PROFILE) $(if $(CLIENTS),--clients $(CLIENTS))

flower-deploy: flower-venv ## the Flower app as a SuperLink and N SuperNodes on this machine (CLIENTS=, FLOWER_FLAGS=)
	$(BIN)/python -m fedvit_flower deploy --profile $(FLOWER_PROFILE) $(if $(CLIENTS),--clients $(CLIENTS)) $(FLOWER_FLAGS)

# A slice of the paper profile on a CUDA GPU (says so and exits 0 where there is none); writes figures/gpu-check/.
gpu-check: venv ## a slice of the paper profile on a CUDA GPU (exits 0 without one)
	$(BIN)/python benchmarks/gpu_check.py

clean: ## remove runs/ and pytest's cache
	rm -rf runs .pytest_cache
