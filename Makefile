# meshtools: `make test` (the README's test command), `make release && make install-all`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PREFIX empty: install.sh's XDG places (~/.local/bin, ${XDG_DATA_HOME:-~/.local/share})
PREFIX ?=
PYTEST_ARGS ?=

.PHONY: test test-fast release install-all bench man completions shims clean

# The dev venv, refreshed only when pyproject.toml changes. `compat` editable mode is a
# plain .pth path entry: no import hook taxing every command's start-up.
.make-venv: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

test: .make-venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The pure-logic modules (marked `fast`): lock logic, supervisor states, routing, dash render,
# worker outcome, anchor logic; seconds, no mesh to boot. Only the marked modules are
# collected (collecting the whole suite alone takes longer than running these).
test-fast: .make-venv
	$(PY) -m pytest -q -m fast $(PYTEST_ARGS) $$(grep -l '^pytestmark = pytest.mark.fast' tests/test_*.py)

release: .make-venv
	$(PY) -m pip install -q build
	$(PY) -m build --outdir dist .

install-all:
	./install.sh $(if $(strip $(PREFIX)),--prefix $(PREFIX))

bench: .make-venv
	@for f in bench/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit $$?; done

man: .make-venv
	$(PY) man/gen.py man

completions: .make-venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh completions/gen.sh completions

shims: .make-venv
	$(PY) bin/_gen.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .make-venv
