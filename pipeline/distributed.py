"""Data-parallel training on torchrun: PyTorch's DistributedDataParallel, one process per rank.

``rnnzoo train EXP --nproc-per-node N`` runs torchrun (``torch.distributed.run``, in this process:
:func:`launch`) over ``python -m rnnzoo.pipeline.stages.train EXP``, which is ``rnnzoo train EXP``
in each rank; torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``)
tells the train stage it is one rank of several (:func:`World.from_env`).

How a global batch is split so that N ranks compute what one process does:

- every rank draws the same global batch (the same seed and shuffle) and keeps its own contiguous
  block of rows (:func:`shard`); a language model's rows are parallel streams of the text, so a
  rank carries the recurrent state of its own rows across batches, as one process carries all;
- each rank's mean loss is weighted by its share of the items the global mean runs over
  (:func:`loss_share`, times the world size, since DDP averages gradients over ranks), so the
  all-reduced gradient is the global batch's gradient whatever the split;
- updates, gradient clipping and parameter projections (IndRNN's ``|u|`` bound) then run on
  identical gradients and weights on every rank: :func:`check_replicas` asserts that at the end.

Collectives move tensors only (no pickled objects): ranks exchange RNG states and carried state
for checkpoints with :func:`gather`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import re
import signal
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from rnnzoo.pipeline.tasks import Batch

# The module each rank runs: `rnnzoo train`'s own command (pipeline/stages/train.py's __main__).
TRAIN_MODULE = "rnnzoo.pipeline.stages.train"


class RankFailed(RuntimeError):
    """A rank of a torchrun job failed; torchrun stopped the others."""


class PeersLost(RankFailed):
    """This rank's collective failed: another rank is gone (torchrun stops this one too)."""


# How long a rank waits in a collective for the others (rank 0 validating or logging a model).
COLLECTIVE_TIMEOUT_SECONDS = 2 * 3600

# A rank that lost its peers exits with this (EX_TEMPFAIL), so the launcher tells it from the rank
# that failed first.
PEERS_LOST_EXIT = 75


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job: rank ``rank`` of ``size``, GPU ``local_rank`` of its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (a process group to join), even with one rank

    @classmethod
    def from_env(cls) -> World:
        """From torchrun's environment variables; one process of one when RANK and WORLD_SIZE are
        absent. Raises ValueError where they are set but the rest of what joining a process group
        needs (MASTER_ADDR, MASTER_PORT, whole numbers) is not: a stray RANK in a shell would
        otherwise make every `rnnzoo train` wait for peers that never come."""
        if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
            return cls()
        names = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise ValueError(
                f"the environment sets {' and '.join(n for n in names[:2] if n in os.environ)} but not {', '.join(missing)}: "
                "a torchrun job sets all four. Launch with `rnnzoo train EXP --nproc-per-node N` (or torchrun), or unset them"
            )
        values = {name: os.environ.get(name, "0") for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        if not all(value.isdigit() for value in values.values()) or int(values["RANK"]) >= int(values["WORLD_SIZE"]):
            shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
            raise ValueError(f"torchrun's environment must give whole numbers with RANK < WORLD_SIZE, got {shown}")
        return cls(int(values["RANK"]), int(values["WORLD_SIZE"]), int(values["LOCAL_RANK"]), True)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes outputs, checkpoints and MLflow records."""
        return self.rank == 0


# How a collective reports that another rank's process is gone: any error of gloo's transport (its
# socket pairs between ranks: "Read error ... Connection reset by peer", "Connection closed by
# peer", "Write error ... Broken pipe", a pair's timeout) or an nccl DistBackendError. A setup
# problem (a port in use, a bad interface) is not one: it keeps its own message.
_LOST_PEER_SIGNS = ("gloo/transport/", "Connection reset by peer", "Connection closed by peer", "Broken pipe", "remote process exited")


@contextlib.contextmanager
def peers_lost(world: World) -> Iterator[None]:
    """Turn a collective's failure (gloo: "Connection reset by peer"; nccl: a DistError) into
    :class:`PeersLost`, one line instead of a traceback through DDP's hooks."""
    try:
        yield
    except RuntimeError as error:
        message = str(error)
        lost = isinstance(error, torch.distributed.DistBackendError) or any(sign in message for sign in _LOST_PEER_SIGNS)
        if world.launched and lost:
            # gloo's message: "[.../gloo/transport/tcp/pair.cc:537] Read error [host]:port: Connection reset by peer. This is ..."
            reason = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(message.split())).split(". ")[0]
            raise PeersLost(f"rank {world.rank} lost the other ranks ({reason[:160] or type(error).__name__})") from None
        raise


def is_main_process() -> bool:
    return World.from_env().is_main


def join(world: World, device: torch.device) -> torch.device:
    """Join the job's process group (nccl on CUDA, gloo on the CPU); returns this rank's device."""
    if not world.launched:
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if world.local_rank >= count:  # torchrun run directly with more ranks a node than GPUs
            raise ValueError(
                f"LOCAL_RANK {world.local_rank} has no CUDA GPU (torch sees {count}): run at most {count} ranks per node, "
                "or set train.device: cpu"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        # The other ranks wait in a collective while rank 0 alone validates, writes and logs the
        # model (nccl's default wait is 10 minutes); a rank that dies is seen at once regardless.
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_SECONDS))
    return device


def require_gpus(processes_per_node: int) -> None:
    """Raise ValueError unless this node has a CUDA GPU for each of ``processes_per_node`` ranks
    (nccl runs one rank a GPU; a rank past the last would fail deep in CUDA)."""
    count = torch.cuda.device_count()
    if processes_per_node > count:
        raise ValueError(
            f"--nproc-per-node must be at most {count} here (one rank per CUDA GPU, and torch sees {count}), "
            f"got {processes_per_node}; or set train.device: cpu to run the ranks on the CPU (gloo)"
        )


def leave(world: World) -> None:
    """Leave the process group :func:`join` joined (nccl warns at exit about one left open)."""
    if world.launched and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel (torchrun), else itself. Batch norm layers become
    SyncBatchNorm on CUDA, so their statistics are the global batch's; PyTorch's SyncBatchNorm has
    no CPU kernel, so on gloo each rank normalises with its own rows (PyTorch's DDP default)."""
    if not world.launched:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with peers_lost(world):  # DDP broadcasts rank 0's weights: a collective, like the steps'
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch: Batch, world: World) -> Batch:
    """This rank's contiguous block of the global batch's rows (``torch.tensor_split``: block sizes
    differ by at most one)."""
    if world.size == 1:
        return batch
    return batch.map(lambda t: torch.tensor_split(t, world.size)[world.rank])


def loss_share(items: int, global_items: int, world: World) -> float:
    """The factor on a rank's mean loss over ``items`` that makes DDP's gradient average equal the
    gradient of the mean over the global batch's ``global_items``: (items / global_items) x size."""
    return items / max(global_items, 1) * world.size


def all_sum(value: Tensor, world: World) -> Tensor:
    """The sum of ``value`` over ranks (a new tensor; ``value`` itself where there is one rank)."""
    if not world.launched:
        return value
    total = value.detach().clone()
    torch.distributed.all_reduce(total)
    return total


def gather(tensors: Sequence[Tensor], world: World, device: torch.device) -> list[list[Tensor]]:
    """Every rank's ``tensors``, on every rank, on the CPU: ``result[rank][i]``. Each rank passes
    the same number of tensors with the same dtypes and dimensions; sizes may differ by rank."""
    if not world.launched:
        return [[t.detach().cpu() for t in tensors]]
    columns = []
    for tensor in tensors:
        shape = torch.tensor(tensor.shape, dtype=torch.int64, device=device)
        shapes = [torch.empty_like(shape) for _ in range(world.size)]
        torch.distributed.all_gather(shapes, shape)
        sizes = [math.prod(s.tolist()) for s in shapes]
        flat = torch.zeros(max(sizes), dtype=tensor.dtype, device=device)  # all_gather needs equal sizes
        flat[: tensor.numel()] = tensor.detach().reshape(-1)
        gathered = [torch.empty_like(flat) for _ in range(world.size)]
        torch.distributed.all_gather(gathered, flat)
        columns.append([g[:n].reshape(s.tolist()).cpu() for g, n, s in zip(gathered, sizes, shapes)])
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(world.size)]


def check_replicas(model: nn.Module, world: World, device: torch.device) -> None:
    """Raise on every rank unless every rank holds rank 0's weights, bit for bit (identical
    gradients and updates keep them so; a rank-dependent projection or update would not)."""
    if not world.launched:
        return
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()]).to(device)
    reference = flat.clone()
    torch.distributed.broadcast(reference, 0)
    differs = torch.tensor([float(not torch.equal(flat, reference))], device=device)
    torch.distributed.all_reduce(differs, op=torch.distributed.ReduceOp.MAX)
    if differs.item():
        raise RankFailed("the ranks' weights differ after training (a rank-dependent update); no model written")


def torchrun_args(
    nproc_per_node: int, nnodes: int, node_rank: int | None, rdzv_endpoint: str | None, worker_args: Sequence[str]
) -> list[str]:
    """torchrun's command line for ``python -m rnnzoo.pipeline.stages.train <worker_args>``: one
    node with ``--standalone`` (a free local port), several with ``--rdzv-endpoint`` (required)."""
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"--nproc-per-node and --nnodes must be at least 1, got {nproc_per_node} and {nnodes}")
    args = [f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}"]
    if nnodes > 1 and rdzv_endpoint and node_rank is None:
        # torchrun's default (static) rendezvous takes each node's rank from --node-rank (0 unless given).
        raise ValueError(f"--nnodes {nnodes}: give each node its --node-rank (0 to {nnodes - 1}; node 0 answers at --rdzv-endpoint)")
    if rdzv_endpoint:
        args.append(f"--rdzv-endpoint={rdzv_endpoint}")
        if node_rank is not None:
            args.append(f"--node-rank={node_rank}")
    elif nnodes > 1:
        raise ValueError(f"--nnodes {nnodes}: give --rdzv-endpoint HOST:PORT (the node every node reaches), and --node-rank on each node")
    else:
        args.append("--standalone")
    return [*args, "-m", TRAIN_MODULE, *worker_args]


def launch(args: Sequence[str]) -> None:
    """Run torchrun with ``args`` (:func:`torchrun_args`) in this process; raises
    :class:`RankFailed` naming each failed rank and how it ended."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parsed = torchrun.parse_args(list(args))
    # torchrun sets 1 thread a rank where OMP_NUM_THREADS is unset (and warns): give each rank its
    # share of the node's cores instead, which it would be told to tune to anyway.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(parsed.nproc_per_node))))
    try:
        torchrun.run(parsed)
    except ChildFailedError as error:
        summary = failure_summary({rank: failure.exitcode for rank, failure in error.failures.items()})
        raise RankFailed(f"{summary}. No model was written; --resume continues from the last checkpoint, if the job got that far") from None


# How a rank ends when another failed: torchrun's SIGTERM (our stage's exit 128 + 15, or the
# signal itself), or its collective failed first (PEERS_LOST_EXIT).
_STOPPED = (128 + 15, -15, PEERS_LOST_EXIT)


def failure_summary(exitcodes: dict[int, int]) -> str:
    """The failed ranks of a job in words, from their exit codes (negative: killed by that signal):
    the ranks that failed first by name, the ranks that stopped because of them counted."""
    failures = sorted(exitcodes.items())
    causes = [(rank, code) for rank, code in failures if code not in _STOPPED] or failures
    stopped = len(failures) - len(causes)
    named = "; ".join(f"rank {rank} was killed by {_signal_name(-code)}" if code < 0 else f"rank {rank} exited with {code}" for rank, code in causes)
    return named + (f"; the other {stopped} rank(s) stopped with it" if stopped else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time or unknown signal
        return f"signal {number}"
