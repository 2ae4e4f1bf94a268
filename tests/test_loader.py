"""TokenLoader: exact resume, mixture proportions, disjoint ranks, multi-epoch reshuffling, document ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ledgerlm.data import documents, token_index
from ledgerlm.data import shards as sh
from ledgerlm.data.loader import TokenLoader
from ledgerlm.data.mixture import Phase, PhaseSchedule, mixture_plan, parse_tokens, phases_from_config
from ledgerlm.data.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory) -> Path:
    """Three real sources: shakespeare (~450k tokens), math (400 gsm8k answers, ~50k), web (20 web pages, ~60k)."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    out = tmp_path_factory.mktemp("tok")
    plays = (DATA / "text" / "tinyshakespeare.txt").read_text().split("\n\n")
    math = [json.loads(line)["answer"] for i, line in enumerate(open(DATA / "gsm8k" / "train.jsonl")) if i < 400]
    web = [json.loads(line)["text"] for f in sorted((DATA / "text").glob("cc_en_head-*.jsonl")) for line in open(f)]
    tok = train_tokenizer(plays[:2000] + math[:200] + web, vocab_size=1024)
    docs = [("shakespeare", p) for p in plays] + [("math", m) for m in math] + [("web", w) for w in web]
    items = ((s, documents.split_of(f"{s}\0{i}", 0, 0.05), t) for i, (s, t) in enumerate(docs))
    index = sh.write_shards(items, tok, out, eot=0, shard_tokens=50_000, workers=2, batch_bytes=200_000)
    sh.write_index(out, index)
    return out


def _batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(all(torch.equal(u, v) for u, v in zip(p, q)) for p, q in zip(a, b))


PHASES = [
    Phase("p1", 128 * 8 * 40, {"shakespeare": 0.5, "math": 0.3, "web": 0.2}),  # 40 steps of 8 x 128
    Phase("p2", 128 * 8 * 40, {"math": 0.2, "web": 0.8}),
]


@pytest.mark.parametrize("align", [False, True])
def test_resume_is_exact(tokdir, align):
    kw = dict(phases=PHASES, seq_len=128, batch_size=8, seed=3, align_to_docs=align, return_doc_ids=True)
    uninterrupted = TokenLoader(tokdir, **kw)
    full = _batches(uninterrupted, 150)  # crosses the phase boundary (step 40), then keeps drawing from p2
    first = TokenLoader(tokdir, **kw)
    assert _same(_batches(first, 33), full[:33])
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    assert all(isinstance(v, int) for v in state.values())
    resumed = TokenLoader(tokdir, **kw)
    resumed.load_state_dict(state)
    assert _same(_batches(resumed, 117), full[33:])
    assert resumed.drawn() == uninterrupted.drawn() and resumed.state_dict() == uninterrupted.state_dict()
    assert max(resumed.drawn()["web"]) >= 1  # web (~60k tokens) was repeated: more than one epoch
    other_seed = TokenLoader(tokdir, **{**kw, "seed": 4})
    assert not _same(_batches(other_seed, 5), full[:5])
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(tokdir, **{**kw, "seq_len": 32}).load_state_dict(state)
    with pytest.raises(ValueError, match="phases/mixture"):
        TokenLoader(tokdir, **{**kw, "phases": PHASES[:1]}).load_state_dict(state)


def test_mixture_proportions_within_one_percent(tokdir):
    T, B = 32, 16
    phases = [
        Phase("a", T * B * 150, {"shakespeare": 5, "math": 3, "web": 2}),
        Phase("b", T * B * 150, {"shakespeare": 0.1, "math": 0.6, "web": 0.3}),
    ]
    loader = TokenLoader(tokdir, phases=phases, seq_len=T, batch_size=B, seed=7)
    assert loader.total_steps == 300 and loader.phase == "a" and loader.phase_at(150).name == "b"
    before = {s: 0 for s in loader.sources}
    for p in phases:
        for _ in range(150):
            loader.next_batch()
        now = {s: sum(e.values()) for s, e in loader.drawn().items()}
        got = {s: now[s] - before[s] for s in now}
        total = sum(got.values())
        assert total == p.tokens
        for s, w in p.mixture.items():
            assert abs(got[s] / total - w) < 0.01, (p.name, s, got[s] / total, w)
        before = now
    # The ledger view: tokens per source and epoch; math (~50k train tokens) is into its second epoch.
    drawn = loader.drawn()
    assert sum(sum(e.values()) for e in drawn.values()) == 300 * T * B
    assert set(drawn["math"]) == {0, 1}


def test_ranks_never_overlap(tokdir):
    T, B, W = 48, 4, 3
    ranks = [TokenLoader(tokdir, seq_len=T, batch_size=B, seed=1, rank=r, world_size=W) for r in range(W)]
    single = TokenLoader(tokdir, seq_len=T, batch_size=B * W, seed=1)
    seen = set()
    for _ in range(20):
        xs = [r.next_batch()[0] for r in ranks]
        x_all = single.next_batch()[0]
        assert torch.equal(torch.cat(xs), x_all)  # the ranks split one global batch between them
        for row in torch.cat(xs):
            key = row.numpy().tobytes()
            assert key not in seen
            seen.add(key)
    assert ranks[0].state_dict() == ranks[2].state_dict()  # every rank tracks the same global state
    val = [list(r.val_batches(3)) for r in ranks]
    rows = [row.numpy().tobytes() for v in val for b in v for row in b[0]]
    assert len(rows) == 3 * 3 * B and len(set(rows)) == len(rows)
    with pytest.raises(ValueError, match="rank"):
        TokenLoader(tokdir, seq_len=T, batch_size=B, rank=3, world_size=3)


def test_epochs_cover_every_document_and_reshuffle(tokdir):
    T = 50
    idx = token_index.TokenIndex(tokdir)
    table = idx.table("web", "train")
    n = table.n_tokens
    loader = TokenLoader(tokdir, phases=[Phase("w", 3 * n, {"web": 1.0})], seq_len=T, batch_size=4, seed=0)
    rows = []
    while sum(len(r) for r in rows) < 2 * n + T:
        rows += [x for x in loader.next_batch()[0].numpy()]
    stream = np.concatenate(rows)

    def docs(tokens):
        cut = np.flatnonzero(tokens == idx.eot_id)
        return [tokens[a + 1 : b + 1].tobytes() for a, b in zip(np.r_[-1, cut[:-1]], cut)]

    want = sorted(table.doc(d).astype(np.int64).tobytes() for d in range(table.n_docs))
    e0, e1 = docs(stream[:n]), docs(stream[n : 2 * n])
    assert sorted(e0) == want and sorted(e1) == want  # each epoch is every document exactly once
    assert e0 != e1  # in a different order
    assert loader.drawn()["web"][0] == n and loader.drawn()["web"][1] == n


def test_doc_ids_and_alignment(tokdir):
    loader = TokenLoader(tokdir, seq_len=128, batch_size=8, seed=2, return_doc_ids=True, align_to_docs=True)
    eot = loader.index.eot_id
    for _ in range(10):
        x, y, d = loader.next_batch()
        assert torch.equal(x[:, 1:], y[:, :-1])
        # the document id steps up exactly at each separator (which starts the next document)
        assert torch.equal(d[:, 1:] - d[:, :-1], (x[:, 1:] == eot).long())
        assert (d[:, 0] == (x[:, 0] == eot).long()).all()
    dropped = sum(loader.dropped().values())
    assert 0 < dropped < sum(sum(e.values()) for e in loader.drawn().values())
    val = list(loader.val_batches())
    assert len(val) >= 2 and _same(val, list(loader.val_batches()))  # finite and deterministic


def test_bad_configs(tokdir):
    with pytest.raises(ValueError, match="unknown source"):
        TokenLoader(tokdir, phases=[Phase("p", 1000, {"books": 1.0})], seq_len=16, batch_size=2)
    with pytest.raises(ValueError, match="weight"):
        Phase("p", 10, {"web": -1})
    with pytest.raises(ValueError, match=r"phases\[0\].*tokens"):
        phases_from_config([{"name": "p", "mixture": {"web": 1}}])
    assert parse_tokens("10B") == 10_000_000_000 and parse_tokens("2.5k") == 2500 and parse_tokens(1e3) == 1000
    ph = phases_from_config([{"name": "s", "tokens": "3B", "mixture": {"web": 3, "edu": 1}}])
    assert ph[0].tokens == 3 * 10**9 and ph[0].mixture == {"edu": 0.25, "web": 0.75}
    plan = mixture_plan(ph, {"web": 10**9, "edu": 10**9})
    assert plan[0] == "phase s: 3,000,000,000 tokens" and "2.25 epochs" in plan[2] and "0.75 epochs" in plan[1]
    sched = PhaseSchedule(ph, ["edu", "web"], tokens_per_step=10**6, seed=0)
    share = np.bincount(sched.sources_for(0, 0, 10_000), minlength=2) / 10_000
    assert abs(share[1] - 0.75) < 0.002
