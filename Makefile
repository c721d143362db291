# Entry points: `make test` (the full suite, as CI runs it), `make test-fast` (without the tests marked slow),
# `make demo`, `make docs` and `make mutation` (slow, not run by CI). All create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# constraints.txt pins torch/torchvision to the builds this machine has on disk (pyproject.toml
# allows ranges). The stamp name follows both files' content, so a changed dependency list
# reinstalls and an unchanged one installs nothing.
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)

.PHONY: venv lint test test-fast demo docs mutation lock clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS) -e '.[test,demo,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# ruff's lint rules and formatting ([tool.ruff] in pyproject.toml); `ruff format .` fixes the second.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Progress per test file and the slowest tests at the end, so a 10-minute run is never silent.
test: venv lint
	$(PY) -m pytest --durations=15

# For development: the end-to-end runs marked slow (real subprocess trainings, launches, signals) are left out.
test-fast: venv lint
	$(PY) -m pytest -m "not slow" --durations=10

# The CLI reference, generated from the app (tests/project/test_docs.py checks that it is current).
docs: venv
	$(VENV)/bin/typer dsgan_cli.cli utils docs --name dsgan --title "dsgan command reference" --output docs/cli.md

demo: venv
	$(VENV)/bin/dsgan demo $(DEMO_ARGS)

# Mutation testing of the method's core ([tool.mutmut] in pyproject.toml; results in docs/mutation.md).
# MUTANTS narrows the run, e.g. MUTANTS='dsgan_cli.method.models*'.
mutation: venv
	$(PY) -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS) -e '.[test,demo,bench,mutation]'
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

# Refresh constraints.txt: resolve pyproject.toml afresh in a scratch venv (torch/torchvision stay at their
# pins: the builds this machine has) and pin everything it installed.
TORCH_PINS := $(shell grep -E '^(torch|torchvision)==' $(CONSTRAINTS))
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --disable-pip-version-check -q $(TORCH_PINS) -e '.[test,demo,bench]'
	{ sed -n '1,/^$$/{/^#/p}' $(CONSTRAINTS); .venv-lock/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)
