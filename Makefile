# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=

.PHONY: demo test test-slow data install bench clean

# torch/torchvision are pinned to the releases that ship as local wheels on the project's
# machines (see README); everything else comes from pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian's package when apt is there (root, or sudo without a password).
data:
	@if [ -f $(FMNIST) ]; then echo "Fashion-MNIST: $(dir $(FMNIST))"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST not found at $(dir $(FMNIST)): install Debian's dataset-fashion-mnist, or pass --data-dir DIR holding the four IDX files, or add --set download=true when online"; fi

demo: $(STAMP) data
	$(BIN)/selfsup train

test: $(STAMP) data
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) data
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# Throughput tables, at steady state (4 warm-up + 10 timed steps, settings interleaved over 2 rounds
# in fresh processes, medians with their min–max): selfsup alone (into README.md, ~40 min on 2 cores),
# then against lightly (installed here as the `bench` extra) with the allocator and convolution
# controls (~1.5–2 h), then the 15-minute accuracy race against lightly (~35 min); the lightly results
# go into BENCHMARKS.md as one section.
bench: $(STAMP) data
	$(BIN)/python benchmarks/throughput_table.py --save-rows runs/throughput_table.json --write README.md
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python benchmarks/vs_lightly.py --steps 10 --warmup 4 --rounds 2 --lightly-workers 2 \
		--allocator-controls --convolution-controls --output runs/vs_lightly.json
	$(BIN)/python benchmarks/race_vs_lightly.py --output runs/race_vs_lightly.json
	$(BIN)/python benchmarks/lightly_section.py

clean:
	rm -rf $(VENV) runs .pytest_cache
