"""SFT: chat template + loss mask, conversation loading, packing with document masking, and the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ledgerlm.components import chat
from ledgerlm.post.common import IGNORE
from ledgerlm.post.sft import Example, assistant_loss, collate, make_example, nll_sum, pack, split_conversations

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, busy machine OpenMP barriers make them far
    slower; restored afterwards so other test modules are unaffected."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CONVS = [
    [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Two plus two is four."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Red, or green."},
    ],
    [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there, friend!"}],
]


def toy_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Learnable synthetic chats: 'What is A plus B?' -> 'A plus B is C.'"""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a, b = torch.randint(0, 20, (2,), generator=g).tolist()
        out.append(
            [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
        )
    return out


def tiny_tokenizer():
    """A small byte-level BPE with the SmolLM special tokens at ids 0, 1, 2 (trained in memory, no Hub)."""
    from ledgerlm.data.tokenizer import train_tokenizer

    text = [chat.render_text(c) for c in CONVS + toy_conversations(200)] * 3
    return train_tokenizer(text, vocab_size=400, min_frequency=1)


def make_base_run(tmp_path: Path, n_convs: int = 240, max_seq_len: int = 128) -> tuple[Path, Path]:
    """(run_dir with pretrain/model = a random tiny Llama + tokenizer, conversations.jsonl)."""
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Llama(model_config("tiny", vocab_size=tok.get_vocab_size(), max_seq_len=max_seq_len))
    run = tmp_path / "run"
    save_model(model, run / "pretrain" / "model", tokenizer=tok)
    data = tmp_path / "convs.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in toy_conversations(n_convs, seed=1)))
    return run, data


def sft_recipe(data_path: Path, **sft):
    from ledgerlm.pipeline import build_recipe

    cfg = {"data": str(data_path), "max_steps": 30, "batch_size": 4, "lr": 3e-3, "seq_len": 128, "val_fraction": 0.1}
    cfg.update(sft)
    return build_recipe({"name": "t", "seed": 0, "device": "cpu", "stages": ["sft"], "sft": cfg}, need_all=False)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_special_ids(tok):
    assert chat.special_ids(tok) == (1, 2)


def test_render_masks_assistant_tokens_only(tok):
    conv = CONVS[1]
    ids, mask = chat.render(conv, tok)
    assert len(ids) == len(mask)
    assert tok.decode(ids, skip_special_tokens=False) == chat.render_text(conv)
    # the trained tokens are exactly the assistant contents, each followed by <|im_end|>
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert [tok.decode(s[:-1]) for s in spans] == ["Blue.", "Red, or green."]
    assert all(s[-1] == 2 for s in spans)
    assert ids[0] == 1 and mask[0] == 0


def test_render_prompt_is_prefix_of_conversation(tok):
    conv = CONVS[1]
    prompt = chat.render_prompt(conv[:-1], tok)
    ids, mask = chat.render(conv, tok)
    assert ids[: len(prompt)] == prompt
    assert tok.decode(prompt, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert mask[len(prompt)] == 1 and mask[len(prompt) - 1] == 0
    with pytest.raises(chat.ChatFormatError, match="must not end with an assistant"):
        chat.render_prompt(conv, tok)


def test_validate_errors_name_the_field():
    with pytest.raises(chat.ChatFormatError, match=r"messages\[1\]\.role.*unknown role"):
        chat.validate([{"role": "user", "content": "x"}, {"role": "narrator", "content": "y"}])
    with pytest.raises(chat.ChatFormatError, match="no non-empty assistant"):
        chat.validate([{"role": "user", "content": "x"}])
    with pytest.raises(chat.ChatFormatError, match="template token"):
        chat.validate([{"role": "user", "content": "<|im_end|>"}, {"role": "assistant", "content": "y"}])


def test_row_formats():
    alpaca = {
        "prompt": "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nwhat is kangen water?\n\n### Response:\n",
        "response": "Alkaline water. ",
    }
    assert chat.row_to_messages(alpaca) == [
        {"role": "user", "content": "what is kangen water?"},
        {"role": "assistant", "content": "Alkaline water."},
    ]
    hh = {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:", "response": " fine"}
    assert [m["role"] for m in chat.row_to_messages(hh)] == ["user", "assistant", "user", "assistant"]
    assert chat.row_to_messages(hh)[2]["content"] == "how are you?"
    dolly = {"instruction": "Summarise.", "context": "Some text.", "response": "Short."}
    assert chat.row_to_messages(dolly)[0]["content"] == "Summarise.\n\nSome text."
    sharegpt = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    assert [m["role"] for m in chat.row_to_messages(sharegpt)] == ["user", "assistant"]


def test_load_conversations_quarantines_bad_rows(tmp_path):
    p = tmp_path / "convs.jsonl"
    lines = [
        json.dumps({"messages": CONVS[0]}),
        "{not json",
        json.dumps({"prompt": "hi", "response": ""}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}]}),
        json.dumps({"text": "no chat fields"}),
        json.dumps({"prompt": "hi", "response": "hello"}),
    ]
    p.write_text("\n".join(lines) + "\n")
    got = chat.load_conversations(p)
    assert len(got) == 2 and got.counters["rows"] == 6 and got.counters["quarantined"] == 4
    where = [q["where"] for q in got.quarantined]
    assert where == [f"{p}:2", f"{p}:3", f"{p}:5", f"{p}:6"]
    assert "invalid JSON" in got.quarantined[0]["reason"]
    assert "'response'" in got.quarantined[1]["reason"]
    assert "messages[1].role" in got.quarantined[2]["reason"]
    with pytest.raises(chat.ChatFormatError, match=rf"{p.name}:2"):
        chat.load_conversations(p, strict=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 3}\n')
    with pytest.raises(ValueError, match="no usable conversations.*bad.jsonl:1"):
        chat.load_conversations(bad)
    with pytest.raises(FileNotFoundError):
        chat.load_conversations(tmp_path / "missing.jsonl")


def test_split_is_content_addressed():
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(50)]
    train, val = split_conversations(convs, 0.1, 100)
    assert len(val) == 5 and len(train) == 45
    train2, val2 = split_conversations(list(reversed(convs)), 0.1, 100)
    assert val2 == val and sorted(map(str, train2)) == sorted(map(str, train))


def _examples(seed: int, n: int, vocab: int = 50) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(4, 20, (1,), generator=g))
        ids = torch.randint(3, vocab, (L,), generator=g).tolist()
        start = int(torch.randint(1, L - 1, (1,), generator=g))
        out.append(make_example(ids, [0] * start + [1] * (L - start), max_len=64))
    return out


def test_make_example_shifts_and_truncates():
    ex = make_example([5, 6, 7, 8, 9], [0, 0, 1, 1, 1], max_len=10)
    assert ex.inputs.tolist() == [5, 6, 7, 8] and ex.targets.tolist() == [IGNORE, 7, 8, 9]
    assert make_example([5, 6, 7, 8, 9], [0, 0, 0, 1, 1], max_len=2) is None  # the answer was cut off


def test_pack_places_every_example_once():
    exs = _examples(0, 40)
    rows = pack(exs, 32)
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(40))
    assert all(sum(len(exs[i]) for i in r) <= 32 for r in rows)
    lower = -(-sum(len(e) for e in exs) // 32)
    assert len(rows) <= lower + 2  # best-fit is near the lower bound here
    assert pack(exs, 32) == rows
    with pytest.raises(ValueError, match="> seq_len"):
        pack(exs, 5)


def test_collate_doc_ids_and_positions():
    exs = [Example([1, 2, 3], [IGNORE, 3, 4]), Example([5, 6], [6, 7])]
    b = collate(exs, [[0, 1]], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 5, 6]]
    assert b["doc_ids"].tolist() == [[0, 0, 0, 1, 1]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    b = collate(exs, [[0], [1]])
    assert b["doc_ids"][1].tolist() == [0, 0, 1] and b["targets"][1].tolist() == [6, 7, IGNORE]


def _tiny_model(vocab: int = 64, seed: int = 0):
    from ledgerlm.model.llama import Llama, model_config

    torch.manual_seed(seed)
    return Llama(model_config("tiny", vocab_size=vocab, max_seq_len=64)).eval()


def test_packed_loss_equals_unpacked():
    """Document masking + restarted positions: a packed batch gives the unpacked per-token losses and gradients."""
    model = _tiny_model()
    exs = _examples(1, 12, vocab=64)
    packed = assistant_loss(model, exs, seq_len=48, batch_size=4, device="cpu", packed=True)
    unpacked = assistant_loss(model, exs, seq_len=48, batch_size=3, device="cpu", packed=False)
    assert abs(packed - unpacked) < 1e-5, (packed, unpacked)
    # without document masking the packed loss is different (so the test can tell)
    rows = pack(exs, 48)
    b = collate(exs, rows)
    leaky = dict(b, doc_ids=None, position_ids=None)
    with torch.no_grad():
        s, n = nll_sum(model, leaky, "cpu")
    assert abs(float(s) / n - unpacked) > 1e-3
    # gradients agree too
    grads = []
    for batch in (collate(exs, rows), collate(exs, [[i] for i in range(len(exs))], doc_mask=False)):
        model.zero_grad()
        s, n = nll_sum(model, batch, "cpu")
        (s / n).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


@pytest.mark.skipif(not (DATA / "sft" / "dolly_hhrlhf_train_small.jsonl").exists(), reason="shared data absent")
def test_real_dolly_file_parses(tok):
    got = chat.load_conversations(DATA / "sft" / "dolly_hhrlhf_train_small.jsonl")
    assert len(got) == 1000 and got.counters["quarantined"] == 0
    first = got.messages[0]
    assert first[0] == {"role": "user", "content": "what is kangen water?"}
    assert first[1]["content"].startswith("Kangen water is alkaline")
    assert all("### Instruction" not in m[0]["content"] for m in got.messages)


def test_sft_stage_lowers_heldout_assistant_loss(tmp_path):
    from ledgerlm.model.hf import load_model
    from ledgerlm.pipeline import run_stage

    run, data = make_base_run(tmp_path)
    status, rec = run_stage(sft_recipe(data), "sft", run, echo=lambda *_: None)
    assert status == "ran" and rec["status"] == "ok"
    m = rec["metrics"]
    assert m["final_val_loss"] < 0.7 * m["initial_val_loss"], m
    assert rec["counters"]["conversations_val"] == 24 and rec["counters"]["steps"] == 30
    lines = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(31))
    assert lines[0]["val_loss"] == m["initial_val_loss"] and lines[-1]["val_loss"] == m["final_val_loss"]
    model = load_model(run / "sft" / "model")
    assert model.cfg.max_seq_len == 128
    conf = json.loads((run / "sft" / "model" / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in conf["chat_template"]
    # the stage's effect: per held-out conversation, base (before) vs fine-tuned (after), lower is better
    eff = m["effect"]
    assert m["effects"][0] == eff and eff["metric"] == "heldout_conversation_loss" and eff["n"] == 24
    assert eff["higher_is_better"] is False and eff["improved"] and eff["after"] < eff["before"]
    assert eff["test"] == "paired_bootstrap" and eff["p"] < 0.05
    assert "made_own_metric_worse" not in [w["code"] for w in rec.get("warnings") or []]
    # same recipe + seed => same loss curve (CPU determinism)
    run2, _ = make_base_run(tmp_path / "again")
    _, rec2 = run_stage(sft_recipe(data), "sft", run2, echo=lambda *_: None)
    assert rec2["metrics"]["final_train_loss"] == m["final_train_loss"]


def test_per_example_loss_is_each_conversation_alone():
    """The per-item scores of SFT's effect: packed with document masking they equal each example scored alone, and
    their token-weighted mean is the stage's held-out loss."""
    from ledgerlm.post import sft

    model = _tiny_model()
    exs = _examples(3, 9)
    items = sft.per_example_loss(model, exs, 64, 2, "cpu")
    for ex, x in zip(exs, items):
        assert x == pytest.approx(sft.assistant_loss(model, [ex], 64, 1, "cpu"), abs=1e-5)
    weighted = sum(x * e.n_trained for x, e in zip(items, exs)) / sum(e.n_trained for e in exs)
    assert weighted == pytest.approx(sft.assistant_loss(model, exs, 64, 2, "cpu"), abs=1e-5)


def test_sft_that_makes_its_loss_worse_warns(tmp_path):
    """A stage that raises its own held-out loss is flagged in its record, not reported as a success."""
    from ledgerlm.pipeline import run_stage

    run, data = make_base_run(tmp_path, n_convs=60)
    _, rec = run_stage(sft_recipe(data, max_steps=3, lr=30.0, warmup_ratio=0.0), "sft", run, echo=lambda *_: None)
    eff = rec["metrics"]["effect"]
    assert eff["after"] > eff["before"] and not eff["improved"]
    assert "made_own_metric_worse" in [w["code"] for w in rec["warnings"]]


def test_sft_unpacked_matches_packed_first_eval(tmp_path):
    from ledgerlm.pipeline import run_stage

    run, data = make_base_run(tmp_path, n_convs=60)
    _, a = run_stage(sft_recipe(data, max_steps=2, pack=True), "sft", run, echo=lambda *_: None)
    _, b = run_stage(sft_recipe(data, max_steps=2, pack=False, micro_batch_size=2), "sft", run, echo=lambda *_: None)
    assert abs(a["metrics"]["initial_val_loss"] - b["metrics"]["initial_val_loss"]) < 1e-6
    assert a["counters"]["rows"] < b["counters"]["rows"]


def test_sft_config_errors(tmp_path):
    from ledgerlm.config import ConfigError
    from ledgerlm.pipeline import run_stage

    run, data = make_base_run(tmp_path, n_convs=20)
    with pytest.raises(ConfigError, match="sft.data"):
        run_stage(sft_recipe(data, data=""), "sft", run, echo=lambda *_: None)
    with pytest.raises(ConfigError, match="sft.base"):
        run_stage(sft_recipe(data, base="nosuchstage"), "sft", run, echo=lambda *_: None)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        sft_recipe(data, batch_size=4, micro_batch_size=3)


def test_load_conversations_from_hub_name(monkeypatch):
    """A Hub dataset name goes through datasets.load_dataset (faked here: tests never reach the Hub)."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, subset=None, split=None):
        calls.append((name, subset, split))
        return [
            {"instruction": "Name a fruit.", "context": "", "response": "Apple."},
            {"instruction": "", "response": "x"},
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = chat.load_conversations("databricks/databricks-dolly-15k", split="train")
    assert calls == [("databricks/databricks-dolly-15k", None, "train")]
    assert got.messages == [[{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."}]]
    assert got.quarantined[0]["where"] == "hf:databricks/databricks-dolly-15k[train]#1"
    assert "instruction" in got.quarantined[0]["reason"]


def test_chat_template_matches_transformers(tmp_path):
    """The Jinja template saved with models renders exactly what `render` tokenizes."""
    transformers = pytest.importorskip("transformers")
    from ledgerlm.data.tokenizer import save_hf_tokenizer_files

    save_hf_tokenizer_files(tiny_tokenizer(), tmp_path, chat_template=chat.CHAT_TEMPLATE)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    conv = CONVS[1]
    assert hf.apply_chat_template(conv, tokenize=False) == chat.render_text(conv)
    text = hf.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    assert text == chat.render_text(conv[:-1], add_generation_prompt=True)


@pytest.mark.slow
def test_sft_on_real_dolly_data(tmp_path, shared_data):
    """The SFT loop on the real dolly_hhrlhf file: runs through the pipeline, logs its curve, lowers held-out loss."""
    from ledgerlm.data.tokenizer import train_tokenizer
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config
    from ledgerlm.pipeline import run_stage

    data = shared_data / "sft" / "dolly_hhrlhf_train_small.jsonl"
    convs = chat.load_conversations(data)
    tok = train_tokenizer([chat.render_text(c) for c in convs.messages], vocab_size=2048)
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_model(Llama(model_config("tiny", vocab_size=2048, max_seq_len=256)), run / "pretrain" / "model", tokenizer=tok)
    _, rec = run_stage(sft_recipe(data, max_steps=40, seq_len=256, batch_size=8, lr=2e-3), "sft", run, echo=print)
    m, c = rec["metrics"], rec["counters"]
    print(json.dumps(m, indent=1), c)
    assert c["quarantined"] == 0 and c["dropped_too_long"] > 0  # many dolly prompts exceed 256 tokens here
    assert c["conversations_train"] + c["conversations_val"] + c["dropped_too_long"] == 1000  # all accounted for
    assert m["final_val_loss"] < m["initial_val_loss"] - 0.5
    curve = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(curve) == 41 and all(np.isfinite(x["loss"]) for x in curve[1:])


def test_resolve_model_dir(tmp_path):
    from types import SimpleNamespace

    from ledgerlm.config import ConfigError
    from ledgerlm.post.common import resolve_model_dir
    from ledgerlm.stage import StageContext

    run, _ = make_base_run(tmp_path, n_convs=4)
    ctx = StageContext(run_dir=run, stage="sft", recipe=SimpleNamespace(stages=["sft"]))
    assert resolve_model_dir("pretrain", ctx) == run / "pretrain" / "model"
    assert resolve_model_dir(str(run / "pretrain"), ctx) == run / "pretrain" / "model"  # a stage dir holding model/
    with pytest.raises(ConfigError, match="sft.base.*'dpo'"):
        resolve_model_dir("dpo", ctx, "sft.base")  # not produced and not run by this recipe
    # a stage the recipe runs before this one: its model does not exist yet at plan/preflight time, and that is fine
    ctx.recipe = SimpleNamespace(stages=["dpo", "sft"])
    assert resolve_model_dir("dpo", ctx) == run / "dpo" / "model"


def test_sft_cli(tmp_path, capsys):
    from ledgerlm.cli import main

    run, data = make_base_run(tmp_path, n_convs=30)
    argv = ["sft", "--out", str(run), "--data", str(data), "--max-steps", "2", "--pack", "false", "seq_len=128", "device=cpu"]
    assert main(argv) == 0
    rec = json.loads((run / "ledger" / "sft.json").read_text())
    assert rec["config"]["pack"] is False and rec["config"]["max_steps"] == 2 and rec["config"]["seq_len"] == 128
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert main(["sft", "--out", str(run), "--data", str(data), "lr=fast"]) == 2


def test_resolve_model_dir_from_hub(tmp_path, monkeypatch):
    """`org/name` that is not a local path is fetched with huggingface_hub (faked: tests never reach the Hub)."""
    hub = pytest.importorskip("huggingface_hub")
    from types import SimpleNamespace

    from ledgerlm.post.common import resolve_model_dir
    from ledgerlm.stage import StageContext

    calls = []
    monkeypatch.setattr(hub, "snapshot_download", lambda name, allow_patterns: calls.append(name) or str(tmp_path))
    ctx = StageContext(run_dir=tmp_path / "run", stage="sft", recipe=SimpleNamespace(stages=["sft"]))
    assert resolve_model_dir("HuggingFaceTB/SmolLM2-135M", ctx) == tmp_path
    assert resolve_model_dir("hf:HuggingFaceTB/SmolLM2-135M", ctx) == tmp_path
    assert calls == ["HuggingFaceTB/SmolLM2-135M"] * 2


def test_sft_without_heldout_and_with_separate_val_file(tmp_path):
    from ledgerlm.pipeline import run_stage

    run, data = make_base_run(tmp_path, n_convs=30)
    _, rec = run_stage(sft_recipe(data, max_steps=2, val_fraction=0.0), "sft", run, echo=lambda *_: None)
    assert rec["metrics"]["initial_val_loss"] is None and rec["counters"]["conversations_val"] == 0
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"prompt": "What is 1 plus 1?", "response": "1 plus 1 is 2."}) + "\n{broken\n")
    _, rec = run_stage(sft_recipe(data, max_steps=2, val_data=str(val)), "sft", run, echo=lambda *_: None)
    c = rec["counters"]
    assert c["conversations_train"] == 30 and c["conversations_val"] == 1 and c["quarantined"] == 1
    q = [json.loads(x) for x in (run / "sft" / "quarantine.jsonl").read_text().splitlines()]
    assert q[0]["where"] == f"{val}:2" and rec["metrics"]["final_val_loss"] > 0


def test_render_batch_matches_render(tok):
    convs = CONVS + toy_conversations(5)
    assert chat.render_batch(convs, tok) == [chat.render(c, tok) for c in convs]
    single = []
    for c in convs:  # and the piece-by-piece reference: each content encoded on its own
        ids = []
        for m in c:
            ids += [1, *tok.encode(m["role"] + "\n").ids, *tok.encode(m["content"]).ids, 2, *tok.encode("\n").ids]
        single.append(ids)
    assert [ids for ids, _ in chat.render_batch(convs, tok)] == single


def _sft_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "sft" / "model" / "model.safetensors"))


def _sft_curve(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _kill_at(step: int):
    def hook(done, model):
        if done == step:
            raise KeyboardInterrupt("simulated kill")

    return hook


def test_sft_kill_and_resume_is_bitwise(tmp_path, monkeypatch):
    """Killed at step 6 (newest checkpoint: 4) and re-run through the pipeline: the run resumes and ends with the
    same weights, curve and counters as an uninterrupted run -- across an epoch boundary (5 steps per epoch here)."""
    from ledgerlm.components.checkpoint import latest_checkpoint
    from ledgerlm.pipeline import run_stage
    from ledgerlm.post import sft

    quiet = lambda *_: None  # noqa: E731
    full, data = make_base_run(tmp_path / "full", n_convs=120)
    # the uninterrupted run checkpoints every step (ckpt_every=0 -> total // 10 = 1): saving must not change anything
    _, ref = run_stage(sft_recipe(data, max_steps=12), "sft", full, echo=quiet)
    assert not (full / "sft" / "ckpt").exists()  # checkpoints go once the model is saved
    assert json.loads((full / "sft" / "data.json").read_text())["steps_per_epoch"] == 5

    part, _ = make_base_run(tmp_path / "part", n_convs=120)
    recipe = sft_recipe(data, max_steps=12, ckpt_every=4)
    monkeypatch.setattr(sft, "_STEP_HOOK", _kill_at(6))
    with pytest.raises(KeyboardInterrupt):
        run_stage(recipe, "sft", part, echo=quiet)
    assert latest_checkpoint(part / "sft" / "ckpt").name == "step_00000004"
    assert [r["step"] for r in _sft_curve(part)] == list(range(7))  # steps 5 and 6 are logged, then redone
    monkeypatch.setattr(sft, "_STEP_HOOK", None)
    torch.manual_seed(999)  # a fresh process would have other RNG state; the checkpoint must restore it
    said = []
    status, rec = run_stage(recipe, "sft", part, echo=said.append)
    assert status == "ran" and said[0].startswith("[sft] resuming")
    assert rec["extra"]["resumed_from_step"] == 4 and ref["extra"]["resumed_from_step"] == 0
    assert "resumed from" in (part / "logs" / "sft.log").read_text()

    a, b = _sft_weights(full), _sft_weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _sft_curve(part) == _sft_curve(full) and len(_sft_curve(full)) == 13
    assert rec["counters"] == ref["counters"]
    drop = lambda m: {k: v for k, v in m.items() if k != "train_seconds"}  # noqa: E731
    assert drop(rec["metrics"]) == drop(ref["metrics"])


def test_sft_resume_refuses_a_changed_config(tmp_path, monkeypatch):
    """Through the pipeline a changed lr is a new attempt (the stage dir is wiped, the run starts over); a direct call
    told to resume onto a checkpoint written with another lr refuses, naming the checkpoint and the key."""
    from ledgerlm.pipeline import run_stage
    from ledgerlm.post import sft
    from ledgerlm.stage import StageContext

    quiet = lambda *_: None  # noqa: E731
    run, data = make_base_run(tmp_path, n_convs=60)
    monkeypatch.setattr(sft, "_STEP_HOOK", _kill_at(3))
    with pytest.raises(KeyboardInterrupt):
        run_stage(sft_recipe(data, max_steps=6, ckpt_every=2), "sft", run, echo=quiet)
    monkeypatch.setattr(sft, "_STEP_HOOK", None)

    changed = sft_recipe(data, max_steps=6, ckpt_every=2, lr=1e-3)
    ctx = StageContext(run_dir=run, stage="sft", recipe=changed, seed=0, device="cpu", resuming=True)
    with pytest.raises(RuntimeError, match=r"step_00000002.*different sft config: lr \(0\.003 -> 0\.001\)"):
        sft.run(changed.section("sft"), ctx)
    # eval/checkpoint cadence does not change the trajectory: a checkpoint resumes under other values
    same = sft_recipe(data, max_steps=6, ckpt_every=5, eval_every=3, keep_ckpts=1)
    res = sft.run(same.section("sft"), ctx)
    assert res.extra["resumed_from_step"] == 2

    said = []
    _, rec = run_stage(changed, "sft", run, echo=said.append)
    assert said[0].startswith("[sft] running") and rec["extra"]["resumed_from_step"] == 0
    assert [r["step"] for r in _sft_curve(run)] == list(range(7))
