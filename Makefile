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

.PHONY: venv study table1-spread test lint bench gpu-check clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

study: venv
	$(BIN)/python -m fedvit_utils study --profile $(PROFILE) --run-dir $(RUN)

# Table 1 with its spread: the study's run plus one run per further seed (training and key seed alike),
# then notebook 07 over all of them; published to figures/$(PROFILE)/table1_spread.*.
SEEDS ?= 1 2
table1-spread: study
	for s in $(SEEDS); do \
	  $(BIN)/python -m fedvit_utils study --profile $(PROFILE) --run-dir $(RUN)-seed$$s --training-seed $$s \
	    --key-seed $$s --only 01 02 03 05 --no-publish || exit 1; done
	$(BIN)/python -m fedvit_utils study --profile $(PROFILE) --run-dir $(RUN) --only 07 \
	  --spread-runs $(RUN) $(foreach s,$(SEEDS),$(RUN)-seed$(s))

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
