# The verbs of the project. `make run` and `make test` work on a fresh machine: they install
# what they need first.
VENV := .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
PYTEST_ARGS ?=

.PHONY: setup run demo test test-kafka lint typecheck contracts protos bench images clean

setup:
	@scripts/setup.sh

run: setup
	$(PY) -m fte_stack run

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
MYPYPATH := gen/python:libs:stack:$(subst $(space),:,$(wildcard services/*))
ROOT_PY := libs stack scripts $(sort $(dir $(wildcard bench/*.py tests/*.py tests/*/*.py)))
typecheck: setup
	MYPYPATH=$(MYPYPATH) $(VENV)/bin/mypy $(ROOT_PY)
	@for d in $(wildcard services/*/); do echo "mypy $$d"; MYPYPATH=$(MYPYPATH) $(VENV)/bin/mypy $$d || exit 1; done

test: setup lint typecheck contracts
	$(PY) -m pytest $(PYTEST_ARGS)

# The Kafka-touching tests against a real Apache Kafka broker (KRaft, jars from Maven Central).
test-kafka: setup
	$(PY) scripts/apache_kafka.py run -- $(PY) -m pytest -m kafka $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .local build .mypy_cache .ruff_cache .pytest_cache
