"""Flags are never abbreviated, and a missing file named by a flag is one line with exit 2 (issue #26)."""

from __future__ import annotations

import pytest

from ledgerlm.cli import TOOLS, build_parser, main
from ledgerlm.stage import STAGES


def test_export_to_hf_is_not_read_as_tokenizer(tmp_path, capsys):
    """`--to` was a prefix of `--tokenizer`: argparse read `--to hf` as `--tokenizer hf` and export crashed."""
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "src"), str(tmp_path / "out"), "--to", "hf"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --to hf" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_export_missing_tokenizer_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "src"), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t.json" in err and "no such file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [*STAGES, *TOOLS, "run", "plan", "report", "audit"])
def test_no_parser_accepts_an_abbreviated_flag(command):
    ap = build_parser(command)
    sub = next(a for a in ap._actions if a.dest == "command").choices[command]
    assert ap.allow_abbrev is False and sub.allow_abbrev is False


@pytest.mark.parametrize(
    "argv", [["run", "demo", "--ou", "x"], ["diff", "a", "b", "--ou", "x"], ["curate", "--forc"], ["eval", "--lim", "3"]]
)
def test_a_prefix_of_a_flag_is_left_unrecognized(argv):
    _, extra = build_parser(argv[0]).parse_known_args(argv)
    assert argv[-1] in extra or argv[-2] in extra
