# sdlab: the two commands of the README.
#   make figures   run every notebook headless, write figures/ and figures/index.md
#   make test      pytest: unit, property and quality tests, and the notebooks through nbval
# Both create .venv when it is missing and (re)install the project when pyproject.toml changes.
# TORCH is what pip installs for torch first, e.g. TORCH=torch==2.13.0, or
# TORCH="torch --index-url https://download.pytorch.org/whl/cpu" for a CPU-only machine.

PYTHON ?= python3
TORCH ?= torch
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdlab-installed

.PHONY: figures test

figures: $(STAMP)
	$(PY) -m sdlab figures

test: $(STAMP)
	SDLAB_FIGURES_DIR=$(CURDIR)/build/test-figures $(PY) -m pytest --nbval-lax tests notebooks

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[dev]"
	touch $@
