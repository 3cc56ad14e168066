#!/usr/bin/env bash
# The CUDA checks, in one call on a GPU machine (see README "On a GPU"):
# the test suite (CUDA parity included), the cell speed table on CUDA, CUDA determinism of the
# pipeline, and a few epochs of the pMNIST JANET profile. Expects MNIST IDX files in
# $MNIST_DIR and writes logs to $OUT (or ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}
MNIST_DIR=${MNIST_DIR:-.gpu_data/mnist}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
rnnzoo() { python3 -m pipeline.cli "$@"; }

python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())" | tee "$OUT/device.txt"

echo "== tests"
python3 -m pytest -q -p no:cacheprovider -k "not dvc_repro and not mlflow_run" tests 2>&1 | tee "$OUT/pytest.log" | tail -n 15

echo "== cell speed on CUDA"
rnnzoo cells --bench --device cuda --hidden-size 128 --batch-size 32 --steps 50 2>&1 | tee "$OUT/bench_cells_cuda.txt"

echo "== determinism on CUDA: the same params twice"
work=$(mktemp -d)
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"
for attempt in 1 2; do
  (cd "$work" && rnnzoo run adding-janet --params "$OLDPWD/params.yaml" --set train.device=cuda --set train.steps=200 >/dev/null 2>&1)
  cp "$work/reports/adding-janet/metrics.json" "$OUT/determinism_$attempt.json"
done
cmp "$OUT/determinism_1.json" "$OUT/determinism_2.json" && echo "identical metrics on rerun" | tee "$OUT/determinism.txt"

echo "== pMNIST JANET (2 x 128) on CUDA, t10k split 8000/2000, 3 epochs of 40 steps"
start=$SECONDS
(cd "$work" && python3 -m pipeline.cli run pmnist-janet --params "$OLDPWD/profiles/pmnist_janet.yaml" \
  --set prepare.data_dir="$OLDPWD/$MNIST_DIR" --set experiments.pmnist-janet.task_options.download=false \
  --set train.device=cuda --set train.steps=120 --set train.log_every=10 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -n 20) | tee "$OUT/pmnist_janet_cuda.txt"
echo "pMNIST run took $((SECONDS - start)) s wall, prepare and MLflow included" | tee -a "$OUT/pmnist_janet_cuda.txt"
cp "$work/reports/pmnist-janet/train_history.json" "$OUT/pmnist_janet_history.json"
cp "$work/reports/pmnist-janet/metrics.json" "$OUT/pmnist_janet_metrics.json"
