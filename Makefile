# The front door. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/router/v1/*.proto)
PROTOC := $(PY) -m grpc_tools.protoc -Iproto --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc
HOST ?= $(or $(ROUTER_HOST),127.0.0.1)
PORT ?= $(or $(ROUTER_PORT),50051)

.DEFAULT_GOAL := help
.PHONY: help install run demo sim test test-unit lint fmt proto proto-check bench bench-quick clean

# $(HOST) and $(PORT) in a target's text read as their values (127.0.0.1:50051 unless set)
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' -v host='$(HOST)' -v port='$(PORT)' \
	  '{text = $$2; gsub(/\$$\(HOST\)/, host, text); gsub(/\$$\(PORT\)/, port, text); \
	  printf "  make %-18s %s\n", $$1, text}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the service with its dev tools

run: $(STAMP) ## Start the service on $(HOST):$(PORT) (HOST=... PORT=... or ROUTER_HOST, ROUTER_PORT to change; REDIS_URL, else a private redis-server, else in-memory)
	ROUTER_HOST=$(HOST) ROUTER_PORT=$(PORT) $(PY) -m router

demo: $(STAMP) ## Start a throw-away service, load an example team and route a few calls
	$(PY) -m router.demo

sim: $(STAMP) ## Compare routing policies on the "star agents" scenario (report in out/sim)
	$(PY) -m simulations compare simulations/scenarios/star_agents.yaml \
	  --policies balanced,longest_idle,round_robin,best_skill,random --seeds 3 --out out/sim
	@echo "open out/sim/report.html"

test: $(STAMP) ## Run every test (starts its own throw-away redis-server)
	$(PY) -m pytest

test-unit: $(STAMP) ## Run the fast, pure unit tests only
	$(PY) -m pytest tests/unit

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## Format and auto-fix
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

proto: $(STAMP) ## Regenerate the typed stubs in router/v1 from proto/
	$(PROTOC) --python_out=. --grpc_python_out=. \
	  --mypy_out=. --mypy_grpc_out=. $(PROTOS)

proto-check: $(STAMP) ## Fail if the committed stubs differ from what proto/ generates
	@tmp=$$(mktemp -d) && \
	$(PROTOC) --python_out=$$tmp --grpc_python_out=$$tmp \
	  --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	for f in $$tmp/router/v1/*; do \
	  diff -u router/v1/$$(basename $$f) $$f || { echo "stubs drifted: run 'make proto'"; rm -rf $$tmp; exit 1; }; \
	done && rm -rf $$tmp && echo "stubs match proto/"

RESULTS ?= bench-results

bench: $(STAMP) ## Every benchmark in BENCHMARKS.md, full size (6-12 min); HTML report in bench-results/
	rm -f $(RESULTS)/*.json $(RESULTS)/report.html
	$(PY) -m tests.benchmarks.bench_assign --agents 100,1000,10000 --rate 300 --rate-seconds 10 --json $(RESULTS)/assign-in-process.json
	$(PY) -m tests.benchmarks.bench_assign --agents 1000 --calls 200 --server process --rate 100,200,300 --rate-seconds 10 --json $(RESULTS)/assign-one-replica.json
	$(PY) -m tests.benchmarks.bench_assign --agents 1000 --calls 200 --server process --replicas 2 --rate 100,200,300 --rate-seconds 10 --json $(RESULTS)/assign-two-replicas.json
	$(PY) -m tests.benchmarks.bench_solver --json $(RESULTS)/solver.json
	$(PY) -m tests.benchmarks.bench_simulator --json $(RESULTS)/simulator.json
	$(PY) -m tests.benchmarks.bench_admin --agents 200,1000 --json $(RESULTS)/admin.json
	$(PY) -m tests.benchmarks.bench_heartbeats --agents 1000,10000
	$(PY) -m tests.benchmarks.bench_idle --agents 1000,10000 --service-seconds 10
	$(PY) -m tests.benchmarks.bench_stats --rates 1,10 --reads 9
	$(PY) -m tests.benchmarks.bench_expiry --depths 2000,10000 --ticks 9
	$(PY) -m tests.benchmarks.bench_fairness
	$(PY) -m tests.benchmarks.bench_records
	$(PY) -m tests.benchmarks.profile_layers --agents 1000 --pairs 300 --rounds 3 --pause-ms 6.7
	$(PY) -m tests.benchmarks.bench_tracing --agents 1000 --rounds 2 --json $(RESULTS)/tracing.json
	$(PY) -m tests.benchmarks.report $(RESULTS) --out $(RESULTS)/report.html

bench-quick: $(STAMP) ## The same benchmarks at small sizes (~30 s): a smoke run, its report included
	rm -f $(RESULTS)/*.json $(RESULTS)/report.html
	$(PY) -m tests.benchmarks.bench_assign --agents 100 --calls 50 --seconds 1 --rate 50 --rate-seconds 1 --json $(RESULTS)/assign.json
	$(PY) -m tests.benchmarks.bench_solver --quick --calls 1,10 --agents 100,1000 --json $(RESULTS)/solver.json
	$(PY) -m tests.benchmarks.profile_solver --calls 10 --agents 100 --repeats 2
	$(PY) -m tests.benchmarks.profile_layers --agents 100 --pairs 20 --rounds 1 --pause-ms 2
	$(PY) -m tests.benchmarks.bench_simulator --quick --json $(RESULTS)/simulator.json
	$(PY) -m tests.benchmarks.bench_admin --quick --json $(RESULTS)/admin.json
	$(PY) -m tests.benchmarks.bench_heartbeats --agents 200 --beats 0,10 --pairs 20
	$(PY) -m tests.benchmarks.bench_idle --agents 100 --ticks 5 --service-seconds 1 --replicas 2
	$(PY) -m tests.benchmarks.bench_stats --rates 1 --reads 2
	$(PY) -m tests.benchmarks.bench_expiry --depths 700 --ticks 2
	$(PY) -m tests.benchmarks.bench_fairness --calls 50 --skills 2 --viewers 1 --seconds 1
	$(PY) -m tests.benchmarks.bench_records --pairs 50 --attributes 0
	$(PY) -m tests.benchmarks.bench_tracing --quick --json $(RESULTS)/tracing.json
	$(PY) -m tests.benchmarks.report $(RESULTS) --out $(RESULTS)/report.html

clean: ## Remove the virtualenv, caches and benchmark results
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results
