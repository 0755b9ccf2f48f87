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

.PHONY: venv study test lint bench gpu-check clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

study: venv
	$(BIN)/python -m fedvit_utils study --profile $(PROFILE) --run-dir $(RUN)

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_encryption.py
	$(BIN)/python benchmarks/bench_federated.py

# A slice of the paper profile on a CUDA GPU (says so and exits 0 where there is none); writes figures/gpu-check/.
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf runs .pytest_cache
