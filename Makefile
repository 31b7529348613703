# The two commands: `make run` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
FORMAT ?=

.PHONY: install run test clean clean-all
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

clean:  ## remove pipeline outputs and the DVC cache; keeps the registry, the alias history and the DVC remote (.finsent/)
	rm -rf data/interim data/processed data/tokenized data/quarantine models reports dvc.lock .dvc/cache .dvc/tmp

clean-all: clean  ## also remove .finsent/: the MLflow registry, alias history, Prefect home and DVC remote
	@echo "make clean-all: deleting .finsent/ (registered models, alias history, DVC remote) in 5 s; Ctrl-C keeps it"
	@sleep 5
	rm -rf .finsent
