# `make run` brings the whole stack up on embedded defaults; `make test` runs the suite.
PYTHON ?= python3.11
VENV ?= .venv
# The CPU wheel; set TORCH_SPEC (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") for CUDA.
TORCH_SPEC ?= torch==2.13.0
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
SERVICES := $(BIN)/python -m ourvidz.services --

.PHONY: install run worker test bench-core bench-scheduler bench-faults bench-streams bench-sdxl bench-wan bench-scale manage \
	lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so that the workers extra does not pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[workers,local,dev,tracing]'
	touch $@

run: install
	$(SERVICES) sh -c 'python manage.py setup && exec python -m ourvidz.supervise $(ARGS)'

# One more worker of a pool on this host: `make worker POOL=sdxl GPU=1` runs sdxl-gpu1@<host> on GPU 1 (NAME=
# another name). It prepares only its pool (`setup --pool`: no migrations) and joins `make run`'s servers, or
# DATABASE_URL / REDIS_URL's on an added host (README "Adding a GPU host").
worker: install
	$(SERVICES) python -m ourvidz.worker $(POOL) $(if $(GPU),--gpu $(GPU)) $(if $(NAME),--name $(NAME)) --supervise

test: install
	$(SERVICES) python -m pytest $(ARGS)

bench-core: install
	$(SERVICES) python tests/benchmarks/bench_core.py $(ARGS)

bench-scheduler: install
	$(SERVICES) python tests/benchmarks/bench_scheduler.py $(ARGS)

bench-faults: install
	$(SERVICES) python tests/benchmarks/bench_faults.py $(ARGS)

bench-streams: install
	$(SERVICES) python tests/benchmarks/bench_streams.py $(ARGS)

bench-sdxl: install
	$(SERVICES) python tests/benchmarks/bench_sdxl.py $(ARGS)

bench-wan: install
	$(SERVICES) python tests/benchmarks/bench_wan.py $(ARGS)

bench-scale: install
	$(SERVICES) python tests/benchmarks/bench_scale.py $(ARGS)

manage: install
	$(SERVICES) python manage.py $(ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
