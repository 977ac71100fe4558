# stillroom. `make run` and `make test` each build the environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTHON ?= python3
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF

.PHONY: run test lint bench bench-full clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	# llama.cpp compiles here (~5 min; pip caches the wheel). A portable build: the native
	# one (AVX-512/AMX kernels) crashed in its first decode on this machine's virtual CPU.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q -c constraints.txt -e '.[dev,ml]'
	# Unsloth requires torchvision, but PyPI's build breaks `import unsloth` beside CPU torch.
	$(PIP) uninstall -q -y torchvision
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/stillroom daemon

test: $(STAMP)
	# Xvfb, xdotool, dbus, systemd-analyze: installed here where allowed, else named.
	tests/system-packages
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# mypy sees the installed module names (stillroom.daemon, ...) through a link tree.
	rm -rf .mypy_tree && mkdir -p .mypy_tree/stillroom
	cp -rs "$(CURDIR)/stillroom/." .mypy_tree/stillroom/
	for d in monitors daemon trainers service configs; do ln -s "$(CURDIR)/$$d" .mypy_tree/stillroom/$$d; done
	cd .mypy_tree && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p stillroom

bench: $(STAMP)
	$(PY) bench/run.py quick

bench-full: $(STAMP)
	$(PY) bench/run.py full

clean:
	rm -rf .mypy_tree build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
