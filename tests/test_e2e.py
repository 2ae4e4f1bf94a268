"""The whole pipeline on the built-in corpus (demo-fast recipe), then the report card and the audit (`demo_run`: conftest)."""

from __future__ import annotations

import json
import re

from ledgerlm import ledger
from ledgerlm.card import Card
from ledgerlm.cli import main
from ledgerlm.report.report_stage import Config, titles
from ledgerlm.stage import get

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?")


def test_every_stage_recorded_and_audit_intact(demo_run):
    stages = {r["stage"]: r for r in ledger.read_records(demo_run)}
    expected = ["curate", "tokenize", "pretrain", "sft", "interpolate", "dpo", "reward", "rl", "eval", "report"]
    assert list(stages) == expected
    assert all(r["status"] == "ok" for r in stages.values())
    c = stages["curate"]["counters"]
    assert c["kept"] + sum(c["dropped"].values()) == c["read"]
    assert c["dropped"].get("contaminated:arith", 0) > 0  # the planted leaks were found
    assert stages["pretrain"]["samples"] and stages["sft"]["samples"]
    assert ledger.audit(demo_run)[0] == []


def test_second_run_skips_everything(demo_run, capsys):
    assert main(["run", "demo-fast", "--out", str(demo_run)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 10 and "running" not in out


def _ledger_numbers(run, card: Card) -> set[str]:
    """Every number in the ledger (records and the metrics files they list), in every format the report uses."""
    out: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, int | float) and not isinstance(x, bool):
            out.update(card.formats(x))
        elif isinstance(x, str):  # numbers quoted inside ledger text (a model name, a citation)
            out.update(NUMBER.findall(x))

    for rec in ledger.read_records(run):
        walk(rec)
        for art in rec.get("outputs", {}).values():
            if art["path"].endswith("metrics.jsonl"):
                walk([json.loads(x) for x in ledger.resolve(art["path"], run).read_text().split("\n") if x])
    return out


def test_report_has_every_section_and_only_ledger_numbers(demo_run):
    md = (demo_run / "report" / "report.md").read_text()
    html = (demo_run / "report" / "report.html").read_text()
    for section in titles():  # the report's own sections and every registered stage's
        assert f"## {section}" in md and f"<h2>{section}</h2>" in html
    assert "<img" in html and "data:image/png;base64," in html  # self-contained

    card = Card(demo_run)
    allowed = _ledger_numbers(demo_run, card)
    records = [r for r in ledger.read_records(demo_run) if r["stage"] != "report"]
    cfg = Config()
    # the stage table's sums and costs are derived from ledger numbers by the report, and the report's own rates
    secs = [float(r["seconds"]) for r in records]
    rates = [cfg.gpu_usd_per_hour if r["device"] == "cuda" else cfg.cpu_usd_per_hour for r in records]
    derived = [sum(secs), sum(s / 3600 * k for s, k in zip(secs, rates)), cfg.gpu_usd_per_hour, cfg.cpu_usd_per_hour]
    derived += [s / 3600 * k for s, k in zip(secs, rates)]
    for r in records:
        derived += [
            sum(a.get("n_files", 1) for a in r["outputs"].values()),
            sum(a.get("size", 0) for a in r["outputs"].values()) / 1e6,  # MB
            len(r.get("warnings") or []),
        ]
    by = {r["stage"]: r for r in records}
    c = by["curate"]["counters"]
    derived += [c["kept"] / c["read"], sum(v for s in by["tokenize"]["counters"]["tokens"].values() for v in s.values())]
    allowed |= {f for x in derived for f in card.formats(x)}

    body = md.split("## Sample generations")[0] + md.split("## Environment and code")[1]
    body = re.sub(r"`[^`]*`", "", body)  # code spans: ids, commits, file names
    body = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "", body)  # timestamps
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", body)  # image links
    for fixed in ("95% CI", "pass@1", "against 50%", "(1−α)"):  # words of the report's labels, not measurements
        body = body.replace(fixed, "")
    body = re.sub(r"\d+-grams?", "", body)  # reason labels spelled from their codes (quality:gopher_dup_5gram)
    numbers = NUMBER.findall(body)
    stray = sorted({n for n in numbers if n not in allowed})
    assert not stray, f"numbers in report.md that are not in the ledger: {stray[:20]}"
    # and the numbers that matter are there
    curate = ledger.read_record(demo_run, "curate")["counters"]
    assert card.num(curate["read"]) in md and card.num(curate["kept"]) in md


def test_flipped_byte_in_a_shard_is_caught(demo_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(demo_run, run, symlinks=True)
    shard = next((run / "tokenize" / "shards").rglob("*.bin"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    shard.write_bytes(bytes(raw))
    assert main(["audit", str(run)]) == 1
    problems, _ = ledger.audit(run)
    assert any(shard.name in p for p in problems)


def test_training_scalars_are_in_tensorboard_event_files(demo_run):
    """Every training stage's metrics.jsonl rows are also in RUN/tensorboard/<stage>/, read back by TensorBoard."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage, key in (
        ("pretrain", "loss"),
        ("sft", "loss"),
        ("dpo", "loss"),
        ("reward", "loss"),
        ("rl", "reward_mean"),
    ):
        rec = ledger.read_record(demo_run, stage)
        assert rec["logs"]["tensorboard"] == f"tensorboard/{stage}"
        acc = EventAccumulator(str(demo_run / rec["logs"]["tensorboard"]))
        acc.Reload()
        got = {e.step: e.value for e in acc.Scalars(key)}
        rows = [json.loads(x) for x in (demo_run / stage / "metrics.jsonl").read_text().split("\n") if x]
        want = {r["step"]: r[key] for r in rows if key in r}
        assert got.keys() == want.keys() and len(want) >= 2, stage
        assert all(abs(got[s] - want[s]) <= 1e-6 * max(1.0, abs(want[s])) for s in want), stage
    pre = EventAccumulator(str(demo_run / "tensorboard" / "pretrain"))
    pre.Reload()
    assert {"loss", "val_loss", "lr", "grad_norm", "tok_s"} <= set(pre.Tags()["scalars"])


def test_every_stage_has_a_summary_and_warnings_are_well_formed(demo_run, capsys):
    for r in ledger.read_records(demo_run):
        if r["stage"] != "report":
            assert r["summary"] and all(isinstance(line, str) and line for line in r["summary"]), r["stage"]
        assert all(set(w) == {"code", "message"} for w in r["warnings"]), r["stage"]
    assert ledger.read_record(demo_run, "curate")["summary"][0].startswith("kept ")


def test_every_stage_writes_its_headline_metric(demo_run):
    """Each StageSpec's headline (what `ledgerlm sweep` plots without --metric) is a metric its stage really writes."""
    for rec in ledger.read_records(demo_run):
        heads = get(rec["stage"]).headline or ()
        missing = [h for h in heads if h not in (rec.get("metrics") or {})]
        assert not missing, f"{rec['stage']}: headline {missing} not in its record's metrics {sorted(rec['metrics'])}"
