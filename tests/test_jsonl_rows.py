"""One reader for anyone's JSONL whose bad rows are quarantined (SFT conversations, preference pairs): split on "\\n"
only, every bad line named by file:line with its reason, the good ones kept."""

from __future__ import annotations

import gzip
import json

from ledgerlm.components.chat import load_conversations
from ledgerlm.io import iter_jsonl_rows
from ledgerlm.post.preference import load_preferences

ODD = "a\u2028b\u2029c\x85d\re"  # legal inside JSON text: a text-mode file or str.splitlines() would cut the line


def _conv(text: str) -> bytes:
    msgs = [{"role": "user", "content": "say it"}, {"role": "assistant", "content": text}]
    return json.dumps({"messages": msgs}, ensure_ascii=False).encode() + b"\n"


def _pair(text: str) -> bytes:
    return json.dumps({"prompt": "say it", "chosen": text, "rejected": "no"}, ensure_ascii=False).encode() + b"\n"


def _lines(row) -> bytes:
    # 1 good (with the odd separators), 2 not JSON (a lone \r in it), 3 blank, 4 not UTF-8, 5 good without a final \n
    return row(ODD) + b'{"messages": [\rx\n' + b"\n" + b'{"x": "\xff\xfe"}\n' + row("plain").rstrip(b"\n")


def test_rows_split_on_newline_only_and_name_each_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(_conv)))
    rows = list(iter_jsonl_rows(path))
    assert [where for where, _, _ in rows] == [f"{path}:{n}" for n in (1, 2, 4, 5)]
    assert rows[0][1]["messages"][1]["content"] == ODD and rows[0][2] is None
    assert rows[1] == (f"{path}:2", '{"messages": [\rx', rows[1][2]) and rows[1][2].startswith("invalid JSON")
    assert rows[2][2].startswith("invalid UTF-8") and rows[3][2] is None


def test_conversations_and_preferences_read_alike(tmp_path):
    (tmp_path / "sft.jsonl").write_bytes(_lines(_conv))
    (tmp_path / "pref.jsonl").write_bytes(_lines(_pair))
    convs = load_conversations(str(tmp_path / "sft.jsonl"))
    prefs = load_preferences(str(tmp_path / "pref.jsonl"))
    assert [m[1]["content"] for m in convs.messages] == [ODD, "plain"]
    assert [p.chosen for p in prefs.pairs] == [ODD, "plain"]
    for got in (convs, prefs):
        assert got.counters["rows"] == 4 and got.counters["kept"] == 2 and got.counters["quarantined"] == 2
        assert [q["where"].rsplit(":", 1)[1] for q in got.quarantined] == ["2", "4"]
