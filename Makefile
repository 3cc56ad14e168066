# Two commands a newcomer needs: `make run` (the main job) and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
# onnxruntime-gpu where an NVIDIA driver answers, onnxruntime otherwise. Both ship the module
# `onnxruntime`, so the other one is removed: never both (override with ORT=cpu or ORT=gpu).
ORT ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
OTHER_ORT := $(if $(filter gpu,$(ORT)),onnxruntime,onnxruntime-gpu)
# dvc.yaml's commands call `rnnzoo`; find it in the venv without activating it.
export PATH := $(BIN):$(PATH)

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip uninstall --quiet --yes $(OTHER_ORT)
	$(BIN)/python -m pip install --quiet -e '.[dev,$(ORT)]'
	touch $(STAMP)

# The default pipeline (params.yaml) through DVC, then the table of results.
run: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/rnnzoo report

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/rnnzoo cells --bench --hidden-size 256 --steps 100 --batch-size 64

clean:
	rm -rf $(VENV) build *.egg-info
