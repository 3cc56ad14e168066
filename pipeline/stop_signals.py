"""Stop signals during a stage (SIGTERM and SIGHUP, as ``kill``, DVC and CI send; Ctrl-C), turned
into exceptions raised where raising is safe, so the stage's run can be ended KILLED.

A Python signal handler runs between two bytecodes of the main thread, wherever that thread is. A
handler that simply raises can land

- in the tracking store's own code (MLflow, SQLAlchemy, sqlite3), breaking off a write half done;
- in a weakref callback or a ``__del__`` (SQLAlchemy runs one for its class registry on every
  metric MLflow logs), where Python prints the exception and drops it: the stage then runs on as if
  never stopped. Measured: 4 of 10 SIGTERMs sent while a stage logged metrics were lost this way,
  and those processes ran until killed.

So within :func:`raising`, a signal that arrives inside the store's code is held and raised at
the first instruction back in the code that called the store (a trace function on that frame, set
only while a signal is held); a second signal while one is held raises at once (the user insists:
a store call may block for minutes). A raised stop is delivered again after
:data:`REDELIVER_SECONDS` unless the stage acknowledged it (:meth:`Stop.acknowledge`) by then, in
case it was dropped, and one never acknowledged is raised again as the block ends. Under a debugger
or coverage (another trace function set) a held signal is delivered again every
:data:`HOLD_SECONDS` instead, until it lands outside the store. Once acknowledged, further signals
are ignored: a second Ctrl-C must not break off the cleanup the first one started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

# Seconds between deliveries of a signal held while the main thread is in the store's code.
HOLD_SECONDS = 0.05
# Seconds before a raised stop that the stage has not acknowledged is delivered again.
REDELIVER_SECONDS = 1.0
# Top-level packages whose code a stop must not interrupt: the tracking store and its database.
STORE_PACKAGES = frozenset({"mlflow", "sqlalchemy", "alembic", "sqlite3"})

_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class StageStopped(SystemExit):
    """SIGTERM or SIGHUP during a stage: unwinds the stage like an exception, then exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def outermost(frame: FrameType | None) -> FrameType | None:
    """The outermost frame, of ``frame`` and the frames that called it, running code of one of
    :data:`STORE_PACKAGES`; None when none does."""
    found = None
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).partition(".")[0] in STORE_PACKAGES:
            found = frame
        frame = frame.f_back
    return found


def _no_tracing(frame: FrameType, event: str, arg: Any) -> None:
    """The global trace function while a signal is held: traces no new frame (a frame's own
    ``f_trace`` runs only while some global trace function is set)."""
    return


class Stop:
    """The stop signals taken over by one :func:`raising` block, and whether one was acknowledged.

    The handler runs in the main thread between any two bytecodes, possibly inside itself (a second
    signal), so it takes no lock and starts no thread: it only sets attributes. A watchdog thread,
    started with the block, sends a signal again when :attr:`_resend_at` has passed.
    """

    def __init__(self) -> None:
        self.acknowledged = False
        self.pending: int | None = None  # a stop raised or held and not acknowledged yet
        self._held: FrameType | None = None  # the frame that raises a held signal on its next instruction
        self._resend_at: float | None = None  # when the watchdog sends ``pending`` again (monotonic s)
        self._closing = False
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    def acknowledge(self) -> None:
        """The stop reached the stage's handler: its cleanup runs now, undisturbed by later signals."""
        self.acknowledged = True
        self._resend_at = None
        self._release()

    def start(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="rnnzoo-stop-watchdog", daemon=True)
        self._watchdog.start()

    def close(self) -> None:
        """Stop the watchdog before the handlers go back, so no resend meets the default handler."""
        self._closing = True
        self._release()
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.join()

    def lost(self) -> BaseException | None:
        """The exception of a stop that was raised or held but never acknowledged (dropped in a
        ``__del__``, swallowed, or still held when the block ended): it must not vanish."""
        if self.pending is None or self.acknowledged:
            return None
        return _exception(self.pending)

    def _watch(self) -> None:
        while not self._closed.wait(HOLD_SECONDS):
            at, signum = self._resend_at, self.pending
            if at is not None and signum is not None and not self.acknowledged and time.monotonic() >= at:
                self._resend_at = None
                os.kill(os.getpid(), signum)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.f_trace = None
            held.f_trace_opcodes = False
            sys.settrace(None)

    def _hold(self, signum: int, caller: FrameType) -> None:
        def trace(frame: FrameType, event: str, arg: Any) -> None:
            self._release()
            self._raise(signum)

        self.pending, self._resend_at, self._held = signum, None, caller
        caller.f_trace_opcodes = True  # the very next instruction, not the next line
        caller.f_trace = trace
        sys.settrace(_no_tracing)

    def _raise(self, signum: int) -> None:
        self.pending, self._resend_at = signum, time.monotonic() + REDELIVER_SECONDS
        raise _exception(signum)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.acknowledged:
            return
        if self._closing:  # the block is ending: recorded, raised by raising() once the handlers are back
            self.pending = self.pending or signum
            return
        if self._held is not None:  # a second signal while one is held: the user insists, raise now
            self._release()
            self._raise(signum)
        store = outermost(frame)
        if store is None:
            self._raise(signum)
        elif store.f_back is not None and sys.gettrace() is None:
            self._hold(signum, store.f_back)
        else:  # another trace function is set (a debugger, coverage): send again until it lands outside
            self.pending, self._resend_at = signum, time.monotonic() + HOLD_SECONDS


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else StageStopped(signum)


@contextlib.contextmanager
def raising() -> Iterator[Stop]:
    """Within the block, SIGTERM and SIGHUP raise :class:`StageStopped` and SIGINT raises
    ``KeyboardInterrupt`` in the main thread, outside the tracking store's code (see the module's
    docstring); the caller calls :meth:`Stop.acknowledge` when one reaches its handler. A stop that
    was raised but never acknowledged (dropped, swallowed) is raised again as the block ends.

    Only signals whose handler is the default one are taken (SIG_DFL, or Python's own
    ``default_int_handler`` for SIGINT): an ignored signal (``nohup``) or someone else's handler is
    left alone. Signals can only be handled in the main thread; elsewhere the block runs as it is.
    The previous handlers come back after.
    """
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    defaults: dict[int, Any] = {signum: signal.SIG_DFL for signum in _TERMINATING}
    defaults[signal.SIGINT] = signal.default_int_handler
    previous = {signum: signal.getsignal(signum) for signum in defaults}
    taken = [signum for signum, handler in previous.items() if handler is defaults[signum]]
    for signum in taken:
        signal.signal(signum, stop.handle)
    stop.start()
    try:
        yield stop
    finally:
        stop.close()
        for signum in taken:
            signal.signal(signum, previous[signum])
        lost = stop.lost()
        if lost is not None:
            raise lost
