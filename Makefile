# Two commands a newcomer needs: `make run` (the main job) and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
# onnxruntime-gpu where an NVIDIA driver answers, onnxruntime otherwise (or ORT=cpu / ORT=gpu).
# Both ship the module `onnxruntime`: both are removed before the chosen one is installed, since
# removing one deletes the files the other shares. The stamp names the build, so switching reinstalls.
ifndef ORT
ORT := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
endif
ifeq ($(filter $(ORT),cpu gpu),)
$(error ORT must be cpu or gpu, got '$(ORT)')
endif
STAMP := $(VENV)/.installed-$(ORT)
# dvc.yaml's commands call `rnnzoo`; find it in the venv without activating it.
export PATH := $(BIN):$(PATH)

.PHONY: run test test-long lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip uninstall --quiet --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet -e '.[pipeline,dev,docs,$(ORT)]'
	# The fused CPU time loops (C++): built once here rather than on first use; a failed build
	# only warns, and the layers then run their reference loop.
	-$(BIN)/python -c 'from rnnzoo.cells.loops import native; native.load()'
	# dvc plots show without a network: vega's scripts inline in DVC's page template (from the npm
	# registry, sha512-checked); without the registry it says so, and DVC's online page stays.
	-$(BIN)/python -m rnnzoo.pipeline.offline_plots
	touch $@

# The default pipeline (params.yaml) through DVC, then the table of results.
run: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/rnnzoo report

test: $(STAMP)
	$(BIN)/python -m pytest

# Two slow tests CI runs after `make test`, one at a time (each starts its own worker processes;
# about 5 minutes): the DVC experiment-queue grid (2 x 2, two workers) and 2-rank DDP training
# held to one process's and to an uninterrupted run when resumed.
LONG_TESTS := tests/pipeline/test_dvc_and_mlflow_run.py::test_a_queued_grid_runs_in_parallel_and_dvc_and_mlflow_both_list_its_results \
	tests/pipeline/test_distributed.py::test_two_ranks_train_what_one_process_trains_and_resume_under_ddp_equals_an_uninterrupted_run
test-long: $(STAMP)
	$(BIN)/python -m pytest -m slow -n 0 $(LONG_TESTS)

# ruff (its default rules at the pinned version) and mypy (pyproject's [tool.mypy]).
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python tools/typecheck.py

bench: $(STAMP)
	$(BIN)/rnnzoo bench cells --hidden-size 256 --steps 100 --batch-size 64

clean:
	rm -rf $(VENV) build *.egg-info
