"""The tasks: one file each; ``TASKS`` maps a name to its class."""

from rnnzoo.cells.checks import refuse_unknown
from rnnzoo.pipeline.tasks.adding import AddingTask
from rnnzoo.pipeline.tasks.base import Batch, Task, TaskError, TaskSpec
from rnnzoo.pipeline.tasks.copy import CopyTask
from rnnzoo.pipeline.tasks.frequency import FrequencyTask
from rnnzoo.pipeline.tasks.mnist_vector import MNISTVectorTask
from rnnzoo.pipeline.tasks.ptb import PTBTask
from rnnzoo.pipeline.tasks.seq_mnist import SeqMNISTTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (AddingTask, CopyTask, SeqMNISTTask, MNISTVectorTask, FrequencyTask, PTBTask)
}


def make_task(name: str, options: dict | None = None) -> Task:
    """The task ``name`` with its options validated."""
    refuse_unknown([name], sorted(TASKS), what="task", error=TaskError)
    return TASKS[name](options)


__all__ = ["TASKS", "Batch", "Task", "TaskError", "TaskSpec", "make_task"]
