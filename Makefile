# Two entry points: `make demo` and `make test`. Both create .venv when missing and install scarce into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/scarce demo --out $(RUN)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/cam_speed.py

clean:
	rm -rf runs .pytest_cache
