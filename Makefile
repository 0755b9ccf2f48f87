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

.PHONY: venv flower-venv serve-venv serve serve-demo bench-serve study table1-spread test lint bench bench-flower flower-sim flower-deploy gpu-check clean lab browser-test

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Flower (requirements-flower.txt) on top of the study's environment: only the test command and the Flower
# commands need it, so `make study` stays light. The Flower app (flower/) is installed editable beside fedvit_utils.
flower-venv: $(VENV)/.flower-installed

$(VENV)/.flower-installed: $(VENV)/.installed requirements-flower.txt flower/pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-flower.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e flower
	touch $@

# The model server (serving/, docs/serving.md): Ray Serve from requirements-serve.txt on top of the study's
# environment, and the serving/ app installed editable beside fedvit_utils. Only the serve commands, the test
# command and notebook 08 need it.
serve-venv: $(VENV)/.serve-installed

$(VENV)/.serve-installed: $(VENV)/.installed requirements-serve.txt serving/pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-serve.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e serving
	touch $@

# `make serve` listens on loopback (a free port, printed) with the store in $(SERVE_STORE) until Ctrl-C;
# `make serve-demo` runs two clients end to end against a server of its own and stops it.
SERVE_STORE ?= runs/serve/store
SERVE_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),smoke)
serve: serve-venv
	$(BIN)/python -m fedvit_serve serve --store $(SERVE_STORE)

serve-demo: serve-venv
	$(BIN)/python -m fedvit_serve demo --profile $(SERVE_PROFILE) $(if $(RUN),--run-dir $(RUN))

bench-serve: serve-venv
	$(BIN)/python benchmarks/bench_serve.py

study: venv
	$(BIN)/python -m fedvit_utils study $(if $(RUN),--run-dir $(RUN))

# JupyterLab on notebooks/ with this project's kernel (the venv's kernelspec comes first on JUPYTER_PATH),
# its data and profile settings, matplotlib's inline backend, and no calls home (news, update checks).
lab: venv
	env -u MPLBACKEND JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(BIN)/jupyter lab --notebook-dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) --KernelManager.transport_encryption=auto \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  --LabApp.extension_manager=readonly $(LAB_ARGS)

# Opens notebooks in JupyterLab in a real (headless) Chromium, runs all cells, checks what renders.
# Installs what it needs: playwright (requirements-browser.txt) and Debian's chromium (Playwright's own
# browser download is not used).
browser-test: venv
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-browser.txt
	test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  { echo "browser-test needs Chromium at $(CHROMIUM): apt-get install chromium (as root)"; exit 1; }
	FEDVIT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:cacheprovider browser_tests

# Table 1 with its spread: the study's run plus one run per further seed (training and key seed alike),
# then notebook 07 over all of them; published to figures/<profile>/table1_spread.*.
SEEDS ?= 1 2
SPREAD_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),quick)
SPREAD_RUN = $(or $(RUN),runs/$(SPREAD_PROFILE))
table1-spread: study
	for s in $(SEEDS); do \
	  $(BIN)/python -m fedvit_utils study --profile $(SPREAD_PROFILE) --run-dir $(SPREAD_RUN)-seed$$s \
	    --training-seed $$s --key-seed $$s --only 01 02 03 05 --no-publish || exit 1; done
	$(BIN)/python -m fedvit_utils study --profile $(SPREAD_PROFILE) --run-dir $(SPREAD_RUN) --only 07 \
	  --spread-runs $(SPREAD_RUN) $(foreach s,$(SEEDS),$(SPREAD_RUN)-seed$(s))

test: venv flower-venv serve-venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_encryption.py
	$(BIN)/python benchmarks/bench_federated.py

bench-flower: flower-venv
	$(BIN)/python benchmarks/bench_flower.py

# The Flower app (README, "Flower: beyond one process"): one simulated client per partition of the profile, or
# a SuperLink and N SuperNodes as separate processes on this machine. CLIENTS unset: the profile's num_clients.
CLIENTS ?=
FLOWER_PROFILE = $(or $(PROFILE),$(FEDVIT_PROFILE),quick)
flower-sim: flower-venv
	$(BIN)/python -m fedvit_flower simulate --profile $(FLOWER_PROFILE) $(if $(CLIENTS),--clients $(CLIENTS))

flower-deploy: flower-venv
	$(BIN)/python -m fedvit_flower deploy --profile $(FLOWER_PROFILE) $(if $(CLIENTS),--clients $(CLIENTS))

# A slice of the paper profile on a CUDA GPU (says so and exits 0 where there is none); writes figures/gpu-check/.
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf runs .pytest_cache
