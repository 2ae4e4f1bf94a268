"""The summary table at the top of BENCHMARKS.md, generated from the recorded sections below it.

    python -m bench.summary            # rewrite the table between <!-- summary:start --> and <!-- summary:end -->
    python -m bench.summary --check    # exit 1 when the table is out of date or a quoted section is stale

Each row of `ROWS` quotes numbers of one section: the values of its `<!-- numbers: {...} -->` line (written by
`bench._record.record(..., numbers=...)`), or, for sections recorded before that line existed, a cell of its table
(`table:ROW|COLUMN`) or a pattern in its text (`text:REGEX`, group 1). A row cannot say more than its section: every
number in it is read from the section, repeated runs show their spread (median, min–max, n), and "met" is computed
from the row's comparisons (on the median of repeated runs), never typed.

A section carries the code version it measured (`commit <sha12>` in its stamp line). A row is current when that
commit's files under the row's `paths` (the modules that determine the number, bench script included) are the same
as HEAD's: `git diff --quiet <commit> HEAD -- <paths>`, so merges that do not touch them do not count.
tests/test_benchmarks_summary.py fails when the table is out of date, when a quoted section is stale or was measured
on uncommitted code (`+dirty`), or when a row quotes a section without a code stamp without saying so (`unverified`).

Adding a row for a new section is one entry in ROWS, e.g.

    Row("post", "DPO held-out preference accuracy > {}, binomial p < {}", "post-real",
        "{dpo_acc:.3f} (p = {dpo_p:.1e}, n = {dpo_n})", [("dpo_acc", ">", 0.5), ("dpo_p", "<", 0.05)],
        paths=["bench/post_real.py", "ledgerlm/post/dpo.py"]),

then `python -m bench.summary`.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
# a section written by bench._record.record, or one kept as history (recorded before code versions were stamped)
SECTION = re.compile(r"<!-- (bench|history):(.+?):start -->\n(.*?)<!-- \1:\2:end -->", re.S)
STAMP = re.compile(r" — (\d{4}-\d{2}-\d{2})(?: — commit (\w+)(\+dirty)?)?\s*$", re.M)
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
SYMBOL = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "="}


@dataclass(frozen=True)
class Row:
    issue: str
    goal: str  # what the goal is; each "{}" is filled with the threshold of the matching comparison in `check`
    section: str  # the section's name (`### name` in BENCHMARKS.md)
    measured: str = ""  # "{key}" / "{key:.1f}": the section's numbers; lists render as median (min–max, n)
    check: list[tuple] = field(default_factory=list)  # (key, op, threshold): met when every one holds
    paths: list[str] = field(default_factory=list)  # code whose change since the section's commit makes it stale
    unverified: str = ""  # the section has no code stamp: why it is still quoted (shown in the row)
    # why there is no number of today's code, while the section is missing or only history (unstamped): the row then
    # links the history; once the section is recorded with a code stamp, the row quotes `measured` like any other
    not_measured: str = ""


def pending(row: Row, sec: Section | None) -> bool:
    """The row quotes nothing (yet): declared not measured and its section is missing or only history."""
    return bool(row.not_measured) and (sec is None or sec.commit is None)


# ---------------------------------------------------------------------------------------------------------- rows
CURATE = ["bench/curate.py", "ledgerlm/data/curate/", "ledgerlm/data/minhash.py", "ledgerlm/data/extsort.py"]
CURATE += ["ledgerlm/data/dedup.py", "ledgerlm/data/sources.py", "ledgerlm/data/workdir.py", "ledgerlm/data/runs.py"]
GATES = ["bench/curate.py", "ledgerlm/data/filters.py", "ledgerlm/data/quality.py", "ledgerlm/data/wordtok.py"]
GATES += ["ledgerlm/data/spacy_en_rules.json"]
POST = ["ledgerlm/post/common.py", "ledgerlm/post/preference.py", "ledgerlm/components/chat.py"]
POST += ["ledgerlm/model/llama.py", "ledgerlm/components/stats.py"]
# the rest of the curate stage's per-document path (bench.scale runs the whole stage)
SCALE = ["ledgerlm/data/chunkcache.py", "ledgerlm/data/segdedup.py", "ledgerlm/data/decontam.py"]
SCALE += ["ledgerlm/data/contamination_cmd.py", "ledgerlm/cli.py", "ledgerlm/pipeline.py"]
DECONTAM = ["bench/curate.py", "ledgerlm/data/decontam.py", "ledgerlm/data/minhash.py", "ledgerlm/tasks"]
TOKENIZE = ["bench/tokenize.py", "ledgerlm/data/tokenize_stage.py", "ledgerlm/data/shards.py", "ledgerlm/data/tokenizer.py"]
TOKENIZE += ["ledgerlm/data/documents.py", "ledgerlm/data/token_index.py", "ledgerlm/stage.py", "ledgerlm/ledger.py"]
# an end-to-end run of every stage: any change to the package can move its numbers
DEMO = ["bench/demo.py", "ledgerlm", "recipes/demo.yaml", "pyproject.toml"]

ROWS = [
    Row(
        "curate",
        "near-dedup on the curate stage's own path (signatures, external-sort LSH, exact-Jaccard clusters) ≥ {} GB of "
        "text per CPU-hour",
        "curate",
        "{near_dedup_gb_per_cpu_hour:.1f} GB/h near-dedup alone; the whole stage with only near-dedup on "
        "{stage_near_dedup_gb_per_cpu_hour:.1f} GB/h ({docs} documents, {mb:.1f} MB)",
        [("near_dedup_gb_per_cpu_hour", ">=", 20)],
        CURATE,
    ),
    Row(
        "curate",
        "≥ {}x datatrove's default MinHash (CPU, same documents), near-dedup alone and whole read → write pipeline",
        "curate",
        "datatrove needs {vs_datatrove_near_dedup:.1f} times our CPU for near-dedup alone "
        "({datatrove_near_dedup_gb_per_cpu_hour:.2f} GB/h), {vs_datatrove_whole:.1f} times for the whole pipeline",
        [("vs_datatrove_near_dedup", ">=", 5), ("vs_datatrove_whole", ">=", 5)],
        CURATE,
    ),
    Row(
        "curate",
        "all quality gates ≥ {} documents per CPU-second",
        "curate",
        "{gates_docs_per_cpu_s:,.0f}",
        [("gates_docs_per_cpu_s", ">=", 1000)],
        GATES,
    ),
    Row(
        "curate",
        "whole `ledgerlm curate` at {} documents with 1 worker ≥ {} documents per CPU-second, peak RSS flat (smallest "
        "→ largest size: ≤ {}x)",
        "Curate and tokenize at scale (bench.scale)",
        "{curate_w1_docs_per_cpu_s:,.0f} documents per CPU-second at {curate_w1_docs:,} documents "
        "({curate_w1_cpu_s:,.0f} CPU s); peak RSS x{curate_w1_rss_ratio:.2f} from {curate_w1_smallest_docs:,} "
        "documents ({curate_w1_rss_gb_smallest:.2f} → {curate_w1_rss_gb_largest:.2f} GB)",
        [
            ("curate_w1_docs", ">=", 1_000_000),
            ("curate_w1_docs_per_cpu_s", ">=", 1000),
            ("curate_w1_rss_ratio", "<=", 1.5),
        ],
        ["bench/scale.py", *CURATE[1:], *GATES[1:], *SCALE],
    ),
    Row(
        "curate",
        "each gate family and the default chain make datatrove's FineWeb-chain decision on ≥ {} of documents "
        "(real text from ../shared/data and generated web pages)",
        "gate-parity",
        "chain {gate_parity_chain_agreement_pct:.2f}%, Gopher repetition {gate_parity_gopher_repetition_agreement_pct:.2f}%, "
        "Gopher quality {gate_parity_gopher_quality_agreement_pct:.2f}%, C4 {gate_parity_c4_agreement_pct:.2f}%, FineWeb "
        "{gate_parity_fineweb_agreement_pct:.2f}% on {gate_parity_docs:,} documents ({gate_parity_disagreements} "
        "disagreements); {gates_docs_per_cpu_s:,.0f} vs datatrove's {datatrove_chain_docs_per_cpu_s:,.0f} documents per "
        "CPU-second",
        [
            ("gate_parity_chain_agreement_pct", ">=", 99.5),
            ("gate_parity_gopher_repetition_agreement_pct", ">=", 99.5),
            ("gate_parity_gopher_quality_agreement_pct", ">=", 99.5),
            ("gate_parity_c4_agreement_pct", ">=", 99.5),
            ("gate_parity_fineweb_agreement_pct", ">=", 99.5),
        ],
        ["bench/gate_parity.py", *GATES[1:]],
    ),
    Row(
        "curate",
        "decontamination scan against the recipe's {} benchmarks ≥ {} documents per CPU-second",
        "curate",
        "{decontam_docs_per_cpu_s:,.0f} ({decontam_docs_matched} documents with a match, {decontam_planted} "
        "planted; ARC/HellaSwag from the test fixtures)",
        [("decontam_benchmarks", "==", 7), ("decontam_docs_per_cpu_s", ">=", 3000)],
        DECONTAM,
    ),
    Row(
        "curate",
        "Ray and Slurm give the local executor's output hashes",
        "curate-cluster",
        "Ray: {table:ray|outputs equal local's}, Slurm: {table:slurm|outputs equal local's} ({table:ray|wall s} s and "
        "{table:slurm|wall s} s wall vs {table:local|wall s} s local)",
        [("table:ray|outputs equal local's", "==", "yes"), ("table:slurm|outputs equal local's", "==", "yes")],
        not_measured="the section (history) was recorded 2026-12-01, before code stamps; not re-run (needs a Ray head and a Slurm node)",
    ),
    Row(
        "tokenize",
        "`ledgerlm tokenize` end to end ≥ {} of raw `tokenizers` encoding, per CPU-second (the largest corpus measured)",
        "tokenize",
        "{stage_vs_raw:.0%} at 100k documents: {stage_mb_per_cpu_s_100000:.2f} MB ({stage_docs_per_cpu_s_100000:,.0f} "
        "documents) per CPU-second vs raw {raw_mb_per_cpu_s_100000:.2f}; 30k: {stage_vs_raw_30000:.0%}; 10k: "
        "{stage_vs_raw_10000:.0%} of raw (start-up weighs more on a small corpus)",
        [("stage_vs_raw", ">=", 0.8)],
        TOKENIZE,
    ),
    Row(
        "tokenize",
        "memory bounded for any document size: one {} MB document in pieces ≤ {} GB peak RSS",
        "tokenize",
        "{long_doc_rss_gb_pieces:.2f} GB in pieces vs {long_doc_rss_gb_whole:.2f} GB whole ({long_doc_mb:.0f} MB "
        "document, identical shards)",
        [("long_doc_mb", ">=", 20), ("long_doc_rss_gb_pieces", "<=", 1.0)],
        TOKENIZE,
    ),
    Row(
        "pretrain",
        "CPU training step ≥ {}x `LlamaForCausalLM` (process CPU time, fp32)",
        "pretrain-cpu-throughput",
        "{table:ours|vs HF eager}x eager vs eager; compiled: {table:ours+compile|vs HF eager}x vs HF eager, HF "
        "compiled {table:hf+compile|vs HF eager}x (medians of 4 rounds, process CPU time, 1 thread)",
        [("table:ours|vs HF eager", ">=", 1.3)],
        ["bench/pretrain.py", "ledgerlm/model/llama.py", "ledgerlm/model/loss.py", "ledgerlm/components/optimizer.py"],
    ),
    Row(
        "pretrain",
        "H100 smollm-135m seq 2048 bf16 ≥ 45% MFU",
        "pretrain-gpu-throughput",
        not_measured="no GPU since 2026-11-23; that run (history) predates the chunked loss and counted "
        "non-causal attention FLOPs (6N + 12·L·d·T); `python -m bench.pretrain gpu-mfu` is prepared",
    ),
    Row(
        "pretrain",
        "chunked output head + loss: peak memory ≤ {} of the plain path (vocab 49,152, d 576, 8 × 2048 tokens)",
        "pretrain-loss-memory",
        "{table:chunked, 4096 tokens|vs plain} of plain at 4096-token chunks ({table:chunked, 4096 tokens|peak memory "
        "above inputs} vs {table:plain|peak memory above inputs})",
        [("table:chunked, 4096 tokens|vs plain", "<=", 0.25)],
        not_measured="the section (history) was recorded 2026-12-01, before code stamps (the plain path needs ~10 GB: not re-run on this "
        "shared machine)",
    ),
    Row(
        "pretrain",
        "data-efficient recipe needs ≤ {} of the same-compute (4-epoch) plain recipe's unique tokens",
        "pretrain-data-efficiency",
        "{text:same 4 epochs.*?mean ([0-9.]+)} (vs the 1-epoch plain recipe: {text:1-epoch recipe: .*?mean ([0-9.]+)})",
        [("text:same 4 epochs.*?mean ([0-9.]+)", "<=", 0.5)],
        not_measured="the section (history) was recorded 2026-11-23, before code stamps, and did not meet the goal "
        "against the same-compute baseline (it met it only against the 1-epoch plain recipe); not re-run (~18 min CPU)",
    ),
    Row(
        "post",
        "DPO, reward model and GRPO beat their baselines on held-out data (p < 0.05)",
        "post-training acceptance (built-in arith task)",
        not_measured="the recorded run (history, H100, 2026-11-23: DPO and GRPO yes, reward model at chance) "
        "predates code stamps; re-measured on CPU by `bench.post_real`",
    ),
    Row(
        "post",
        "DPO on real preference pairs (hh-rlhf) raises the held-out chosen-preference over its SFT start, McNemar p < {}",
        "post-training on real data: effects against each stage's start",
        "{dpo_chosen_pref_before:.3f} → {dpo_chosen_pref_after:.3f} (p = {dpo_chosen_pref_p:.1e}); implicit-reward "
        "accuracy {dpo_implicit_reward_acc:.3f}",
        [("dpo_chosen_pref_p", "<", 0.05)],
        ["bench/post_real.py", "ledgerlm/post/sft.py", "ledgerlm/post/dpo.py", *POST],
    ),
    Row(
        "post",
        "the reward model on real preference pairs beats chance, binomial p < {} for every seed",
        "post-training on real data: effects against each stage's start",
        "accuracy {rm_acc:.3f}; p vs chance {rm_p_vs_chance:.1e} (worst {max:rm_p_vs_chance:.2g}); untrained head "
        "{rm_acc_untrained_head:.3f}",
        [("max:rm_p_vs_chance", "<", 0.05)],
        ["bench/post_real.py", "ledgerlm/post/sft.py", "ledgerlm/post/reward.py", *POST],
    ),
    Row(
        "post",
        "KV-cache sampling ≥ {}x `transformers.generate` tokens per CPU-second (same weights, batch 48, T 0.7, "
        "48 new tokens per row, no row stopping early)",
        "generate",
        "demo model {demo_speedup:.2f}x ({demo_ours_tok_s:,.0f} vs {demo_hf_tok_s:,.0f} tok/s); SmolLM-135M shape "
        "{smollm_135m_speedup:.2f}x ({smollm_135m_ours_tok_s:,.0f} vs {smollm_135m_hf_tok_s:,.0f} tok/s)",
        [("demo_speedup", ">=", 1.5), ("smollm_135m_speedup", ">=", 1.5)],
        ["bench/generate.py", "ledgerlm/model/generate.py", "ledgerlm/model/decode.py", "ledgerlm/model/llama.py"],
    ),
    Row(
        "eval",
        "per-item log-likelihoods equal lm-eval's within {} (4x256 model, 1000 items per task)",
        "parity_lmeval",
        "max {text:\\| piqa \\| \\d+ \\| \\d+ \\| ([0-9.e+-]+) \\|:.2e} on PIQA; identical accuracies on PIQA, WinoGrande, "
        "LAMBADA (GSM8K: 3 fixture items, both 0, not evidence)",
        [("text:\\| piqa \\| \\d+ \\| \\d+ \\| ([0-9.e+-]+) \\|", "<", 1e-3)],
        not_measured="the section (history) was recorded 2026-11-23, before code stamps",
    ),
    Row(
        "eval",
        "per-item log-likelihoods equal lm-eval's within {} (SmolLM-135M architecture, 200 items per task)",
        "parity_lmeval-smollm-135m",
        "max {text:\\| piqa \\| \\d+ \\| \\d+ \\| ([0-9.e+-]+) \\|:.2e} on PIQA",
        [("text:\\| piqa \\| \\d+ \\| \\d+ \\| ([0-9.e+-]+) \\|", "<", 1e-3)],
        not_measured="the section (history) was recorded 2026-11-23, before code stamps",
    ),
    Row(
        "eval",
        "≥ {}x lm-eval's items per CPU-second (log-likelihood tasks)",
        "parity_lmeval-smollm-135m",
        "{text:Log-likelihood tasks together: .*?\\(\\*\\*([0-9.]+)x\\*\\*\\)}x with the SmolLM-135M architecture "
        "(bounded by the matmul FLOP ratio on a CPU)",
        [("text:Log-likelihood tasks together: .*?\\(\\*\\*([0-9.]+)x\\*\\*\\)", ">=", 2)],
        not_measured="the section (history) was recorded 2026-11-23, before code stamps",
    ),
    Row(
        "demo",
        "README's first command from a clean clone (install + `ledgerlm run demo`) < {} s wall on 2 cores",
        "demo-from-clean-clone",
        "{total_wall_s:.0f} s wall, {total_cpu_s:.0f} s CPU (load {load_1min_before:.1f}); the stages {stages_wall_s:.0f} s",
        [("total_wall_s", "<", 600)],
        DEMO,
        not_measured="the recorded run (history, 2026-12-01) predates code stamps; `python -m bench.demo` records it "
        "with the stages' metrics",
    ),
    Row(
        "demo",
        "each post-training stage of the demo improves its own held-out metric over the model it starts from "
        "(paired p < {} for SFT, DPO, the reward model and RL, each in the better direction)",
        "demo-from-clean-clone",
        "SFT loss {sft.effect.before:.3g} → {sft.effect.after:.3g} (p = {sft.effect.p:.1g}); DPO chosen-preference "
        "{dpo.effect.before:.3g} → {dpo.effect.after:.3g} (p = {dpo.effect.p:.1e}); reward model vs its untrained head "
        "{reward.effect.before:.3g} → {reward.effect.after:.3g} (p = {reward.effect.p:.1e}); RL greedy EM "
        "{rl.effect.before:.3g} → {rl.effect.after:.3g} (p = {rl.effect.p:.2g})",
        [
            ("sft.effect.p", "<", 0.05),
            ("dpo.effect.p", "<", 0.05),
            ("reward.effect.p", "<", 0.05),
            ("rl.effect.p", "<", 0.05),
            ("sft.effect.improved", "==", 1),
            ("dpo.effect.improved", "==", 1),
            ("reward.effect.improved", "==", 1),
            ("rl.effect.improved", "==", 1),
        ],
        DEMO,
        not_measured="`python -m bench.demo` records the stages' effects",
    ),
    Row(
        "rehearsal",
        "`ledgerlm run smollm-135m-rehearsal` (every stage of `smollm-135m-1gpu`, offline) in ≤ {} CPU-seconds of "
        "all its processes (the goal: 3 min on 2 cores; wall time on this shared machine follows its load)",
        "rehearsal",
        "{cpu_s:.0f} s CPU; {wall_s:.0f} s wall at load {load_1min_start:.1f} (1-min average at the starts)",
        [("cpu_s", "<=", 180)],
        ["bench/rehearsal.py", "ledgerlm", "recipes/smollm-135m-rehearsal.yaml", "recipes/smollm-135m-1gpu.yaml"],
        not_measured="only hand-run before (no section); `python -m bench.rehearsal` records it",
    ),
]


# ------------------------------------------------------------------------------------------------------- sections
@dataclass
class Section:
    name: str
    kind: str  # "bench" (current) or "history"
    text: str
    date: str | None
    commit: str | None
    dirty: bool
    numbers: dict

    @property
    def anchor(self) -> str:
        """GitHub's anchor of the `### name` heading."""
        return "#" + re.sub(r"[^\w\- ]", "", self.name.lower()).replace(" ", "-")


def sections(text: str) -> dict[str, Section]:
    """Every section by name; a current one (bench:) wins over a history one of the same name."""
    out: dict[str, Section] = {}
    for m in SECTION.finditer(text):
        kind, name, body = m.group(1), m.group(2), m.group(3)
        stamp = STAMP.search(body)
        nums = re.search(r"<!-- numbers: (\{.*?\}) -->", body)
        s = Section(
            name,
            kind,
            body,
            stamp.group(1) if stamp else None,
            stamp.group(2) if stamp else None,
            bool(stamp and stamp.group(3)),
            json.loads(nums.group(1)) if nums else {},
        )
        if name not in out or kind == "bench":
            out[name] = s
    return out


def _num(s: str):
    t = s.strip().replace(",", "").rstrip("x%")
    m = re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", t)
    if not m:
        return s.strip()
    return float(t) if any(c in t for c in ".e") else int(t)


def value(sec: Section, key: str):
    """A number of the section: a key of its numbers line (`max:KEY` / `min:KEY`: the largest / smallest of its
    repeated values), `table:ROW|COLUMN` (first table row whose first cell
    starts with ROW, exact match preferred) or `text:REGEX` (group 1)."""
    if key.startswith("text:"):
        m = re.search(key[5:], sec.text, re.S)
        if not m:
            raise KeyError(f"section {sec.name!r}: pattern {key[5:]!r} not found")
        return _num(m.group(1))
    if key.startswith("table:"):
        row, col = key[6:].split("|", 1)
        header, found = None, []
        for line in sec.text.splitlines():
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                continue
            first = cells[0].strip("`*")
            if first.startswith(row) and col in header:
                found.append((first != row, _num(cells[header.index(col)])))
        if found:
            return min(found, key=lambda f: f[0])[1]  # an exact first cell wins over a prefix
        raise KeyError(f"section {sec.name!r}: no table row {row!r} with column {col!r}")
    for agg, fn in (("max:", max), ("min:", min)):  # every run / seed must pass: compare the worst one
        if key.startswith(agg):
            v = value(sec, key[len(agg) :])
            return fn(v) if isinstance(v, list) else v
    if key not in sec.numbers:
        raise KeyError(f"section {sec.name!r}: no number {key!r} (has {sorted(sec.numbers)})")
    return sec.numbers[key]


def central(v):
    return statistics.median(v) if isinstance(v, list) else v


def render(v, spec: str) -> str:
    def one(x) -> str:
        return format(x, spec) if spec and not isinstance(x, str) else str(x)

    if isinstance(v, list):
        if len(v) == 1:
            return one(v[0])
        return f"{one(statistics.median(v))} ({one(min(v))}–{one(max(v))}, n = {len(v)})"
    return one(v)


SPEC = re.compile(r"[<>^=]?[+-]?[,_]?\d*(\.\d+)?[a-zA-Z%]?")


def fill(template: str, sec: Section) -> str:
    """Format `template` with the section's values: {key} or {key:spec} (spec a format spec such as .1f or ,.0f;
    a key may hold any character but braces, so `table:` and `text:` keys are written as they are)."""

    def one(m: re.Match) -> str:
        key, spec = m.group(1), ""
        if ":" in key:
            k, s = key.rsplit(":", 1)
            if s and SPEC.fullmatch(s):
                key, spec = k, s
        return render(value(sec, key), spec)

    return re.sub(r"\{([^{}]+)\}", one, template)


def _fmt_threshold(t) -> str:
    return f"{t:g}" if isinstance(t, float) else str(t)


def met(row: Row, sec: Section | None) -> str:
    if pending(row, sec):
        return "not measured"
    if not row.check:
        return "—"
    failed = []
    for key, op, threshold in row.check:
        v = central(value(sec, key))
        if not OPS[op](v, threshold):
            failed.append(f"{render(v, '')} {SYMBOL[op]} {_fmt_threshold(threshold)} fails")
    verdict = "yes" if not failed else "**no** (" + "; ".join(failed) + ")"
    return verdict + (" (unverified)" if row.unverified else "")


def goal_text(row: Row) -> str:
    return row.goal.format(*(_fmt_threshold(t) for _, _, t in row.check))


def table(text: str) -> str:
    secs = sections(text)
    lines = [
        "| issue | goal | measured | met | section (code, date) |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        sec = secs.get(row.section)
        if sec is None and not row.not_measured:
            raise KeyError(f"row {row.goal!r}: no section {row.section!r} in BENCHMARKS.md")
        if pending(row, sec):
            measured = f"not measured on today's code: {row.not_measured}"
            where = f"history: [{row.section}]({sec.anchor})" if sec is not None else "—"
        else:
            if not row.measured:
                raise ValueError(
                    f"row {row.goal!r}: section {row.section!r} is recorded, but the row has no `measured`"
                )
            measured = fill(row.measured, sec)
            if row.unverified:
                measured += f" — *unverified: {row.unverified}*"
            code = f"`{sec.commit}`" if sec.commit else "no code stamp"
            where = f"[{sec.name}]({sec.anchor}) · {code} · {sec.date}"
        lines.append(f"| {row.issue} | {goal_text(row)} | {measured} | {met(row, sec)} | {where} |")
    return "\n".join(lines)


def replace_table(text: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"BENCHMARKS.md has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(text)}\n{END}{tail}"


# ---------------------------------------------------------------------------------------------------- code version
def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def in_git() -> bool:
    try:
        return git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true"
    except (OSError, subprocess.TimeoutExpired):
        return False


def problems(text: str) -> list[str]:
    """Why rows cannot be trusted as of HEAD: sections measured on uncommitted code, older than the last change to
    the code they measure, or quoted without a code stamp and without saying so. [] when all is well."""
    secs, out = sections(text), []
    check_git = in_git()
    for row in ROWS:
        sec = secs.get(row.section)
        if pending(row, sec):
            continue
        where = f"row {goal_text(row)!r} (section {row.section!r})"
        if sec.commit is None:
            if not row.unverified:
                out.append(f"{where}: the section has no code stamp; re-run it, or mark the row unverified")
            continue
        if row.unverified:
            out.append(f"{where}: marked unverified but the section has a code stamp: drop `unverified`")
        if sec.dirty:
            out.append(f"{where}: measured on uncommitted changes ({sec.commit}+dirty): commit, then re-run")
        if not row.paths:
            out.append(f"{where}: no `paths`: which code determines these numbers?")
        if not check_git or not row.paths:
            continue
        if git("cat-file", "-e", f"{sec.commit}^{{commit}}").returncode != 0:
            if git("rev-parse", "--is-shallow-repository").stdout.strip() != "true":
                out.append(f"{where}: commit {sec.commit} is not in this repository")
            continue
        for p in row.paths:
            if not (ROOT / p).exists():
                out.append(f"{where}: path {p} does not exist")
        diff = git("diff", "--quiet", sec.commit, "HEAD", "--", *row.paths)
        if diff.returncode == 1:
            changed = git("diff", "--name-only", sec.commit, "HEAD", "--", *row.paths).stdout.split()
            out.append(f"{where}: measured at {sec.commit}, since then changed: {', '.join(changed)}; re-run it")
        elif diff.returncode != 0:
            out.append(f"{where}: git diff failed: {diff.stderr.strip()}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the table is out of date or rows are stale")
    args = ap.parse_args()
    text = BENCHMARKS.read_text()
    new = replace_table(text)
    issues = problems(new)
    for p in issues:
        print(p, file=sys.stderr)
    if args.check:
        if new != text:
            print("BENCHMARKS.md: the summary table is out of date: run python -m bench.summary", file=sys.stderr)
            return 1
        return 1 if issues else 0
    if new != text:
        BENCHMARKS.write_text(new)
        print("BENCHMARKS.md: summary table rewritten")
    return 1 if issues else 0


if __name__ == "__main__":
    raise SystemExit(main())
