# zipvlm: `make install demo` to set up and see it work, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench bench-gpu lint typecheck clean engine

install: $(STAMP)

# torch is pinned and installed first: any other version pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[runtime,export,bench,engine,dev]'
	touch $(STAMP)

# LLaVA-1.5, then Qwen2.5-VL and LLaVA-NeXT (any-res views) briefly; --family llava-onevision too.
demo: install
	$(VENV)/bin/zipvlm demo
	$(VENV)/bin/zipvlm demo --family qwen2.5-vl --seconds 5
	$(VENV)/bin/zipvlm demo --family llava-next --seconds 5

# The whole suite (what CI runs); test-fast skips the tests marked slow, for the edit loop.
test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Vision graph, the language side (builds its real-size bundles on the first run), the INT8
# vision graph, then streaming (which streams the INT8 bench's bundle too), then Qwen2.5-VL-3B,
# then any-res views (LLaVA-NeXT-7B's 2,880 tokens vs 160/320/640; OneVision-0.5B at 640x480).
bench: install
	$(PY) -m zipvlm.bench.vision
	$(PY) -m zipvlm.bench.language
	$(PY) -m zipvlm.bench.int8
	$(PY) -m zipvlm.bench.stream
	$(PY) -m zipvlm.bench.qwen
	$(PY) -m zipvlm.bench.anyres

# Vision + prefill in PyTorch FP16 on a CUDA GPU (PyPI's torch wheel for Linux is a CUDA build; not part of `bench`).
bench-gpu: install
	$(PY) -m zipvlm.bench.gpu

# The TensorRT plan, built on the device that runs it: make engine TARGET=jetson BUNDLE=... [INT8=1 CALIB=frames].
# No `install` prerequisite: that is the x86 dev setup (CPU torch). On the Jetson, TensorRT comes
# with JetPack's system python, so: python3 -m venv --system-site-packages .venv &&
# .venv/bin/pip install -e '.[engine]' (the runtime core, polygraphy, cuda-python; JetPack's onnxruntime; no torch).
TARGET ?= jetson
engine:
	@test -n "$(BUNDLE)" || { echo "make engine: set BUNDLE=path/to/bundle (and TARGET=jetson|orin-nano|thor|x86, default jetson)"; exit 2; }
	$(VENV)/bin/zipvlm engine --bundle $(BUNDLE) --target $(TARGET) $(if $(INT8),--int8) $(if $(CALIB),--calib $(CALIB))

# ruff (lint and format) everywhere; mypy on the torch-free packages, seen through
# build/typecheck/zipvlm/<package> links (the namespace maps top-level folders, see pyproject.toml).
TYPED := bundle runtime calib engine serve cli
lint: install typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	@mkdir -p build/typecheck/zipvlm
	@for p in bundle models runtime export calib engine serve cli bench; do ln -sfn ../../../$$p build/typecheck/zipvlm/$$p; done
	$(VENV)/bin/mypy $(foreach p,$(TYPED),-p zipvlm.$(p))

clean:
	rm -rf artifacts .pytest_cache build
