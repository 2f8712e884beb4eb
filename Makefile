# One command each, on a fresh machine: `make demo` (install + cluster the built-in digits) and
# `make test` (install + run the test suite). CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test format benchmark clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	@# export refuses a non-empty folder (it would mix data sets), so a second `make demo` reuses the first export
	test -f data/digits/labels.csv || $(BIN)/clusterkit datasets export digits data/digits
	$(BIN)/clusterkit fit data/digits --method kmeans --k 10 --labels data/digits/labels.csv --out runs/demo-kmeans --force --quiet
	$(BIN)/clusterkit fit data/digits --method spectral --k 10 --labels data/digits/labels.csv --out runs/demo-spectral --force --quiet
	$(BIN)/clusterkit fit data/digits --method sanet --k 10 --labels data/digits/labels.csv --out runs/demo-sanet --force
	$(BIN)/clusterkit assign data/digits --model runs/demo-sanet --output runs/demo-sanet/assign.csv
	@for m in kmeans spectral sanet; do echo "== $$m"; $(BIN)/clusterkit evaluate runs/demo-$$m/assignments.csv --labels data/digits/labels.csv; done
	@echo "== sanet, the images assigned again with the saved model"; $(BIN)/clusterkit evaluate runs/demo-sanet/assign.csv --labels data/digits/labels.csv
	@echo "== the report: open it in a browser"; $(BIN)/clusterkit report runs/demo-sanet --quiet

# Lint, format and the import layers (docs/design.md) are checked before the tests: a forbidden
# import or an unformatted file fails `make test` as a failing test does.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmark: install
	$(BIN)/python benchmarks/quality.py --methods kmeans,spectral,gmm,depict,sanet,gatcluster --seeds 0,1,2

clean:
	rm -rf $(VENV) runs data benchmarks/out
