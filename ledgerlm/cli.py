"""`ledgerlm` command line: run a recipe, or one stage of it, and audit, report, compare what came out."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

from ledgerlm import __version__, ledger, plan
from ledgerlm.config import (
    TOP_LEVEL,
    ConfigError,
    apply_overrides,
    builtin_recipes,
    field_docs,
    load_raw_recipe,
    parse_override,
    to_dict,
)
from ledgerlm.io import atomic_write_json
from ledgerlm.pipeline import disk_full, preflight, run_pipeline, run_stage
from ledgerlm.recipe import build_recipe, load_recipe
from ledgerlm.stage import CHECKS, STAGES, get, get_check
from ledgerlm.tasks import TaskDataError

# Commands that are not pipeline stages: command -> (module, help). Each module has add_args(p) and main(args) -> int.
TOOLS = {
    "contamination": (
        "ledgerlm.data.contamination_cmd",
        "contamination table of any dataset against benchmarks (read-only)",
    ),
    "inspect": ("ledgerlm.data.inspect_docs", "print samples of what a curation reason removed"),
    "compare": ("ledgerlm.eval.compare", "paired tests between two evaluation results"),
    "diff": ("ledgerlm.report.diff", "why a number moved: two runs compared stage by stage from their ledgers"),
    "sweep": ("ledgerlm.sweep", "run a stage over a grid (e.g. LR x batch size) with contour plots"),
    "export": ("ledgerlm.model.export", "export a checkpoint as a Hugging Face Llama directory, or import one"),
}


def _add_common(p: argparse.ArgumentParser, recipe_positional: bool) -> None:
    if recipe_positional:
        names = ", ".join(builtin_recipes())
        p.add_argument("recipe", nargs="?", default="demo", help=f"a YAML path or a built-in recipe: {names}")
    else:
        p.add_argument("--recipe", default=None, help="recipe name or path (default: the run's recipe, else defaults)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<recipe name>)")
    p.add_argument("--force", action="store_true", help="re-run even if the ledger says the stage is up to date")
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides")


CONFIG_FLAG = "config_flag."  # dest prefix of the flags made from Config fields (they become key=value overrides)


def _add_config_flags(p: argparse.ArgumentParser, config: type) -> None:
    """`--field-name VALUE` for every Config field the stage's own flags do not already set, read as YAML like a
    `field=value` override and checked with the recipe; help from the field's comment. Hand-written flags without
    help get the field's comment too."""
    docs = field_docs(config)
    actions = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        doc = docs.get(f.name, f.name.replace("_", " "))
        if dataclasses.is_dataclass(default):  # a nested section: its repr would fill the screen
            key = dataclasses.fields(default)[0].name
            text = f"{doc} (a section: set one key as {f.name}.KEY=VALUE, e.g. {f.name}.{key}={getattr(default, key)})"
        else:
            text = f"{doc} (default: {default!r})"
        flag = "--" + f.name.replace("_", "-")
        if f.name in actions:  # the stage's own flag for this field
            actions[f.name].help = actions[f.name].help or text
        elif flag not in p._option_string_actions:
            if str(f.type).startswith("list"):  # `--alphas 0,0.5,1` as well as the YAML `--alphas '[0, 0.5, 1]'`
                p.add_argument(flag, dest=CONFIG_FLAG + f.name, metavar="A,B,...", type=_yaml_list, help=text)
            else:
                p.add_argument(flag, dest=CONFIG_FLAG + f.name, metavar="VALUE", help=text)


def _yaml_list(value: str) -> str:
    """A list flag's value as a YAML list: comma-separated items become a flow sequence; a YAML list stays as it is."""
    return value if value.lstrip().startswith("[") else f"[{value}]"


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags, here and in every subcommand (`export --to hf` is not `--tokenizer hf`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the chosen command's module is imported (keeps `--help` and `audit` fast)."""
    ap = _Parser(prog="ledgerlm", description=__doc__)
    ap.add_argument("--version", action="version", version=f"ledgerlm {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run every stage a recipe lists, skipping those already up to date")
    _add_common(p, recipe_positional=True)
    p = sub.add_parser("plan", help="validate a recipe and print what each stage needs and costs, without running")
    _add_common(p, recipe_positional=True)
    plan.add_args(p)

    # A stage's help and flags live in its spec: the specs are imported only when the command list is shown (or to
    # run one). Its own flags first (a positional of its own goes before the overrides), then one per Config field.
    listing = command not in (*STAGES, *CHECKS, *TOOLS, "run", "plan")
    for stage in STAGES:
        spec = get(stage) if listing or stage == command else None
        helptext = spec.help if spec else None
        p = sub.add_parser(stage, help=helptext, description=helptext)
        if spec and stage == command and spec.add_cli_args:
            spec.add_cli_args(p)
        _add_common(p, recipe_positional=False)
        if spec and stage == command:
            _add_config_flags(p, spec.config)
    for name in CHECKS:
        helptext = get_check(name).help
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("run_dir", type=Path, help="the run directory (e.g. runs/demo)")

    for name, (module, helptext) in TOOLS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name != command:
            continue
        importlib.import_module(module).add_args(p)
    return ap


def _stage_recipe(args, stage: str):
    """The recipe a single-stage command runs under: --recipe, else the run directory's, else the defaults."""
    out = args.out
    saved = out / "recipe.json" if out else None
    if args.recipe:
        raw, source = load_raw_recipe(args.recipe)
    elif saved and saved.is_file():
        raw, source = json.loads(saved.read_text()), saved
    else:
        raw, source = {"name": stage}, None
    spec = get(stage)
    if spec.cli_overrides:
        flags = spec.cli_overrides(args)
    else:  # a stage flag named like a Config field sets that field
        fields = {f.name for f in dataclasses.fields(spec.config)}
        flags = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    raw = apply_overrides(raw, {f"{stage}.{k}": v for k, v in flags.items() if v is not None})
    over = []
    for o in args.overrides:
        parts, value = parse_override(o)
        if parts[0] != stage and parts[0] not in STAGES and parts[0] not in TOP_LEVEL:
            parts = [stage, *parts]  # keys may be given relative to the stage's own section
        over.append((parts, value))
    raw = apply_overrides(raw, dict((".".join(p), v) for p, v in over))
    raw["stages"] = [stage]
    return build_recipe(raw, source, need_all=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take positionals after options (`run demo --out D a.b=1`): collect the overrides ourselves
    bad = [a for a in extra if "=" not in a or a.startswith("-")]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    for dest, value in list(vars(args).items()):  # flags made from Config fields are overrides of that field
        if dest.startswith(CONFIG_FLAG) and value is not None:
            args.overrides = [*args.overrides, f"{args.command}.{dest.removeprefix(CONFIG_FLAG)}={value}"]
    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ledgerlm plan ... | head` closed the pipe: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if not disk_full(e):
            raise
        # One line naming the path; what was written is atomic or resumable, so the same command re-run after
        # freeing space carries on (tokenize from its last completed shard, curate from its completed tasks).
        where = e.filename or "the run directory"
        print(f"error: disk full writing {where} ({os.strerror(e.errno)}); free space and re-run", file=sys.stderr)
        return 1
    except (UserInputError, TaskDataError) as e:  # a path or benchmark the user named is not there: one line
        print(f"error: {e}", file=sys.stderr)
        return 2


class UserInputError(Exception):
    pass


def _existing_run(run_dir: Path) -> Path:
    """A run directory with at least one stage record, or a one-line error that says what to give instead."""
    ledger.existing_run(run_dir)
    return run_dir


def _dispatch(args) -> int:
    cmd = args.command
    if cmd in ("run", "plan"):
        recipe = load_recipe(args.recipe, args.overrides)
        out = args.out or Path("runs") / recipe.name
        if cmd == "plan":
            return plan.main(recipe, out, args)
        return run_pipeline(recipe, out, force=args.force)
    if cmd in STAGES:
        # A stage may handle the command itself outside any run (e.g. `ledgerlm eval ... --out FILE.json`).
        direct = get(cmd).direct_main
        if direct is not None and (rc := direct(args)) is not None:
            return rc
        recipe = _stage_recipe(args, cmd)
        out = args.out or Path("runs") / recipe.name
        preflight(recipe, out)  # before anything is created: a failed command leaves no directory behind
        out.mkdir(parents=True, exist_ok=True)
        # Remember the recipe in the run directory, so the next stage run alone there uses the same settings.
        saved_path = out / "recipe.json"
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else recipe.to_dict()
        saved[cmd] = to_dict(recipe.section(cmd))
        atomic_write_json(saved_path, saved)
        run_stage(recipe, cmd, out, force=args.force)
        return 0
    if cmd in CHECKS:
        passed, _ = get_check(cmd).check(_existing_run(args.run_dir), print)
        return 0 if passed else 1
    module, _ = TOOLS[cmd]
    try:
        return int(importlib.import_module(module).main(args) or 0)
    except FileNotFoundError as e:  # tools only read what the user named
        raise UserInputError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
