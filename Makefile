# Two commands: `make report` (everything, then the book) and `make test`.
# PROFILE=smoke|quick|paper  DATA_ROOT=/path/to/dcase2026  OUTPUT_ROOT=/path/to/results
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
KERNEL := asd-xju
TEST_WORKERS ?= 2  # pytest-xdist processes for `make test` (tests/conftest.py groups them); 0 = one process
export DATA_ROOT OUTPUT_ROOT

.PHONY: setup strip-outputs report run test test-fast lab train bench rehearsal seeds noise-study submission clean

# The packages by uv (pinned in UV; parallel downloads and byte-compiling: ~18 s here where pip
# took ~76 s), by pip when uv cannot be had. Byte-compiled at install: where
# PYTHONDONTWRITEBYTECODE is set (this machine) nothing is compiled later, and every kernel would
# compile its imports again (6.2 s instead of 2.1 s each). uv reads no pip configuration: the
# find-links folders pip is given ($PIP_FIND_LINKS, else pip.conf's; where a machine keeps its
# torch build) are passed on.
UV := uv==0.13.10
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@links="$${PIP_FIND_LINKS:-$$($(PY) -m pip config get global.find-links 2>/dev/null)}"; \
	if $(PY) -m pip install --quiet --disable-pip-version-check "$(UV)"; then \
	  echo "uv pip install -r requirements.txt"; \
	  UV_FIND_LINKS="$$(echo $$links | tr ' ' ',')" $(VENV)/bin/uv pip install --quiet \
	    --compile-bytecode --python $(PY) -r requirements.txt; \
	else \
	  echo "uv is not available: pip install -r requirements.txt"; \
	  $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (asd-xju)" >/dev/null
	$(MAKE) --no-print-directory strip-outputs
	touch $@

setup: $(VENV)/.installed

strip-outputs:  ## git strips notebook outputs on commit (nbstripout, .gitattributes); cell ids kept
	@git rev-parse --git-dir >/dev/null 2>&1 || exit 0; \
	git config filter.nbstripout.clean "$(abspath $(PY)) -m nbstripout --keep-id" && \
	git config filter.nbstripout.smudge cat && \
	git config diff.ipynb.textconv "$(abspath $(PY)) -m nbstripout -t --keep-id"

report: setup  ## synthetic data (if needed), every notebook with papermill, then the book
	$(VENV)/bin/asd report --profile $(PROFILE) --kernel $(KERNEL)

run: setup  ## every stage from the command line (asd run): the same files, no notebook, no book
	$(VENV)/bin/asd run --profile $(PROFILE)

test: setup  ## lint, format check, the layering (.importlinter), the whole test suite (pipeline smoke runs, the book in a browser) in TEST_WORKERS processes
	@start=$$(date +%s); \
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(VENV)/bin/lint-imports --no-cache \
	  && $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15; status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s"; exit $$status

test-fast: setup  ## the edit loop: lint, the layering and the tests not marked slow (no pipeline, no browser)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadgroup

train: setup  ## train one fine-tuned system into the run folder the notebooks find; SYSTEM="System 1"
	$(VENV)/bin/asd train --profile $(PROFILE) --system "$(SYSTEM)"

lab: setup  ## JupyterLab on the notebooks (kernel asd-xju); a notebook's empty profile is $(PROFILE)
	ASD_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab notebooks/

bench: setup  ## speed benchmarks (not part of make test)
	$(PY) -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_fbank.py
	$(PY) benchmarks/bench_anc.py
	$(PY) benchmarks/bench_backbones.py
	$(PY) benchmarks/bench_frozen.py
	$(PY) benchmarks/bench_beam.py

rehearsal: setup  ## every stage at the real data size (14,400 clips), each timed with its peak memory; ARGS="--train-fraction 0.25"
	$(PY) benchmarks/rehearse.py $(ARGS)

seeds: setup  ## System 1 and the AE baseline over several seeds (about 3.5 min per seed under quick); CLASSES="names auto": every fine-tuned system per class scheme, System 7 with its own (bench_classes.csv)
	$(PY) benchmarks/bench_seeds.py --profile $(PROFILE) $(if $(CLASSES),--classes $(CLASSES))

noise-study: setup  ## System 5's SNR study: Systems 1, 3, 5 and 0 per near-mic SNR and seed (quick: ~20 min)
	$(VENV)/bin/asd study noise --profile $(PROFILE)

submission: setup  ## the DCASE package of a finished run; LABEL=Doe_XJU SYSTEMS='"System 4" "System 1"'
	$(VENV)/bin/asd package --profile $(PROFILE) $(if $(LABEL),--label $(LABEL)) $(if $(SYSTEMS),--systems $(SYSTEMS))

clean:  ## results and the built book (keeps the venv and the synthetic data)
	rm -rf _build outputs
