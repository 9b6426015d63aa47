# Two commands do all the set-up on a fresh machine (see README):
#   make demo   -> install everything, run the demo on the embedded sample drive
#   make test   -> install everything, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to the CPU build first: plain `pip install torch` pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/perception demo

# pytest exits 5 when it collected no test: a suite that runs nothing is a failure here.
test: install
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: install
	$(VENV)/bin/perception bench model --model rep-n
	$(VENV)/bin/perception bench model --model rep-s

clean:
	rm -rf $(VENV) build *.egg-info
