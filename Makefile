# sdlab: the two commands of the README.
#   make figures   run every notebook headless, write figures/ and figures/index.md
#   make test      pytest: unit and property tests, and the notebooks through nbval
#   make test-bars the slow tests: the issue bars measured on the shipped toy model
# Both create .venv when it is missing and (re)install the project when pyproject.toml changes.
# TORCH is what pip installs for torch first, e.g. TORCH=torch==2.13.0 (CI). Left empty, .ci/torch-spec
# chooses: with an NVIDIA GPU (`nvidia-smi -L` lists one) the default index's torch (the CUDA build); without,
# the CPU build from TORCH_CPU_INDEX, or the default index's torch when that index cannot be reached.
# ARGS go to `sdlab figures`, e.g. make figures ARGS="-p STEPS 10" (that run's figures: build/figures-steps-10/).
# JOBS notebooks run at once, each kernel with cpu_count / JOBS threads (2 on 2 cores: 6-7 min, BENCHMARKS.md).

PYTHON ?= python3
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ARGS ?=
JOBS ?= 2
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdlab-installed

.PHONY: figures test test-bars test-deps

figures: $(STAMP)
	$(PY) -m sdlab figures --jobs $(JOBS) $(ARGS)

test: $(STAMP) test-deps
	SDLAB_FIGURES_DIR=$(CURDIR)/build/test-figures $(PY) -m pytest --nbval-lax -m "not slow" tests notebooks

# The issue bars measured on the shipped toy model (quality, prompt-to-prompt, inversion: tests marked slow);
# about 45 minutes on two CPU cores, so they are not part of `make test`.
test-bars: $(STAMP)
	$(PY) -m pytest -m slow -rxX -s tests

# What tests/test_browser.py drives: Debian's chromium and chromium-driver (apt, as root or through sudo) and
# Selenium in the venv; each is installed only when missing.
test-deps: $(STAMP)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "test-deps: installing chromium and chromium-driver (Debian packages) for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  { $$sudo apt-get update && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y chromium chromium-driver; } || \
	  { echo "test-deps: could not install them; install Chromium and its chromedriver yourself" >&2; exit 1; }; \
	fi
	@$(PY) -c "import selenium" 2>/dev/null || $(PY) -m pip install "selenium>=4.11"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
ifneq ($(strip $(TORCH)),)
	$(PY) -m pip install $(TORCH)
else
	sh .ci/torch-spec $(TORCH_CPU_INDEX) | { while read -r args; do \
	    echo "$(PY) -m pip install $$args"; \
	    $(PY) -m pip install --no-input $$args < /dev/null && exit 0; \
	    echo "torch: that install failed; trying the next source" >&2; \
	  done; exit 1; }
endif
	$(PY) -m pip install -e ".[dev]"
	touch $@
