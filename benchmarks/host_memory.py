"""What keeping freed host memory (``cells.loops.host_memory``) does to a CPU training step.

glibc's malloc settings are process-wide and cannot be put back, so each side runs in its own
process: a round starts one process with glibc's defaults and one with freed memory kept (which
goes first alternating), each times ``--calls`` training steps (forward + backward, the loss on the
last step) after two warm-up steps; the rounds' paired ratios (kept / default) are reported as the
median and min-max, for torch.nn.LSTM and JANET at each length.

    python benchmarks/host_memory.py [--batch 200 --layers 2 --lengths 50 400 784 --rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

MODELS = ("torch.nn.LSTM", "janet")


def worker(mode: str, model_name: str, batch: int, steps: int, layers: int, calls: int) -> float:
    """Seconds per training step in this process, freed memory kept or not."""
    import torch
    from torch import nn

    from rnnzoo import cells
    from rnnzoo.cells.loops.host_memory import keep_freed_memory

    if mode == "keep" and not keep_freed_memory():
        raise SystemExit("this C library is not glibc: nothing to compare")
    torch.manual_seed(0)
    model = (
        nn.LSTM(1, 128, num_layers=layers, batch_first=True)
        if model_name == "torch.nn.LSTM"
        else cells.make(model_name, 1, 128, num_layers=layers, max_timescale=steps)
    )
    x = torch.randn(batch, steps, 1)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        outputs, _ = model(x)
        outputs[:, -1].square().sum().backward()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 400, 784])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(*args.worker, args.batch, args.length, args.layers, args.calls))
        return

    def run(mode: str, name: str, length: int) -> float:
        command = [sys.executable, __file__, "--worker", mode, name, "--length", str(length)]
        command += ["--batch", str(args.batch), "--layers", str(args.layers), "--calls", str(args.calls)]
        return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

    print(f"training step, B={args.batch}, {args.layers}x128, input 1, loss on the last step; {args.rounds} rounds")
    for name in MODELS:
        for length in args.lengths:
            seconds: dict[str, list[float]] = {"default": [], "keep": []}
            for round_index in range(args.rounds):
                for mode in ("default", "keep") if round_index % 2 == 0 else ("keep", "default"):
                    seconds[mode].append(run(mode, name, length))
            ratios = [k / d for k, d in zip(seconds["keep"], seconds["default"])]
            print(
                f"{name} T={length}: {1e3 * statistics.median(seconds['default']) / length:.3f} ms/step with glibc's defaults, "
                f"{1e3 * statistics.median(seconds['keep']) / length:.3f} kept; kept/default {statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f})"
            )


if __name__ == "__main__":
    main()
