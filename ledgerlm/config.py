"""Recipes: YAML files validated into typed dataclasses before any compute is spent.

A recipe is a mapping with a few top-level keys (name, seed, device, stages, base) and one section per stage, each
section validated against that stage module's `Config` dataclass. Command-line overrides `key.sub=value` are applied
to the raw mapping first, so they are validated exactly like the file. Every error names the key and the file.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal, Union

import yaml

RECIPE_DIRS = [Path(__file__).resolve().parent.parent / "recipes", Path.cwd() / "recipes"]
TOP_LEVEL = {"name", "description", "seed", "device", "stages", "base", "samples", "logging", "hub_mirror"}


class ConfigError(Exception):
    """A recipe or flag problem; the CLI prints it and exits with status 2."""

    def __init__(self, key: str, message: str, file: str | Path | None = None):
        self.key, self.message, self.file = key, message, file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


# ----------------------------------------------------------------------------- typed validation

_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def _parse_count(s: str) -> int | None:
    """'10B' -> 10_000_000_000, '500M', '3e9' -> int; None if not a count."""
    m = _COUNT.match(s)
    if m:
        value = float(m.group(1)) * _SCALE[m.group(2).lower()]
        return int(value) if value.is_integer() else None
    try:
        value = float(s)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, file: str | Path | None = None) -> Any:
    """Check `value` against the annotation `tp` and convert the few lossless cases (YAML strings to numbers/paths)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arm, key, file)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}", file)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {list(args)}, got {value!r}", file)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key, file=file)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}", file)
        item = args[0] if args else Any
        out = [coerce(v, item, f"{key}[{i}]", file) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", file)
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{key}", file): coerce(v, vt, f"{key}.{k}", file) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true/false, got {value!r}", file)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and (n := _parse_count(value)) is not None:
            return n
        raise ConfigError(key, f"expected an integer, got {value!r}", file)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '3e-4' as a string
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}", file)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}", file)
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(key, f"expected a path, got {value!r}", file)
    raise ConfigError(key, f"unsupported type {tp!r} in config schema", file)


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b),
           "lt": ("<", lambda v, b: v < b)}  # fmt: skip


def ranged(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value from_dict checks against `ge`/`gt`/`le`/`lt`, e.g. `micro_batch_size: int =
    ranged(8, ge=1)`: a recipe asking for micro_batch_size=-4 stops at validation, naming key and file."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"ranged: unknown bounds {sorted(unknown)}")
    factory = isinstance(default, list | dict)
    return dataclasses.field(
        **({"default_factory": lambda: type(default)(default)} if factory else {"default": default}),
        metadata={"bounds": bounds},
    )


def check_bounds(value: Any, bounds: dict, key: str, file: str | Path | None = None) -> None:
    """Raise ConfigError unless the number `value` (or every number in a list of them) is within `bounds`."""
    for v in value if isinstance(value, list | tuple) else [value]:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        for name, bound in bounds.items():
            sign, ok = _BOUNDS[name]
            if not ok(v, bound):
                got = value if v is value else f"{v} in {value}"
                raise ConfigError(key, f"must be {sign} {bound}, got {got}", file)


def from_dict(cls: type, data: Any, prefix: str = "", file: str | Path | None = None) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys, wrong types and missing required fields are errors, and so
    is a number outside the bounds of a `ranged` field.

    The object's `validate()` may raise ValueError (reported against `prefix`) or ConfigError with a key relative to
    the object (e.g. a nested partial section it checks itself), which is reported as `prefix.key` in `file`.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {data!r}", file)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    retired = getattr(cls, "RETIRED_KEYS", {})  # old key -> why it is gone: an old recipe.json still loads
    data = _renamed(cls, data, prefix, file)
    for k in data:
        if k in retired:
            warnings.warn(f"{_join(prefix, k)}: ignored, {retired[k]}", stacklevel=2)
        elif k not in fields:
            raise ConfigError(_join(prefix, k), f"unknown key (known: {', '.join(sorted(fields))})", file)
    data = {k: v for k, v in data.items() if k not in retired}
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], key, file)
            check_bounds(kwargs[name], f.metadata.get("bounds", {}), key, file)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required key is missing", file)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(prefix or cls.__name__, str(e), file) from None
        except ConfigError as e:
            raise ConfigError(_join(prefix, e.key), e.message, e.file or file) from None
    return obj


def _renamed(cls: type, data: dict, prefix: str, file: str | Path | None) -> dict:
    """A key a class renamed (`RENAMED_KEYS`: old -> new) is read as the new one, with a warning, for one release.
    Given with the new one too (an old override or recipe over a base that uses the new name), the later one wins:
    recipes and `key=value` overrides are merged in order, so the later key is the one the user wrote last."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if not any(k in renamed for k in data):
        return data
    out: dict = {}
    for k, v in data.items():
        new = renamed.get(k, k)
        if new != k:
            warnings.warn(
                f"{_join(prefix, k)}: renamed to {_join(prefix, new)}; the old name goes in the next release",
                stacklevel=3,
            )
        out.pop(new, None)  # the later of the two names wins (and keeps the later position)
        out[new] = v
    return out


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON-able structure (paths as strings), for the ledger and config hashing."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation in a Config dataclass: the comment ending its line, else the comment lines just above
    it (for `--help`). Fields without a comment are absent."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where the source cannot be read (e.g. a REPL)
        return {}
    comments = {}  # line number -> (comment text, whether the line holds nothing else)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), not tok.line[: tok.start[1]].strip())
    docs = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = [comments[n][0] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        above, n = [], node.lineno - 1
        while n in comments and comments[n][1]:
            above.insert(0, comments[n][0])
            n -= 1
        if text := " ".join(trailing or above):
            docs[node.target.id] = text
    return docs


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------- recipes


def builtin_recipes() -> list[str]:
    """Names of the recipes under recipes/ (the package's and the current directory's)."""
    return sorted({q.stem for d in RECIPE_DIRS if d.is_dir() for q in d.glob("*.y*ml")})


def find_recipe(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a built-in recipe under recipes/."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError("", f"recipe file not found: {p}")
        return p
    for d in RECIPE_DIRS:
        for cand in (d / f"{name_or_path}.yaml", d / f"{name_or_path}.yml"):
            if cand.is_file():
                return cand
    known = builtin_recipes()
    raise ConfigError("", f"no recipe named {name_or_path!r} (built-in: {', '.join(known) or 'none'})")


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML{where}: {getattr(e, 'problem', e)}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "a recipe must be a mapping of keys", path)
    return data


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_raw_recipe(name_or_path: str | Path, _seen: tuple = ()) -> tuple[dict, Path]:
    """Read a recipe file, resolving `base: OTHER` (another recipe it extends) recursively."""
    path = find_recipe(name_or_path)
    if path.resolve() in _seen:
        raise ConfigError("base", "recipes extend each other in a cycle", path)
    raw = load_yaml(path)
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise ConfigError("base", "expected the name or path of another recipe", path)
        parent, _ = load_raw_recipe(raw["base"], _seen + (path.resolve(),))
        raw = deep_merge(parent, {k: v for k, v in raw.items() if k != "base"})
    return raw, path


def parse_override(text: str) -> tuple[list[str], Any]:
    """'pretrain.lr=3e-4' -> (['pretrain', 'lr'], 0.0003). Values are read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(text, "overrides look like key.sub=value")
    key, value = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key, "malformed override key")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


_ITEM = re.compile(r"^(\w[\w-]*)\[(\d+)\]$")  # `sources[2]`: item 2 of the list `sources`


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Set each `a.b.c=value` in a copy of `raw`; a part `name[i]` goes into item i of the list `name` (e.g.
    `curate.sources[2].quality.min_words=5`). Sections on the way are created; lists are not (the item must exist)."""
    raw = deep_merge(raw, {})
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for parts, value in items:
        parts = parts.split(".") if isinstance(parts, str) else parts
        node = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            m = _ITEM.match(part)
            if m:  # step into a copy of list item j
                name, j = m.group(1), int(m.group(2))
                seq = node.get(name)
                if not isinstance(seq, list) or j >= len(seq):
                    n = len(seq) if isinstance(seq, list) else None
                    why = f"has {n} items" if n is not None else "is not a list"
                    raise ConfigError(".".join(parts[: i + 1]), f"{name} {why}; cannot set {'.'.join(parts)}")
                seq = node[name] = list(seq)
                if last:
                    seq[j] = value
                    break
                if not isinstance(seq[j], dict):
                    raise ConfigError(".".join(parts[: i + 1]), f"is {seq[j]!r}, not a section")
                node = seq[j] = dict(seq[j])
            elif last:
                node[part] = value
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                elif not isinstance(nxt, dict):
                    raise ConfigError(
                        ".".join(parts[: i + 1]), f"is {nxt!r}, not a section; cannot set {'.'.join(parts)}"
                    )
                else:
                    nxt = node[part] = dict(nxt)
                node = nxt
    return raw
