# zipvlm: `make install demo` to set up and see it work, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bench-gpu lint clean engine

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

# Vision graph, the language side (builds its real-size bundles on the first run), the INT8
# vision graph, then streaming (which streams the INT8 bench's bundle too).
bench: install
	$(PY) -m zipvlm.bench.vision
	$(PY) -m zipvlm.bench.language
	$(PY) -m zipvlm.bench.int8
	$(PY) -m zipvlm.bench.stream

# Vision + prefill in PyTorch FP16 on a CUDA GPU (PyPI's torch wheel for Linux is a CUDA build; not part of `bench`).
bench-gpu: install
	$(PY) -m zipvlm.bench.gpu

# The TensorRT plan, built on the device that runs it: make engine TARGET=jetson BUNDLE=... [INT8=1 CALIB=frames].
# No `install` prerequisite: that is the x86 dev setup (CPU torch). On the Jetson, TensorRT comes
# with JetPack's system python, so: python3 -m venv --system-site-packages .venv &&
# .venv/bin/pip install -e '.[engine]' (runtime + polygraphy + cuda-python, no torch).
TARGET ?= jetson
engine:
	@test -n "$(BUNDLE)" || { echo "make engine: set BUNDLE=path/to/bundle (and TARGET=jetson|orin-nano|thor|x86, default jetson)"; exit 2; }
	$(VENV)/bin/zipvlm engine --bundle $(BUNDLE) --target $(TARGET) $(if $(INT8),--int8) $(if $(CALIB),--calib $(CALIB))

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts .pytest_cache
