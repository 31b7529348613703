# The two commands: `make run` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
FORMAT ?=

.PHONY: install run test predict clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

run: install
	$(BIN)/finsent run $(if $(DATA),--data "$(DATA)") $(if $(FORMAT),--format $(FORMAT))

test: install
	$(BIN)/python -m pytest

clean:  ## remove pipeline outputs and local state (MLflow store, Prefect home, DVC remote); keeps the venv
	rm -rf .finsent data/interim data/processed data/tokenized data/quarantine models reports dvc.lock .dvc/cache .dvc/tmp
