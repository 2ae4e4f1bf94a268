"""What a task is: one `Task` record per task, the registry, and loading a task's items.

A record says everything the rest of ledgerlm needs to know about a task: where its data are (Hub dataset, the
original release files, or a generator of our own), how a raw record becomes an `Item` (prompt, choices, gold
answer), which metrics evaluation reports and which one is the headline, how a generative task is prompted and
checked, and what text decontamination looks for. Evaluation, decontamination, SFT/RL data and the report ask the
record; no other module lists task names.

Data come from the Hub (`datasets`), from local files with `data_dir`: `D/<task>/<split>.jsonl` in the Hub schema
or the original releases as in ../shared/data (`Task.original`), or from our own generator (`Task.generate`).
Malformed records are quarantined with file, line and reason.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledgerlm import hub
from ledgerlm.io import CorruptInput, iter_lines


class TaskDataError(ValueError):
    """Unusable evaluation data; the message names the file (or Hub dataset), line and field."""


class BadRecord(Exception):
    """A malformed record; becomes a quarantine entry with this message as its reason."""


@dataclass
class Item:
    index: int  # 0-based position among the split's valid records
    requests: list[tuple[str, str]]  # (context, continuation) pairs scored by log-likelihood; [] for generative tasks
    choices: list[str] = field(default_factory=list)  # lm-eval's doc_to_choice: acc_norm divides by len(choice)
    gold: int | None = None  # index of the correct request (multiple choice)
    target: str | None = None  # lambada's last word / a generative task's reference answer text
    question: str | None = None  # a generative task's question
    source: str = ""  # "file:line" or "hub:name[row]", for audit


@dataclass(frozen=True)
class Generation:
    """How a generative task is prompted, cut and checked (GSM8K's conventions: `ledgerlm.tasks.gsm8k.FORMAT`)."""

    prompt: Callable[[str, Sequence[dict]], str]  # (question, solved examples {"question", "answer"}) -> prompt
    stop_strings: tuple[str, ...]  # lm-eval's `until`; the model's EOS text is added at generation time
    modes: tuple[str, ...]  # answer extractions, each scored as metric `exact_match_<mode>`
    extract: Callable[[str, str], str | None]  # (completion, mode) -> the extracted answer or None
    check: Callable[[str, str, str], bool]  # (completion, reference answer text, mode) -> correct
    gold: Callable[[str], str]  # reference answer text -> the normalised answer (kept in the per-item records)
    max_new_tokens: int  # the generation budget
    shot_tokens: int  # about what one solved example costs in the prompt
    few_shot: int  # the few-shot count evaluated beside 0-shot when the model's context fits it
    fewshot_seed: int  # one random.Random(seed) draws every item's examples, in item order
    fewshot_split: str = "train"  # where solved examples come from


@dataclass(frozen=True)
class Task:
    """One task, declared once (in the spirit of an lm-eval task YAML)."""

    name: str
    kind: str  # "multiple_choice" | "loglikelihood" | "generate": how evaluation scores it
    split: str  # the evaluation split
    metrics: tuple[str, ...]  # what evaluation reports, in this order
    headline: str  # the metric a reader looks at first (and the one the six-task mean takes)
    build: Callable[[dict], Item]  # raw record (Hub schema) -> Item; raises BadRecord
    text: Callable[[Item], str]  # the item as decontamination looks for it: question/context plus its gold answer
    required: tuple[str, ...] = ()  # fields every raw record must have
    hub: tuple[str, str | None] | None = None  # (dataset, config) on the Hugging Face Hub; None = generated
    generate: Callable[[str, int | None], list[dict]] | None = None  # (split, limit) -> raw records, for built-ins
    # the original releases: split -> ((data file, labels file or None), ...) under data_dir, tried in this order
    # after D/<task>/<split>.jsonl
    original: Mapping[str, tuple[tuple[str, str | None], ...]] = field(default_factory=dict)
    label_field: str | None = None  # the field a labels file fills (PIQA, WinoGrande original releases)
    in_mean: bool = False  # one of the six tasks whose headline metrics make the six-task mean
    generation: Generation | None = None  # generative tasks only

    def hub_source(self, split: str) -> str:
        """"hub:<dataset>[/<config>][<split>]": where Hub items come from (item sources, ledger inputs)."""
        path, config = self.hub
        return f"hub:{path}" + (f"/{config}" if config else "") + f"[{split}]"


@dataclass
class TaskData:
    """A task's items as loaded: which split, from where, and what was quarantined."""

    task: Task
    split: str
    source: str  # where the items came from
    items: list[Item]
    quarantined: list[dict] = field(default_factory=list)  # {"source", "line", "reason"}


TASKS: dict[str, Task] = {}  # name -> record, in registration order (ledgerlm/tasks/__init__.py)


def register(*tasks: Task) -> None:
    """Add records to the registry (a plugin or a test may add its own task)."""
    for task in tasks:
        if task.name in TASKS:
            raise ValueError(f"task {task.name!r} is registered twice")
        if task.headline not in task.metrics:
            raise ValueError(f"task {task.name!r}: headline {task.headline!r} is not one of its metrics {task.metrics}")
        if (task.kind == "generate") != (task.generation is not None):
            raise ValueError(f"task {task.name!r}: a generative task (and only one) declares its generation")
        TASKS[task.name] = task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskDataError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


# ----------------------------------------------------------------------------------------------- record helpers
def str_field(doc: dict, key: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str):
        raise BadRecord(f"field '{key}' must be a string, got {type(v).__name__}")
    return v


def int_label(v, name: str, n: int) -> int:
    try:
        i = int(str(v).strip())
    except ValueError:
        raise BadRecord(f"field '{name}' must be an integer, got {v!r}") from None
    if not 0 <= i < n:
        raise BadRecord(f"field '{name}' = {i} is out of range for {n} choices")
    return i


class FewshotSampler:
    """Draws k training examples per test item with one `random.Random(seed)` used in item order, as lm-eval's
    default ContextSampler does (fewshot split = train, so the test doc is never excluded)."""

    def __init__(self, pool: Sequence[dict], seed: int):
        if not pool:
            raise ValueError("few-shot prompting needs a non-empty training pool")
        self.pool = list(pool)
        self.rnd = random.Random(seed)

    def sample(self, k: int) -> list[dict]:
        return self.rnd.sample(self.pool, k) if k > 0 else []


# ----------------------------------------------------------------------------------------------- raw records
Records = Iterator[tuple[int, dict | None, str | None]]  # (line, record or None, why it is unusable or None)


def _read_jsonl(path: Path) -> Records:
    """Every non-blank line of a plain or .gz JSONL file, split on "\\n" only (ledgerlm.io)."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, None, f"invalid JSON: {e.msg}"
            continue
        except UnicodeDecodeError:
            yield n, None, "invalid UTF-8"
            continue
        yield (n, rec, None) if isinstance(rec, dict) else (n, None, "record is not a JSON object")


def _with_labels(records: Records, labels_path: Path, key: str) -> Records:
    """Attach one label per record from a `*-labels.lst` file (the original PIQA/WinoGrande releases)."""
    recs = list(records)
    labels = [ln.strip().decode("utf-8") for _, ln in iter_lines(labels_path) if ln.strip()]
    if len(labels) != len(recs):
        raise TaskDataError(
            f"{labels_path}: {len(labels)} labels for {len(recs)} records in the data file; they must align"
        )
    for (n, rec, err), lab in zip(recs, labels):
        if rec is not None and key not in rec:
            rec = {**rec, key: lab}
        yield n, rec, err


def local_source(name: str, split: str, data_dir: str | Path) -> tuple[Path, Path | None]:
    """The (data file, labels file or None) for `name`/`split` under `data_dir`, or a TaskDataError listing what was tried."""
    d = Path(data_dir)
    tried = []
    for ext in (".jsonl", ".jsonl.gz"):
        p = d / name / f"{split}{ext}"
        tried.append(p)
        if p.is_file():
            return p, None
    for rel, labels in get_task(name).original.get(split, ()):
        p = d / rel
        tried.append(p)
        if p.is_file():
            lp = d / labels if labels else None
            return p, (lp if lp is not None and lp.is_file() else None)
    raise TaskDataError(f"no local data for task {name!r} split {split!r}; tried: " + ", ".join(str(t) for t in tried))


def _local_records(task: Task, split: str, data_dir) -> tuple[str, Records]:
    path, labels = local_source(task.name, split, data_dir)
    recs = _read_jsonl(path)
    if labels is not None and task.label_field:
        recs = _with_labels(recs, labels, task.label_field)
    return str(path), recs


def hub_unavailable(tasks: Iterable[str], data_dir) -> str | None:
    """Why `tasks` cannot be loaded here, checked before any work: they would come from the Hub (no data_dir) and
    `datasets` (the `hf` extra) is not installed. None when they can be."""
    from_hub = [t for t in tasks if t in TASKS and TASKS[t].hub is not None and data_dir is None]
    if not from_hub:
        return None
    try:
        if importlib.util.find_spec("datasets") is not None:
            return None
    except (ValueError, ImportError):  # a module set to None in sys.modules: blocked
        pass
    return (
        f"{', '.join(from_hub)} would be read from the Hugging Face Hub, which needs the hf extra "
        "(pip install 'ledgerlm[hf]'); or give local copies with --data-dir (see docs/eval.md)"
    )


def _hub_records(task: Task, split: str) -> tuple[str, Records]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TaskDataError(hub_unavailable([task.name], None)) from e
    path, config = task.hub
    try:
        ds = datasets.load_dataset(hub.dataset(path), config, split=split, **hub.cache_kwargs())
    except (ConnectionError, OSError) as e:  # offline, or the dataset moved: say what to do instead
        raise TaskDataError(
            f"task {task.name!r}: could not load {path} from the Hugging Face Hub ({e}); "
            "give local copies with --data-dir (see docs/eval.md)"
        ) from None
    return task.hub_source(split), ((i + 1, dict(r), None) for i, r in enumerate(ds))


# ----------------------------------------------------------------------------------------------- public API
def load_task(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, split: str | None = None
) -> TaskData:
    """Load task `name` from our generator, `data_dir` or the Hub; the first `limit` valid items."""
    task = get_task(name)
    if limit is not None and limit < 1:
        raise TaskDataError(f"limit must be >= 1, got {limit}")
    split = split or task.split
    if task.generate is not None:
        source = f"builtin:{name}[{split}]"
        records: Records = ((i + 1, rec, None) for i, rec in enumerate(task.generate(split, limit)))
    elif data_dir is not None:
        source, records = _local_records(task, split, data_dir)
    else:
        source, records = _hub_records(task, split)
    items: list[Item] = []
    quarantined: list[dict] = []
    try:
        for line, rec, err in records:
            if limit is not None and len(items) >= limit:
                break
            if err is None:
                missing = [k for k in task.required if k not in rec]
                err = f"missing field '{missing[0]}'" if missing else None
            if err is None:
                try:
                    item = task.build(rec)
                except BadRecord as e:
                    err = str(e)
            if err is not None:
                quarantined.append({"source": source, "line": line, "reason": err})
                continue
            item.index = len(items)
            item.source = f"{source}:{line}"
            items.append(item)
    except CorruptInput as e:  # a truncated .gz: one line naming file and line, not a traceback
        raise TaskDataError(str(e)) from None
    if not items:
        detail = f"; first problem: line {quarantined[0]['line']}: {quarantined[0]['reason']}" if quarantined else ""
        raise TaskDataError(f"{source}: no valid {name} records ({len(quarantined)} quarantined){detail}")
    return TaskData(task, split, source, items, quarantined)


def benchmark_texts(name: str, data_dir: str | Path | None = None, split: str | None = None) -> list[str]:
    """One text per item of `name` (question/context + answer), for decontaminating training data."""
    data = load_task(name, data_dir=data_dir, split=split)
    return [data.task.text(it) for it in data.items]
