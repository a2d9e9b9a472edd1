# Two commands: `make demo` and `make test`. `make setup` is the idempotent environment step both use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@# OSMesa renders MuJoCo camera images without a GPU or display (Debian's libosmesa6); best effort when not root.
	@ldconfig -p | grep -q libOSMesa || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq libosmesa6 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libosmesa6 >/dev/null 2>&1))) || true
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	MUJOCO_GL=osmesa $(BIN)/robot-rl demo

test: setup
	MUJOCO_GL=osmesa $(BIN)/python -m pytest -q -x tests

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
