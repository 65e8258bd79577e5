# zipvlm: `make install demo` to set up and see it work, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

# torch is pinned and installed first: any other version pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[export,dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/zipvlm demo

test: install
	$(PY) -m pytest -q

# Vision graph, the language side (builds its real-size bundles on the first run), then streaming.
bench: install
	$(PY) -m zipvlm.bench.vision
	$(PY) -m zipvlm.bench.language
	$(PY) -m zipvlm.bench.stream

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts .pytest_cache
