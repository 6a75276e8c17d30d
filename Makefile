# billingdb: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv test lint demo bench profile profile-tools snapshot clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install billingdb with its test tools

lint: $(STAMP)  ## lint every .sql file (sql/, bench/sql/) with sqlfluff (postgres dialect)
	$(BIN)/sqlfluff lint sql bench/sql

test: lint  ## lint, then run the whole pytest suite on a real PostgreSQL
	$(BIN)/pytest

demo: $(STAMP)  ## start the embedded PostgreSQL, migrate to head, show what exists
	$(BIN)/billingdb demo

bench: $(STAMP)  ## benchmarks as ratios to pgbench on the same server
	$(BIN)/python -m bench

# make profile installs what it uses: Debian's PostgreSQL 15 with plprofiler (apt, as root) and py-spy (.venv).
PROFILE_DEBS := postgresql-15 postgresql-client-15 postgresql-15-plprofiler

profile-tools: $(STAMP)  ## install make profile's tools: PostgreSQL 15 + plprofiler (apt-get), py-spy (pip, .venv)
	@dpkg -s $(PROFILE_DEBS) >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PROFILE_DEBS) >/dev/null; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet --disable-pip-version-check py-spy

profile: profile-tools  ## where the time goes: one event in PostgreSQL 15 (pg_stat_statements, plprofiler), serve under py-spy
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

snapshot: $(STAMP)  ## regenerate tests/migrations/head_schema.txt from a fresh migration
	$(BIN)/billingdb db snapshot --write tests/migrations/head_schema.txt

clean:  ## remove the venv and the embedded database
	-$(BIN)/billingdb db stop
	rm -rf $(VENV) .billingdb
