"""Does flushing denormal floats speed up CPU training on real data? (issue: denormals at long T).

Trains-steps sequential MNIST (pixels, T=784, loss on the last step as in the papers) with
torch.nn.LSTM 2x128 and JANET 2x128, with and without ``torch.set_flush_denormal(True)``, the
two settings interleaved round by round; prints the median and min-max of the paired ratios.
Freed memory is kept in the process, as ``rnnzoo train`` keeps it (``cells.loops.host_memory``).

    python benchmarks/denormals.py ../shared/data/mnist [--batch 64 --rounds 6 --steps 784]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnzoo import cells
from rnnzoo.cells.loops.host_memory import keep_freed_memory


def mnist_pixels(folder: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images as (count, 784, 1) in [0, 1] and their labels."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784)[:count]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)[:count]
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(-1), torch.from_numpy(labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=784)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--random", action="store_true", help="standard-normal inputs instead of the images (the issue's setting)")
    args = parser.parse_args()
    keep_freed_memory()  # as training runs: otherwise the large buffers' page faults would blur the comparison
    x, y = mnist_pixels(args.data_dir, args.batch)
    x = torch.randn(args.batch, args.steps, 1) if args.random else x[:, : args.steps]
    torch.manual_seed(0)
    head = nn.Linear(128, 10)
    models = {
        "torch.nn.LSTM": nn.LSTM(1, 128, num_layers=2, batch_first=True),
        "janet": cells.make("janet", 1, 128, num_layers=2, max_timescale=args.steps),
    }

    def step(model: nn.Module) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        outputs, _ = model(x)
        nn.functional.cross_entropy(head(outputs[:, -1]), y).backward()  # the loss on the last step only
        return time.perf_counter() - start

    print(f"sequential MNIST ({'random inputs' if args.random else 'real pixels'}), B={args.batch}, T={args.steps}, 2x128, {torch.get_num_threads()} threads")
    for name, model in models.items():
        ratios, times = [], {False: [], True: []}
        for round_index in range(args.rounds):
            for flush in (round_index % 2 == 0, round_index % 2 != 0):  # alternate which goes first
                torch.set_flush_denormal(flush)
                step(model)  # warm
                times[flush].append(step(model))
            ratios.append(times[True][-1] / times[False][-1])
        torch.set_flush_denormal(False)
        print(
            f"{name}: {1e3 * statistics.median(times[False]) / args.steps:.3f} ms/step without flushing, "
            f"{1e3 * statistics.median(times[True]) / args.steps:.3f} with; flushed/unflushed "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
