# The two commands: `make run` (set-up + services + migrate + serve) and `make test` (set-up + services +
# the whole suite). Both are idempotent and safe to run again.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The pure, sans-IO cores held to mypy --strict.
STRICT_CORES := signaling/sip signaling/sdp.py signaling/transport signaling/callcontrol signaling/registrar.py signaling/flood.py media/rtp.py media/rtcp.py media/stats.py \
	media/jitterbuffer.py media/dtmf.py media/latching.py media/codecs storage/events edge/settings.py

.PHONY: run test setup setup-test services services-down migrate serve lint typecheck unit fuzz bench clean

run: setup services migrate serve

serve:
	$(BIN)/uc-edge serve

setup:
	@bash scripts/setup runtime

setup-test:
	@bash scripts/setup test

services: setup
	@bash scripts/services up

services-down:
	@bash scripts/services down

migrate:
	$(BIN)/uc-edge migrate

test: setup-test services migrate lint typecheck
	@UC_EDGE_REQUIRE_SERVICES=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test: pytest collected no tests — that is a failure" >&2; exit 1; fi; exit $$rc

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck:
	$(BIN)/mypy --strict $(STRICT_CORES)

unit:
	$(BIN)/python -m pytest -q tests/unit

fuzz:
	$(BIN)/python tests/fuzz/fuzz_datagram.py -atheris_runs=200000

bench:
	$(BIN)/uc-edge bench list

clean:
	rm -rf $(VENV) .services .pytest_cache .mypy_cache .ruff_cache
