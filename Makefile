# Two commands do all the set-up on a fresh machine (see README):
#   make demo   -> install everything, run the demo on the embedded sample drive
#   make test   -> install everything, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to the CPU build first: plain `pip install torch` pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test bench clean browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/perception demo

# The live page's test drives a real headless Chromium. Where it is missing and we may install
# Debian packages (root with apt-get, as on CI), install it; elsewhere that test skips with a reason.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the browser test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null || echo "chromium could not be installed: its test will skip"; \
	  else echo "no chromium and no root apt-get: the browser test will skip"; fi; \
	fi

# pytest exits 5 when it collected no test: a suite that runs nothing is a failure here.
test: install browser
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: install
	$(VENV)/bin/perception bench model --model rep-n
	$(VENV)/bin/perception bench model --model rep-s

clean:
	rm -rf $(VENV) build *.egg-info
