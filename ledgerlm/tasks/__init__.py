"""Tasks: one `Task` record per task (ledgerlm/tasks/base.py), declared once and shared by evaluation,
decontamination and the post-training data.

Adding a task: declare its `Task(...)` record in a family module (multiple_choice, lambada, gsm8k, arith, or a new
one), add it to the `register(...)` line below, and test it on a fixture in tests/fixtures/eval/<task>/<split>.jsonl.
"""

from ledgerlm.tasks import arith, gsm8k, lambada, multiple_choice
from ledgerlm.tasks.base import (
    TASKS,
    FewshotSampler,
    Generation,
    Item,
    Task,
    TaskData,
    TaskDataError,
    benchmark_texts,
    get_task,
    hub_unavailable,
    load_task,
    local_source,
    register,
)

# The registry, in the order tasks are listed (results, reports, --help): the six-task mean's tasks first.
register(
    multiple_choice.ARC_EASY,
    multiple_choice.ARC_CHALLENGE,
    multiple_choice.HELLASWAG,
    multiple_choice.PIQA,
    multiple_choice.WINOGRANDE,
    lambada.LAMBADA_OPENAI,
    gsm8k.GSM8K,
    arith.ARITH,
)

SIX_TASKS = tuple(name for name, t in TASKS.items() if t.in_mean)  # the tasks of the six-task mean
HEADLINE = {name: t.headline for name, t in TASKS.items()}  # the metric each task is read (and averaged) by

__all__ = [
    "HEADLINE",
    "SIX_TASKS",
    "TASKS",
    "FewshotSampler",
    "Generation",
    "Item",
    "Task",
    "TaskData",
    "TaskDataError",
    "benchmark_texts",
    "get_task",
    "hub_unavailable",
    "load_task",
    "local_source",
    "register",
]
