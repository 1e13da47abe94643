# The Makefile only bootstraps the virtualenv; everything else is `python manage.py …`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Two xdist workers: this machine has two cores.
PYTEST_WORKERS ?= 2

.PHONY: venv run test lint bench-smoke clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: venv
	$(PY) manage.py run --host $(HOST) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Starts the embedded PostgreSQL and Redis once (unless DATABASE_URL / REDIS_URL are set),
# then runs the linters and the whole suite against them.
# pytest exits 5 when it collected nothing: that is neither a pass nor a test failure, so say so.
test: lint
	@$(PY) -m workbench.embedded exec -- $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; refusing to call that a pass." >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) var
