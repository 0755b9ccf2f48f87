# Entry points: `make study` runs the notebooks in order, `make test` runs the test suite.
# Both create (or reuse) the virtual environment first.
PYTHON  ?= python3
VENV    ?= .venv
# Where the data lives is a setting (see fedvit_utils/paths.py): `make study DATA=/path/to/cifar10-jpeg`,
# else $FEDVIT_DATA, else pyproject.toml's [tool.fedvit] data_root.
DATA    ?=
PROFILE ?= quick
RUN     ?= runs/$(PROFILE)
BIN      = $(VENV)/bin

ifneq ($(DATA),)
export FEDVIT_DATA := $(abspath $(DATA))
endif
export MPLBACKEND = Agg
export PYTHONHASHSEED = 0

.PHONY: venv flower-venv study test lint bench bench-flower flower-sim flower-deploy gpu-check clean

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

study: venv
	$(BIN)/python -m fedvit_utils study --profile $(PROFILE) --run-dir $(RUN)

test: venv flower-venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_encryption.py
	$(BIN)/python benchmarks/bench_federated.py

bench-flower: flower-venv
	$(BIN)/python benchmarks/bench_flower.py

# The Flower app (README, "Flower: beyond one process"): 10 simulated clients, or a SuperLink and N SuperNodes
# as separate processes on this machine.
CLIENTS ?= 10
flower-sim: flower-venv
	$(BIN)/python -m fedvit_flower simulate --profile $(PROFILE) --clients $(CLIENTS)

flower-deploy: flower-venv
	$(BIN)/python -m fedvit_flower deploy --profile $(PROFILE) --clients $(CLIENTS)

# A slice of the paper profile on a CUDA GPU (says so and exits 0 where there is none); writes figures/gpu-check/.
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf runs .pytest_cache
