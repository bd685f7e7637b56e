# Two commands do all the set-up on a fresh machine:
#   make serve   # creates .venv, installs, serves the shipped default models on 127.0.0.1:8000
#   make test    # creates .venv, installs, runs the whole test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU wheel of torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: venv test test-docker test-browser screenshots serve models lint bench bench-service bench-incremental bench-scale clean

# The fused CPU kernels for ONNX Runtime (tlstm/ort_ops): compiled against ONNX Runtime's C API
# headers, which scripts/ort-headers.sh fetches from Debian. Optional: where the build fails
# (no compiler, no apt) the packages' standard graphs run, with the same results.
ORT_OPS := tlstm/ort_ops/libtlstm_ort.so

venv: $(STAMP) $(ORT_OPS)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[cpu,train,dev,ray]'
	touch $(STAMP)

$(ORT_OPS): tlstm/ort_ops/lstm_cell.cc $(STAMP)
	$(PY) -m tlstm.ort_ops build --optional

test: venv
	$(PY) -m pytest tests --ignore=tests/docker --ignore=tests/browser

# The playground in headless Chromium over a live server (Debian's chromium and chromium-driver,
# installed by the script when missing; Selenium comes with the dev extra). Here a missing
# browser fails the run instead of skipping the tests.
test-browser: venv
	bash scripts/install-browser.sh
	TLSTM_TEST_BROWSER=required $(PY) -m pytest tests/browser

# The README's screenshots of the playground on the shipped models (docs/img/playground_*.png).
screenshots: venv
	bash scripts/install-browser.sh
	$(PY) -m tests.browser.screenshots --models models --out docs/img

test-docker: venv
	bash docker/test-docker.sh

serve: venv
	$(VENV)/bin/tlstm serve --models models

# Trains (or resumes, or reuses) the default runs from fixed seeds and exports models/.
# `rm -rf runs/default` forces fresh training (about 75 minutes: chars on one thread, digits beside it).
models: venv
	$(PY) -m training.default_models --runs runs/default --models models

bench: venv
	$(PY) bench/bench_depth.py

bench-service: venv
	$(PY) bench/bench_service.py

bench-incremental: venv
	$(PY) bench/bench_incremental.py

bench-scale: venv
	$(PY) bench/bench_scale.py

# ruff and mypy as pyproject.toml configures them (CI runs this before the tests).
lint: venv
	$(VENV)/bin/ruff check tlstm model training export service tests bench docker
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
