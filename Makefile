# Two entry points (see README): `make demo` and `make test`.
# torch==2.13.0 is installed first: the local CPU wheel answers it, while an unpinned
# torch (asked for by monai or by us) would pull gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Reference implementation used only by tests (imported by file path, never by the library).
FASTMRI_REF := fastmri==0.3.0

.PHONY: demo test lint bench bench-real clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -q -e ".[test,napari]"
	$(PIP) install -q --no-deps $(FASTMRI_REF)
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/diffrecon demo

# napari needs OpenGL once a layer is added: on a machine without a screen the suite runs
# under Xvfb (.ci/run installs it); without xvfb-run the viewer tests are skipped.
XVFB := $(shell command -v xvfb-run 2>/dev/null)
XVFB_RUN := $(if $(XVFB),xvfb-run -a -s "-screen 0 1280x1024x24",)

test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/npe2 validate diffrecon
	$(XVFB_RUN) $(PY) -m pytest -q

bench: $(VENV)/.base
	$(PY) bench/operators.py

# the real-anatomy benchmark (issue 12): hours on a 2-core CPU, resumable (rows cached)
bench-real: $(VENV)/.base
	$(PIP) install -q -e ".[bench]"
	command -v bart >/dev/null || (apt-get install -y bart >/dev/null 2>&1 || echo "no bart: its rows are skipped")
	$(PY) bench/real_anatomy.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
