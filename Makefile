# One command to set up and run the main job (make demo), one to set up and run the tests (make test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: setup demo test bench train clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the CPU build; an unpinned torch pulls a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# compress the bundled sample images with the shipped model and print the report
demo: setup
	rm -rf manifests/demo
	$(BIN)/rgbatch compress tests/data --out manifests/demo --iterations 8; test $$? -le 1
	$(BIN)/rgbatch report manifests/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/rgbatch bench ../shared/data/kodak --out docs/bench

clean:
	rm -rf $(VENV) .pytest_cache manifests/demo
