# Two commands are all the set-up a fresh machine needs:
#   make figures   # the main job (quick profile, CPU)
#   make test      # the whole test suite
# Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.normdyn-installed
# The CPU build of torch; pip finds it in the local wheel cache here.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: test figures check lint bench clean-venv data

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e '.[dev,torch]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

figures: $(STAMP)
	$(VENV)/bin/normdyn figures --launcher local --jobs 2 --out paper_figures/quick

check: $(STAMP)
	$(VENV)/bin/normdyn check

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/simulator_throughput.py
	$(PY) benchmarks/monitor_overhead.py

clean-venv:
	rm -rf $(VENV)

# Fashion-MNIST for --data fashion-mnist (the deep profile): Debian's package puts the four
# IDX files in /usr/share/datasets/fashion-mnist/. Needs root and apt; otherwise it says how.
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "fashion-mnist: already in /usr/share/datasets/fashion-mnist/"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "fashion-mnist: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or put" \
	       "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and" \
	       "t10k-labels-idx1-ubyte.gz in \$$NORMDYN_DATA/fashion-mnist/"; \
	fi
