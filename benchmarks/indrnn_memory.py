"""Does IndRNN's fused loop run near memory speed? (Its recurrence is elementwise: no GEMM.)

Times the forward loop at B=256, H=1024, T=100 (105 MB of projected input; outputs and states,
210 MB, written to fresh memory) against two clones of the input, the same allocation and the
same bytes moved, interleaved round by round.

    python benchmarks/indrnn_memory.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnnzoo.cells import loops
from rnnzoo.cells.loops.ops import op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    assert loops.available(torch.device("cpu")), "the C++ loops did not build"
    steps, batch, hidden = 100, 256, 1024
    projected, h0, u = torch.randn(steps, batch, hidden), torch.zeros(batch, hidden), torch.rand(hidden)

    def loop() -> None:
        op("indrnn_loop")(projected, h0, u, None, True)

    def clones() -> None:
        projected.clone(), projected.clone()

    ratios, seconds = [], {loop: [], clones: []}
    for round_index in range(args.rounds):
        order = (loop, clones) if round_index % 2 == 0 else (clones, loop)
        for run in order:
            start = time.perf_counter()
            run()
            seconds[run].append(time.perf_counter() - start)
        ratios.append(seconds[loop][-1] / seconds[clones][-1])
    megabytes = steps * batch * hidden * 4 / 1e6
    print(
        f"IndRNN forward, {megabytes:.0f} MB in and {2 * megabytes:.0f} MB out, {torch.get_num_threads()} threads: "
        f"{1e3 * statistics.median(seconds[loop]):.1f} ms; two clones of the input: {1e3 * statistics.median(seconds[clones]):.1f} ms; "
        f"loop / clones {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
