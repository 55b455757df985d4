# The two commands a newcomer needs: `make demo` and `make test`. Only python3 and make are assumed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint test-compat test-ui test-distributed docs bench venv clean

# Airflow 3.3.2 is pinned by constraints/airflow-3.3.2.txt, as Airflow's own constraint files pin it.
CONSTRAINTS := constraints/airflow-3.3.2.txt
$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[test,lint,openlineage,distributed,ui,docs]"
	touch $(INSTALLED)

venv: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

# Two processes, a module to each (--dist loadfile): the real-components module (one set of Airflow
# components, mostly waiting on them) runs beside the dag.test() modules. Each process has its own
# Airflow home and free ports.
test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# What .pre-commit-config.yaml runs too.
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The version-independent tests on Airflow 2.11.2, 3.0.6, 3.1.8, 3.2.2 and 3.3.2, each in its own
# .venv-af<version> pinned by constraints/airflow-<version>.txt; one "compat:" line per version.
# COMPAT_VERSIONS="2.11.2 3.0.6" runs some of them only.
COMPAT_VERSIONS ?=
test-compat: $(INSTALLED)
	$(BIN)/python scripts/test_compat.py $(if $(COMPAT_VERSIONS),--versions $(COMPAT_VERSIONS),)

# The connection form of Airflow 2.11, 3.0 and 3.3, and the run's page opened from its link on 2.11, 3.0
# and 3.3, in headless Chromium (Debian's, installed where missing, with a CJK font); screenshots go to docs/.
test-ui: $(INSTALLED)
	$(BIN)/python -m pytest tests_ui -p no:cacheprovider -o testpaths=tests_ui

# The CeleryExecutor on PostgreSQL and Redis (installed from Debian's packages where missing), two
# schedulers, two workers, a triggerer: the limits and "never twice" while components die.
test-distributed: $(INSTALLED)
	$(BIN)/python -m pytest tests_distributed -p no:cacheprovider -s -o testpaths=tests_distributed

# The documentation site (MkDocs, docs/pages) into docs/_build, every warning an error (broken page
# links and anchors included); then every command of the README, run in a test.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest tests_docs -p no:cacheprovider -o testpaths=tests_docs

clean:
	rm -rf $(VENV) .venv-af* .demo docs/_build .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info

# Not part of `make test`: ratios against baselines measured in the same run (see benchmarks/).
bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.rate_limit
	$(BIN)/python -m benchmarks.run_end
	$(BIN)/python -m benchmarks.cancel
	$(BIN)/python -m benchmarks.inbox
