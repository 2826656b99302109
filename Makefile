# The verbs of the project. `make run` and `make test` work on a fresh machine: they install
# what they need first.
VENV := .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
PYTEST_ARGS ?=

.PHONY: setup run demo test test-kafka soak soak-kafka lint typecheck contracts protos bench eval images dist clean

setup:
	@scripts/setup.sh

# `make run TRACES=1`: also Jaeger, with every service and Envoy tracing into it (its UI URL is printed).
TRACES ?=
run: setup
	$(PY) -m fte_stack run $(if $(TRACES),--traces)

# Sends sample customer messages through the real webhooks of a running `make run` stack.
demo: setup
	$(PY) scripts/demo.py

protos: setup
	$(PY) scripts/gen_protos.py

# Contracts: buf lint + format, generated code in sync, no breaking change against the previous commit.
contracts: setup
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(PY) scripts/gen_protos.py --check
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		echo "buf breaking against HEAD~1"; $(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no previous commit with contracts to compare against"; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# One mypy run per project folder, so each service's tests/ stays its own module tree.
space := $(empty) $(empty)
CLIENTS := clients/python/fte-client
MYPYPATH := gen/python:libs:stack:$(CLIENTS):$(subst $(space),:,$(wildcard services/*))
ROOT_PY := libs stack scripts tests $(if $(wildcard bench/*.py),bench)
typecheck: setup
	MYPYPATH=$(MYPYPATH) $(VENV)/bin/mypy $(ROOT_PY)
	@for d in $(wildcard services/*/) $(CLIENTS)/; do echo "mypy $$d"; MYPYPATH=$(MYPYPATH) $(VENV)/bin/mypy $$d || exit 1; done

test: setup lint typecheck contracts
	$(PY) -m pytest $(PYTEST_ARGS)

# The Kafka-touching tests against a real Apache Kafka broker (KRaft, jars from Maven Central).
test-kafka: setup
	$(PY) scripts/apache_kafka.py run -- $(PY) -m pytest -m kafka $(PYTEST_ARGS)

# The agent's reader on the frozen dev set, the paraphrase set and its translations, and k-fold
# cross-validation of its training corpus (accuracy per label, confusions). No servers needed.
eval: setup
	$(PY) scripts/eval_reader.py

# The 24-hour test compressed (scripts/soak.py): customers on every channel, provider retries,
# random SIGKILLs and a PostgreSQL kill, replies counted at the provider fakes. The default is the
# small size CI runs; the full one: make soak SOAK_ARGS="--web 100 --email 50 --whatsapp 50".
SOAK_ARGS ?= --web 30 --email 15 --whatsapp 15 --people 5 --kills 8
soak: setup
	$(PY) scripts/soak.py $(SOAK_ARGS)

# The same against a real Apache Kafka broker, which is SIGKILLed once mid-run and restarted.
soak-kafka: setup
	$(PY) scripts/apache_kafka.py run -- $(PY) scripts/soak.py $(SOAK_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# One image per service, built from the repository root. Needs a container engine (docker or
# podman; ENGINE=... to choose); without a working one it fails with a message, never builds nothing
# and exits 0. IMAGE_REGISTRY (with a trailing /), IMAGE_TAG (default: the commit) and
# IMAGE_SERVICES (default: every services/*/Dockerfile) choose names and what to build.
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE_REGISTRY ?=
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
IMAGE_SERVICES ?= $(patsubst services/%/Dockerfile,%,$(wildcard services/*/Dockerfile))
images:
	@if [ -z "$(ENGINE)" ]; then \
		echo "make images: no container engine found (install docker or podman, or set ENGINE=...)" >&2; exit 1; fi
	@if ! $(ENGINE) info >/dev/null 2>&1; then \
		echo "make images: $(ENGINE) is installed but cannot reach its daemon or machine" >&2; exit 1; fi
	@for s in $(IMAGE_SERVICES); do \
		echo "== $(IMAGE_REGISTRY)fte-$$s:$(IMAGE_TAG)"; \
		$(ENGINE) build -f services/$$s/Dockerfile -t $(IMAGE_REGISTRY)fte-$$s:$(IMAGE_TAG) . || exit 1; \
	done

# Wheels of the packages internal teams install (fte-contracts, fte-client) into dist/.
dist: setup
	$(PY) scripts/dist.py

clean:
	rm -rf .local build dist .mypy_cache .ruff_cache .pytest_cache
