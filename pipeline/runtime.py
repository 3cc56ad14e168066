"""onnxruntime sessions: which execution providers this machine can use, and proof that a session got the one asked for.

onnxruntime ships as two distributions of one module: ``onnxruntime`` (CPU) and ``onnxruntime-gpu``
(CPU and CUDA). The GPU build lists CUDAExecutionProvider even where CUDA cannot be loaded, and then
quietly runs on the CPU with only a log line, so each session is checked after it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

try:
    import onnxruntime
except ImportError as error:  # the extras choose the build, so a bare install has neither
    raise ImportError(
        "onnxruntime is not installed: install rnnzoo with `pip install -e '.[cpu]'`, "
        "or `pip install -e '.[gpu]'` on a machine with CUDA (`make` picks one for you)"
    ) from error
import torch

from rnnzoo.cells.checks import require_choice

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def distribution() -> str:
    """The installed onnxruntime distribution as a pip requirement, e.g. ``onnxruntime-gpu==1.31.1``
    (the two this project installs; another build is named by its module's version)."""
    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return f"onnxruntime=={onnxruntime.__version__}"


def cuda_usable() -> bool:
    """Both onnxruntime (the GPU build) and torch see a CUDA device."""
    return CUDA in onnxruntime.get_available_providers() and torch.cuda.is_available()


def providers_here() -> list[str]:
    """Execution providers to measure on this machine: the CPU always, CUDA where usable."""
    return [CPU, CUDA] if cuda_usable() else [CPU]


def best_provider() -> str:
    """The provider a server uses here: CUDA where usable, else the CPU."""
    return CUDA if cuda_usable() else CPU


def provider_list(provider: str) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime's ``providers`` argument for ``provider``.

    CUDA runs with TF32 off, so float32 results match torch's default float32 matrix products,
    and with the CPU behind it for any node CUDA has no kernel for.
    """
    require_choice("onnxruntime provider", provider, (CPU, CUDA))
    return [(CUDA, {"use_tf32": "0"}), CPU] if provider == CUDA else [CPU]


def open_session(path: Path, provider: str = CPU, threads: int = 0, spinning: bool = True) -> onnxruntime.InferenceSession:
    """A session on ``provider`` (see :func:`provider_list`); raises if onnxruntime fell back to another one.

    ``threads`` sets the CPU intra-op pool (0: onnxruntime's default). ``spinning=False`` stops its
    threads from busy-waiting after each run, which would take the cores from whatever runs next
    in the process (the bench's torch side, whose fused loops use torch's own thread pool).
    """
    providers = provider_list(provider)
    if provider == CUDA and not cuda_usable():
        raise RuntimeError(f"{CUDA} is not usable here: it needs onnxruntime-gpu (installed: {distribution()}) and a CUDA GPU")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] != provider:
        raise RuntimeError(
            f"onnxruntime did not start {provider} for {path} (it runs on {session.get_providers()}); "
            f"the log above names the library it could not load (installed: {distribution()})"
        )
    return session


def resident_call(session: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple[Callable[[], Any], Callable[[], None]]:
    """One inference with its inputs and outputs kept on the session's device, and its synchronisation.

    The call returns the outputs: numpy arrays from a CPU session, OrtValues on the GPU from a CUDA one.

    On CUDA the inputs are copied to the GPU once (I/O binding) and the outputs stay there, as a
    torch model's on CUDA do, so timing the call times the model and not host-device copies.
    """
    if session.get_providers()[0] != CUDA:
        return (lambda: session.run(None, feeds)), (lambda: None)
    binding = session.io_binding()
    for name, array in feeds.items():  # the binding shares ownership of each GPU copy
        binding.bind_ortvalue_input(name, onnxruntime.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")

    def run() -> list[onnxruntime.OrtValue]:
        session.run_with_iobinding(binding)
        return binding.get_outputs()  # OrtValues on the GPU: no copy back

    return run, binding.synchronize_outputs
