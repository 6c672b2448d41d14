# The two commands a newcomer runs: `make demo` and `make test`. Each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-docs lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the CPU build of torch (a plain `torch` would pull a multi-GB CUDA build)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lookalike demo --out demo-out

test: $(STAMP)
	# the browser test drives Debian's chromium (Playwright's own browser download fails here)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the browser test will skip and say why"
	$(PY) -m pytest -q

# the tutorial's comparison into docs/bench/knn-engine.*, then the docs' tables from every JSON there
bench: $(STAMP)
	$(VENV)/bin/lookalike bench --repeats 2 --out bench-out
	cp bench-out/bench.json docs/bench/knn-engine.json
	cp bench-out/bench.png docs/bench/knn-engine.png
	$(PY) benchmarks/docs.py

bench-docs: $(STAMP)
	$(PY) benchmarks/docs.py

lint: $(STAMP)
	$(PIP) install -q ruff mypy
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) demo-out bench-out
