# Each target creates .venv and installs the project on first use, at the exact versions in constraints.txt
# (TensorFlow comes from the [cpu] extra; mypy and ruff from [dev]).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := $(VENV)/.installed-demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-backends lint bench soak install clean report-check

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,cpu,dev]'
	touch $(STAMP)

# The demo needs tfbridge and TensorFlow only (not the test, lint and adapter libraries).
$(DEMO): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu]'
	touch $(DEMO)

install: $(STAMP)

demo: $(DEMO)
	$(VENV)/bin/tfbridge demo

test: $(STAMP)
	$(PY) -m pytest -q

# Keras on its JAX and torch backends (each in its own interpreter): not part of `make test`, which has no jax.
test-backends: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt jax
	$(PY) -m pytest -q tests/test_backends.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m mypy src scripts

bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,cpu,dev,report]'
	$(PY) benchmarks/run.py

# 100 epochs over one process-executor pipeline with shuffle: exactly once, flat memory and descriptors, no leaks.
soak: $(STAMP)
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# The HTML report seen in a real browser: headless Chromium screenshots of four reports, checked for their plots.
report-check: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,cpu,dev,report]'
	$(PY) scripts/check_report_html.py
