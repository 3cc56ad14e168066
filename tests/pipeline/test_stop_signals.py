"""Stop signals are raised where raising is safe: never inside the tracking store's code, never lost
in a ``__del__`` or weakref callback, and never twice into the cleanup the first one started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from rnnzoo.pipeline import config, stop_signals, tracking
from rnnzoo.pipeline.stop_signals import StageStopped

REPO = Path(__file__).resolve().parents[2]

# Code that runs as if it were part of a store package: its module's __name__ is "mlflow.fake".
STORE_CODE = """
import os, signal
def write(signum, log):
    os.kill(os.getpid(), signum)  # the handler runs at the next instruction: here, inside the store
    for i in range(1000):
        log.append(i)  # the write goes on to its end
    return "written"
"""


def _store_module() -> types.ModuleType:
    module = types.ModuleType("mlflow.fake")
    exec(compile(STORE_CODE, "<store>", "exec"), module.__dict__)  # noqa: S102 (our own code, named as the store)
    return module


def _raised(signum: int) -> type[BaseException]:
    return KeyboardInterrupt if signum == signal.SIGINT else StageStopped


SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


@pytest.fixture(autouse=True)
def _default_handlers() -> Iterator[None]:
    """Each test starts from Python's default handlers, whatever ran the suite (``nohup`` ignores SIGHUP)."""
    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_outside_the_store_raises_at_once(signum: int) -> None:
    done = []
    with pytest.raises(_raised(signum)) as raised, stop_signals.raising():
        os.kill(os.getpid(), signum)
        done.append("after")
    assert done == []
    if signum != signal.SIGINT:
        assert raised.value.code == 128 + signum


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_inside_the_store_is_raised_when_the_store_returns(signum: int) -> None:
    store, log, after = _store_module(), [], []
    with pytest.raises(_raised(signum)), stop_signals.raising():
        result = store.write(signum, log)
        after.append(result)
    assert log == list(range(1000)), "the store's write was broken off"
    assert after == [], "the stop was raised late: the caller ran on after the store returned"
    assert sys.gettrace() is None, "the trace that raised the held signal is left set"


def test_a_held_signal_is_delivered_again_under_another_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a debugger or coverage the frame trace cannot be used; the signal is sent again until
    it lands outside the store."""
    monkeypatch.setattr(stop_signals, "HOLD_SECONDS", 0.01)
    store, log = _store_module(), []

    def tracer(frame: types.FrameType, event: str, arg: object) -> None:
        return None

    sys.settrace(tracer)
    try:
        with pytest.raises(StageStopped), stop_signals.raising():
            store.write(signal.SIGTERM, log)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.001)
        assert log == list(range(1000))
        assert sys.gettrace() is tracer, "someone else's trace function is kept"
    finally:
        sys.settrace(None)


class _StopsInDel:
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)  # raised here, Python prints the exception and drops it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped stop, as expected
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_dropped_in_a_destructor_is_delivered_again(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    monkeypatch.setattr(stop_signals, "REDELIVER_SECONDS", 0.1)
    with pytest.raises(_raised(signum)), stop_signals.raising():
        _StopsInDel(signum)  # dropped at once: __del__ runs, the stop raised inside it is lost
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.001)
        pytest.fail("the dropped stop was never delivered again")


def test_after_acknowledging_a_stop_later_signals_do_not_break_off_the_cleanup() -> None:
    cleaned = []
    with pytest.raises(StageStopped), stop_signals.raising() as stop:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except StageStopped:
            stop.acknowledge()
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            cleaned.append("done")
            raise
    assert cleaned == ["done"]


def test_handlers_come_back_and_foreign_handlers_are_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        pass

    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    signal.signal(signal.SIGINT, own)
    try:
        with stop_signals.raising():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is own
            assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


# A stage that logs metrics back to back, so a signal nearly always lands inside MLflow's code.
LOGGING_STAGE = """
import sys
from pathlib import Path
from rnnzoo.pipeline import config, tracking
exp = config.load(Path("params.yaml")).experiment(sys.argv[1])
with tracking.stage_run("train", exp) as mlflow:
    Path("ready").touch()
    step = 0
    while True:
        step += 1
        tracking.log_metrics(mlflow, {"loss": 1.0 / step}, step=step)
"""


@pytest.mark.parametrize("delay", [0.3])
def test_sigterm_while_a_stage_logs_metrics_ends_its_run_killed(workdir: Path, delay: float) -> None:
    """Before stops were held out of the store, 4 of 10 such SIGTERMs were lost in SQLAlchemy's
    weakref callbacks and the stage ran on until killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RNNZOO_NATIVE": "0"}
    process = subprocess.Popen([sys.executable, "-c", LOGGING_STAGE, "add-janet"], cwd=workdir, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "ready").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the stage never opened its run"
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, stderr.decode()[-3000:]
    finally:
        process.kill()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    params_hash = config.load(workdir / "params.yaml").experiment("add-janet").params_hash()
    query = f"tags.`rnnzoo.experiment` = 'add-janet' and tags.`rnnzoo.params_hash` = '{params_hash}'"
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string=query, output_format="list")
    assert run.info.status == "KILLED" and run.data.tags[tracking.KILLED_TAG] == "train"
    assert b"Exception ignored" not in stderr


STORE_BLOCKING = """
import os, signal
def write(signum, log):
    os.kill(os.getpid(), signum)  # held: inside the store
    for i in range(1000):
        log.append(i)
        if i == 10:
            os.kill(os.getpid(), signum)  # the user insists: a store call can block for minutes
    return "written"
"""


def test_a_second_signal_while_one_is_held_raises_at_once() -> None:
    module = types.ModuleType("mlflow.fake_blocking")
    exec(compile(STORE_BLOCKING, "<store>", "exec"), module.__dict__)  # noqa: S102 (our own code, named as the store)
    log: list[int] = []
    with pytest.raises(StageStopped), stop_signals.raising():
        module.write(signal.SIGTERM, log)
    assert len(log) == 11, "the second signal must not wait for the store to return"
    assert sys.gettrace() is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped stop, as expected
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_dropped_stop_is_raised_when_the_block_ends_before_its_redelivery(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    monkeypatch.setattr(stop_signals, "REDELIVER_SECONDS", 60.0)
    with pytest.raises(_raised(signum)), stop_signals.raising():
        _StopsInDel(signum)  # dropped; the block ends at once, long before any redelivery
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handlers are back before the stop is raised"
