"""Chat format: a ChatML-style template rendered by our code, with a loss mask on assistant tokens only.

    <|im_start|>system\\n{content}<|im_end|>\\n
    <|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n{content}<|im_end|>\\n

Each piece is tokenized on its own and the ids concatenated, so the boundaries of the loss mask are exact and a prompt
rendered for generation is always a token prefix of the full conversation. The mask covers the assistant's content and
its closing `<|im_end|>` (the model must learn to stop); role headers and the trailing newline are not trained.

`load_conversations` turns JSONL rows (or a Hugging Face dataset) into message lists; bad rows are counted and kept
aside with a reason naming file, line and field instead of being dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ledgerlm import hub
from ledgerlm.demo.posttrain import demo_sft_conversations
from ledgerlm.io import iter_jsonl_rows

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
ROLES = ("system", "user", "assistant")
# ShareGPT-style speaker names -> our roles.
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


class ChatFormatError(ValueError):
    """A conversation that cannot be rendered: names the field at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field '{field}': {message}")


def encode_text(tokenizer, text: str) -> list[int]:
    # Accept a `tokenizers.Tokenizer` or a transformers tokenizer; never add BOS/EOS here, the template owns structure.
    if not text:
        return []
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(enc.ids) if hasattr(enc, "ids") else list(enc)


def special_ids(tokenizer) -> tuple[int, int]:
    """(im_start, im_end) ids; a clear error if the tokenizer was trained without them."""
    ids = []
    for tok in (IM_START, IM_END):
        i = tokenizer.token_to_id(tok) if hasattr(tokenizer, "token_to_id") else tokenizer.convert_tokens_to_ids(tok)
        if i is None or (isinstance(i, int) and i < 0):
            raise ChatFormatError("tokenizer", f"special token {tok} missing from the vocabulary")
        ids.append(int(i))
    return ids[0], ids[1]


def validate(messages, *, need_assistant: bool = True) -> list[dict]:
    """Check and normalise a message list: [{'role': ..., 'content': str}, ...]."""
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("messages", "must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatFormatError(f"messages[{i}]", f"must be an object, got {type(m).__name__}")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str):
            raise ChatFormatError(f"messages[{i}].role", "missing or not a string")
        role = _ROLE_ALIASES.get(role.lower(), role.lower())
        if role not in ROLES:
            raise ChatFormatError(f"messages[{i}].role", f"unknown role {role!r} (expected one of {ROLES})")
        if not isinstance(content, str):
            raise ChatFormatError(f"messages[{i}].content", "missing or not a string")
        if IM_START in content or IM_END in content:
            # Template tokens inside content would let data forge turn boundaries.
            raise ChatFormatError(f"messages[{i}].content", "contains a chat template token")
        if role == "system" and i != 0:
            raise ChatFormatError(f"messages[{i}].role", "a system message may only come first")
        out.append({"role": role, "content": content})
    if need_assistant and not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise ChatFormatError("messages", "no non-empty assistant message")
    return out


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    if hasattr(tokenizer, "encode_batch"):  # `tokenizers`: one call, encoded in parallel in Rust
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [encode_text(tokenizer, t) for t in texts]


def render_batch(conversations, tokenizer) -> list[tuple[list[int], list[int]]]:
    """`render` for many conversations at once: every message content is encoded in one batched call, and the
    role headers once -- the same ids as `render`, fast enough for a few hundred thousand conversations."""
    convs = [validate(c) for c in conversations]
    start, end = special_ids(tokenizer)
    newline = encode_text(tokenizer, "\n")
    heads = {r: [start, *encode_text(tokenizer, r + "\n")] for r in ROLES}
    bodies = iter(_encode_many(tokenizer, [m["content"] for c in convs for m in c]))
    out = []
    for c in convs:
        ids: list[int] = []
        mask: list[int] = []
        for m in c:
            head, body = heads[m["role"]], [*next(bodies), end]
            train = 1 if m["role"] == "assistant" else 0
            ids += head + body + newline
            mask += [0] * len(head) + [train] * len(body) + [0] * len(newline)
        out.append((ids, mask))
    return out


def render(messages, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 mask that is 1 on tokens the model is trained to produce."""
    return render_batch([messages], tokenizer)[0]


def render_prompt(messages, tokenizer) -> list[int]:
    """Ids for generation: the conversation so far followed by `<|im_start|>assistant\\n`."""
    messages = validate(messages, need_assistant=False)
    if messages[-1]["role"] == "assistant":
        raise ChatFormatError("messages", "a prompt must not end with an assistant message")
    start, end = special_ids(tokenizer)
    newline = encode_text(tokenizer, "\n")
    ids: list[int] = []
    for m in messages:
        ids += [start, *encode_text(tokenizer, m["role"] + "\n"), *encode_text(tokenizer, m["content"]), end, *newline]
    return ids + [start, *encode_text(tokenizer, "assistant\n")]


def render_text(messages, *, add_generation_prompt: bool = False) -> str:
    """The same template as a string (for humans, logs and HF `chat_template` parity checks)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


# A Jinja template equivalent to `render_text`, stored next to exported models so transformers users get the same format.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------------------------------------------------
# Row formats -> messages

_ALPACA = re.compile(
    r"^(?:(?P<preamble>.*?)\n\n)?### Instruction:\n(?P<instruction>.*?)(?:\n\n### Input:\n(?P<input>.*?))?\n\n### Response:\n?$",
    re.S,
)
_TRANSCRIPT = re.compile(r"\n\n(Human|Assistant): ")


def parse_prompt(prompt: str) -> list[dict]:
    """A `prompt` string -> messages before the response.

    Understands the Alpaca template used by dolly_hhrlhf ("Below is an instruction ... ### Instruction: ... ### Response:")
    -- the instruction becomes the user turn, so the model learns our template and not Alpaca's headers -- and
    Anthropic HH transcripts ("\\n\\nHuman: ... \\n\\nAssistant:"); anything else is one user message.
    """
    m = _ALPACA.match(prompt)
    if m:
        user = m.group("instruction").strip()
        if m.group("input") and m.group("input").strip():
            user += "\n\n" + m.group("input").strip()
        return [{"role": "user", "content": user}]
    if "Human: " in prompt and "Assistant:" in prompt:
        text = "\n\n" + prompt.lstrip("\n")
        parts = _TRANSCRIPT.split(text.rstrip().removesuffix("Assistant:").rstrip() + "\n\n")
        msgs = []
        for speaker, content in zip(parts[1::2], parts[2::2]):
            msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
        if msgs and msgs[-1]["role"] == "user":
            return msgs
    return [{"role": "user", "content": prompt.strip()}]


def row_to_messages(row) -> list[dict]:
    """One record -> validated messages. Formats: `messages` (or ShareGPT `conversations`), `prompt`/`response`
    (also `completion`, `chosen`), `instruction`[/`context`|`input`]/`response`|`output` (Dolly, Alpaca)."""
    if not isinstance(row, dict):
        raise ChatFormatError("<row>", f"must be a JSON object, got {type(row).__name__}")
    for key in ("messages", "conversations"):
        if key in row:
            try:
                return validate(row[key])
            except ChatFormatError as e:
                raise ChatFormatError(e.field.replace("messages", key, 1), str(e).split(": ", 1)[1]) from None
    if "prompt" in row:
        response = next((row[k] for k in ("response", "completion", "chosen") if k in row), None)
        if not isinstance(row["prompt"], str):
            raise ChatFormatError("prompt", "not a string")
        if not isinstance(response, str) or not response.strip():
            raise ChatFormatError("response", "missing, empty or not a string")
        return validate([*parse_prompt(row["prompt"]), {"role": "assistant", "content": response.strip()}])
    if "instruction" in row:
        response = row.get("response", row.get("output"))
        if not isinstance(row["instruction"], str) or not row["instruction"].strip():
            raise ChatFormatError("instruction", "missing, empty or not a string")
        if not isinstance(response, str) or not response.strip():
            raise ChatFormatError("response", "missing, empty or not a string")
        user = row["instruction"].strip()
        extra = row.get("context", row.get("input")) or ""
        if isinstance(extra, str) and extra.strip():
            user += "\n\n" + extra.strip()
        return validate([{"role": "user", "content": user}, {"role": "assistant", "content": response.strip()}])
    raise ChatFormatError("<row>", f"no 'messages', 'prompt' or 'instruction' field (keys: {sorted(row)[:8]})")


# ----------------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class Conversations:
    """What `load_conversations` returns: the good conversations plus an account of the rest."""

    source: str
    messages: list[list[dict]] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    quarantined: list[dict] = field(default_factory=list)  # {"where": "file:line", "reason": ..., "row": ...}

    def __len__(self) -> int:
        return len(self.messages)


def hf_rows(name: str, split: str, subset: str | None) -> Iterator[tuple[str, object, None]]:
    """(where, row, None) for each row of a Hugging Face dataset (or its copy in the Hub mirror, ledgerlm/hub.py)."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ImportError("loading a Hugging Face dataset by name needs `pip install ledgerlm[hf]`") from e
    ds = datasets.load_dataset(hub.dataset(name), subset, split=split, **hub.cache_kwargs())
    for i, row in enumerate(ds):
        yield f"hf:{name}[{split}]#{i}", dict(row), None


def is_local(source: str) -> bool:
    return (
        source.startswith(("/", ".", "~"))
        or Path(source).expanduser().exists()
        or source.endswith((".jsonl", ".json", ".gz", ".zst"))
    )


def parsed_rows(
    rows: Iterator[tuple[str, object, str | None]],
    parse,
    error: type[ValueError],
    counters: Counter,
    quarantined: list[dict],
    *,
    what: str,
    source: str,
    limit: int = 0,
    max_quarantined: int = 10_000,
    strict: bool = False,
    keep_row: bool = True,
) -> Iterator[tuple[str, object]]:
    """(where, parse(row)) for each usable row of `rows` (from iter_jsonl_rows or hf_rows), up to `limit` of them,
    counting rows and kept ones. A row that is not JSON or that `parse` rejects with `error` (which names its field)
    is counted under `quarantined` and `quarantined:<field>` (`messages[2].role` counts as `messages`) and kept aside
    with where and why (and the row, with keep_row) up to `max_quarantined`; `strict=True` raises instead, naming
    where. Raises if no row was usable, quoting the first problems."""
    for where, row, err in rows:
        counters["rows"] += 1
        try:
            if err:
                raise error("<line>", err)
            value = parse(row)
        except error as e:
            if strict:
                raise error(e.field, f"{where}: {str(e).split(': ', 1)[1]}") from None
            counters[f"quarantined:{e.field.split('[')[0].split('.')[0]}"] += 1
            counters["quarantined"] += 1
            if len(quarantined) < max_quarantined:
                entry = {"where": where, "reason": str(e)}
                if keep_row:
                    entry["row"] = row
                quarantined.append(entry)
            continue
        yield where, value
        counters["kept"] += 1
        if limit and counters["kept"] >= limit:
            return
    if not counters["kept"]:
        first = "; ".join(f"{q['where']}: {q['reason']}" for q in quarantined[:3]) or "no rows"
        raise ValueError(f"no usable {what} in {source} ({counters['rows']} rows; {first})")


def demo_options(source: str) -> dict:
    """Options of the built-in demo data: "demo" -> {}; "demo:arith=0.6" -> {"arith_share": 0.6} (the share of
    worked arithmetic answers among the conversations)."""
    _, _, opts = source.partition(":")
    out = {}
    for part in filter(None, opts.split(",")):
        key, eq, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if key != "arith" or not eq or not 0 <= share <= 1:
            raise ValueError(f"{source!r}: the demo data's one option is arith=F (0 <= F <= 1), got {part!r}")
        out["arith_share"] = share
    return out


def load_conversations(
    source: str | Path,
    *,
    split: str = "train",
    subset: str | None = None,
    limit: int = 0,
    strict: bool = False,
    max_quarantined: int = 10_000,
) -> Conversations:
    """Conversations from a JSONL file (plain, .gz, .zst), a Hugging Face dataset name (`hf:org/name` or `org/name`),
    or "demo" (the built-in demo's conversations).

    Malformed rows are counted by reason and kept (up to `max_quarantined`) with their location; `strict=True` raises
    on the first one instead. Raises if nothing usable is left, quoting the first problems.
    """
    source = str(source)
    hf_name = source[3:] if source.startswith("hf:") else None
    if hf_name is None and not is_local(source) and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        hf_name = source
    if source.split(":")[0] == "demo":  # the built-in demo's conversations, generated by our code (ledgerlm/demo/)
        convs = demo_sft_conversations(0, limit or 2000, **demo_options(source))
        rows = ((f"builtin:demo[{i}]", r, None) for i, r in enumerate(convs))
    elif hf_name is None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"conversation data not found: {path}")
        rows = iter_jsonl_rows(path)
    else:
        rows = hf_rows(hf_name, split, subset)
    out = Conversations(source=source)
    good = parsed_rows(
        rows,
        row_to_messages,
        ChatFormatError,
        out.counters,
        out.quarantined,
        what="conversations",
        source=source,
        limit=limit,
        max_quarantined=max_quarantined,
        strict=strict,
    )
    out.messages = [msgs for _where, msgs in good]
    return out
