# `make test` and `make demo` work on a fresh clone: each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test demo lint bench screenshots clean

# Reinstalled whenever pyproject.toml changes. torch resolves to <= 2.14.1 (see pyproject.toml).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v -e "is ignored" -e "BuildBackendWarning" ; \
		$(BIN)/python -c "import raysweep, torch, torchvision, ray, mlflow, hyperopt"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/python -m raysweep.run sweeps/quickstart.py

bench: install
	$(BIN)/python bench/epoch.py

screenshots: install
	$(BIN)/python scripts/mlflow_screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache results
