# Each target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench soak install clean report-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tfbridge demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,report]"
	$(PY) benchmarks/run.py

# 100 epochs over one process-executor pipeline with shuffle: exactly once, flat memory and descriptors, no leaks.
soak: $(STAMP)
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# The HTML report seen in a real browser: headless Chromium screenshot, checked for the histogram.
report-check: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pip install --quiet -e ".[test,report]"
	$(PY) scripts/check_report_html.py
