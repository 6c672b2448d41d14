# The two commands a newcomer runs: `make demo` and `make test`. Each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

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

bench: $(STAMP)
	$(VENV)/bin/lookalike bench --out docs/bench

lint: $(STAMP)
	$(PIP) install -q ruff mypy
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) demo-out bench-out
