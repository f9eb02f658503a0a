# segrefine: `make demo` sets up .venv (+ the viewer's npm packages) and runs the demo;
# `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed
INPUT ?=
OUT ?= demo_out

.PHONY: setup demo serve test bench screenshots clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# the MONAI Label client for the protocol tests; its own dependency list pulls a CUDA torch
	$(BIN)/pip install --quiet --no-deps monailabel
	touch $(STAMP)

# the viewer's pinned NiiVue (package-lock.json); skipped with a note where npm is missing
$(WEB_STAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd web && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; \
	else echo "npm not found: the web viewer needs 'cd web && npm ci' (the API and CLI work without it)"; fi

setup: $(STAMP) $(WEB_STAMP)

# the non-interactive demo (Dice, outputs, PNG), then the web app on the same data;
# NO_SERVE=1 stops after the first part
# the web app serves what the demo ran on: INPUT's folder, the shared data (hippocampus model),
# or without them the generated phantom with the phantom model (segrefine.paths decides, as in the demo)
SHARED_DATA = $(shell $(BIN)/python -c "from segrefine.paths import shared_data_dir as d; print(d() or '')")
DEMO_SERVE = --data-root $(or $(DATA_ROOT),$(if $(INPUT),$(dir $(abspath $(INPUT))),$(or $(SHARED_DATA),$(OUT)/sample --model phantom)))
demo: setup
	$(BIN)/segrefine demo $(if $(INPUT),--input $(INPUT),) --out $(OUT)
	@if [ -z "$(NO_SERVE)" ]; then $(BIN)/segrefine serve $(DEMO_SERVE); fi

serve: setup
	$(BIN)/segrefine serve

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# the benchmarks behind docs/benchmarks.md (hippocampus test split; long: they train the
# ensemble members and the low-data U-Net if missing)
HIP := ../shared/data/hippocampus
BENCH := $(BIN)/segrefine bench
bench: setup
	$(BENCH) uncertainty --images $(HIP)/imagesTr --labels $(HIP)/labelsTr --json bench_out/uncertainty.json
	$(BENCH) graph --json bench_out/graph.json
	$(BENCH) refine --images $(HIP)/imagesTr --labels $(HIP)/labelsTr --json bench_out/refine.json \
		--methods paint,idrlse,graphcut,rnet,idrlse@paper,idrlse@hippocampus,graphcut@paper
	$(BENCH) stack --images $(HIP)/imagesTr --labels $(HIP)/labelsTr --json bench_out/stack.json --tune-split val
	$(BENCH) gcn --images $(HIP)/imagesTr --labels $(HIP)/labelsTr --json bench_out/gcn.json
	$(BENCH) cohort --json bench_out/cohort.json
	$(BENCH) persistence --json bench_out/persistence.json

# the web app's pictures in docs/images/ for docs/slicer.md: a real server and headless Chromium
# (Debian's chromium) on the shared hippocampus data
screenshots: setup
	$(BIN)/python scripts/screenshots.py --data $(dir $(HIP)) --out docs/images

clean:
	rm -rf $(OUT) .pytest_cache
