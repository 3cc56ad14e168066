#!/usr/bin/env bash
# The CUDA checks on a GPU machine (see README "On a GPU"). Sections, all by default, or those
# named as arguments:
#   tests        the test suite (CUDA parity of the cells, the Triton loops compiled, onnxruntime's CUDA provider)
#   cells        `rnnzoo bench cells --device cuda --shape flashrnn`: the cell speed table on CUDA
#   determinism  the same experiment trained twice on CUDA gives identical metrics
#   onnxruntime  the default pipeline, then `rnnzoo bench`: onnxruntime CPU and CUDA providers
#                against torch eager, summed up by `rnnzoo report`
#   pmnist       three epochs of the pMNIST JANET profile (MNIST IDX files in $MNIST_DIR)
# Logs and tables go to $OUT (or ./gpu_out).
set -uo pipefail
OUT=$(realpath -m "${OUT:-gpu_out}")
MNIST_DIR=${MNIST_DIR:-.gpu_data/mnist}
PARAMS=$(realpath "${PARAMS:-params.yaml}")  # the experiments of the determinism and onnxruntime sections
SECTIONS=${*:-tests cells determinism onnxruntime pmnist}
ROOT=$PWD
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # rnnzoo from this checkout, installed or not
rnnzoo() { python3 -m rnnzoo.pipeline.cli "$@"; }
work=$(mktemp -d)
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"

python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())" | tee "$OUT/device.txt"
python3 -c "from rnnzoo.pipeline import runtime; print(runtime.distribution(), 'providers here:', runtime.providers_here())" | tee -a "$OUT/device.txt"

for section in $SECTIONS; do
  echo "== $section"
  case $section in
    tests)
      # DVC is not installed on the GPU machine: its end-to-end tests run in CI.
      python3 -m pytest -q -p no:cacheprovider -k "not dvc_repro and not mlflow_run and not test_readme" tests 2>&1 | tee "$OUT/pytest.log" | tail -n 15 ;;
    cells)
      # Every cell against cuDNN's LSTM at the GPU grid and FlashRNN's shape (the Triton loops).
      # CUDA only (the CPU table is this machine's business, and FlashRNN's shape takes minutes on a
      # CPU); the log keeps whatever a failing kernel printed.
      (cd "$work" && rnnzoo bench cells --device cuda --shape flashrnn 2>&1 | tr '\r' '\n' > "$OUT/bench_cells.log")
      tail -n 20 "$OUT/bench_cells.log"
      cp "$work"/reports/bench_cells_cuda.md "$OUT/" && cat "$OUT/bench_cells_cuda.md" ;;
    determinism)
      for attempt in 1 2; do
        rm -rf "$work/det" && mkdir "$work/det"
        (cd "$work/det" && rnnzoo run adding-janet --params "$PARAMS" --set train.device=cuda --set train.steps=200 >/dev/null 2>&1)
        cp "$work/det/reports/adding-janet/metrics.json" "$OUT/determinism_$attempt.json"
      done
      cmp "$OUT/determinism_1.json" "$OUT/determinism_2.json" && echo "identical metrics on rerun" | tee "$OUT/determinism.txt" ;;
    onnxruntime)
      start=$SECONDS
      (cd "$work" && rnnzoo run --params "$PARAMS" 2>&1 | tr '\r' '\n' | grep -v "it/s" > "$OUT/pipeline.log")
      tail -n 30 "$OUT/pipeline.log"
      echo "default pipeline with benches: $((SECONDS - start)) s"
      cp "$work/reports/bench_onnxruntime.md" "$OUT/" && cat "$OUT/bench_onnxruntime.md"
      (cd "$work/reports" && tar -czf "$OUT/bench_reports.tgz" ./*/bench.md ./*/bench.json) ;;
    pmnist)
      start=$SECONDS
      (cd "$work" && rnnzoo run pmnist-janet --params "$ROOT/profiles/pmnist_janet.yaml" \
        --set prepare.data_dir="$ROOT/$MNIST_DIR" --set experiments.pmnist-janet.task_options.download=false \
        --set train.device=cuda --set train.steps=120 --set train.log_every=10 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -n 20) | tee "$OUT/pmnist_janet_cuda.txt"
      echo "pMNIST run took $((SECONDS - start)) s wall, prepare and MLflow included" | tee -a "$OUT/pmnist_janet_cuda.txt"
      cp "$work/reports/pmnist-janet/train_history.json" "$work/reports/pmnist-janet/metrics.json" "$OUT/" ;;
    *)
      echo "unknown section '$section': expected tests, cells, determinism, onnxruntime or pmnist" >&2; exit 2 ;;
  esac
done
