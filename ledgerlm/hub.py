"""Hugging Face Hub names, optionally answered from a local mirror of Hub repositories.

Every stage loads Hub repositories by name through the same calls (`datasets.load_dataset(NAME, CONFIG, split=...)`
for datasets, `load_tokenizer(NAME)` for tokenizers). With a mirror — the recipe's top-level `hub_mirror` (see
`HubMirror`), or the environment variable LEDGERLM_HUB_MIRROR — NAME is read from

    MIRROR/datasets/<org>/<name>/    a dataset repository, laid out as on the Hub: README.md (whose `configs`
                                     name each config's data files) and the data files at the same paths
    MIRROR/models/<org>/<name>/      a model repository (tokenizer.json, config.json, ...)

which is what `huggingface-cli download --repo-type dataset NAME --local-dir MIRROR/datasets/NAME` writes, so a real
mirror made on a machine with network serves an offline cluster. `load_dataset(DIR, CONFIG)` resolves the config from
the README exactly as it does for the Hub repository. A mirror never falls back to the network: a repository missing
from it is an error naming the path. The rehearsal (recipes/smollm-135m-rehearsal.yaml) generates its mirror with
`ledgerlm.rehearsal`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = "LEDGERLM_HUB_MIRROR"
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass
class HubMirror:
    """The recipe's `hub_mirror` section."""

    path: str = ""  # the mirror directory ("" = the real Hub); relative paths are under the run directory
    generate: str = ""  # "rehearsal": build the mirror with ledgerlm.rehearsal when it is missing
    vocab_size: int = 0  # generate: pad the generated tokenizer to this many tokens (0 = its own ~1k)

    def validate(self) -> None:
        if self.generate not in ("", "rehearsal"):
            raise ValueError(f"generate must be '' or 'rehearsal', got {self.generate!r}")
        if self.generate and not self.path:
            raise ValueError("generate needs a path to write the mirror to")
        if self.vocab_size and (not self.generate or not 0 < self.vocab_size <= 65536):
            raise ValueError(f"vocab_size={self.vocab_size} needs generate and must be in 1..65536 (uint16 shards)")

    def resolve(self, run_dir: str | Path) -> Path | None:
        if not self.path:
            return None
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else Path(run_dir).resolve() / p


def mirror() -> Path | None:
    """The mirror in use, or None (the real Hub)."""
    m = os.environ.get(ENV)
    return Path(m) if m else None


def _repo(kind: str, name: str) -> Path | None:
    m = mirror()
    if m is None:
        return None
    repo = "/".join(name.removeprefix("hf:").split("/")[:2])
    p = m / kind / repo
    if not p.is_dir():
        raise FileNotFoundError(f"Hub {kind[:-1]} {repo!r} is not in the Hub mirror {m} (no directory {p})")
    return p


def dataset(name: str) -> str:
    """What to give `datasets.load_dataset` for the Hub dataset `name`: the name, or its mirror directory."""
    p = _repo("datasets", name)
    return name if p is None else str(p)


def cache_kwargs() -> dict:
    """Extra `load_dataset` arguments for a non-streamed load: with a mirror, a datasets cache of its own inside it.

    datasets keys its cache of a local directory by the directory's name, config and data-file patterns, not by the
    files' content: a mirror rewritten in place, or another mirror holding a repository of the same name, would be
    answered from the Arrow files cached for the first one (seen in the rehearsal: a regenerated mirror evaluated
    on the previous run's items)."""
    m = mirror()
    return {} if m is None else {"cache_dir": str(m / ".datasets-cache")}


def model_dir(name: str) -> Path | None:
    """The mirror directory of the Hub model `name`, or None without a mirror (then the Hub itself is used)."""
    return _repo("models", name)


def local_copy(ref: str) -> Path | None:
    """For a ledger input 'hub:ORG/NAME[/config][split]': the mirrored repository it reads (hashed like any input),
    or None without a mirror."""
    if mirror() is None:
        return None
    name = ref.removeprefix("hub:").split("[")[0]
    for kind in ("datasets", "models"):
        p = mirror() / kind / "/".join(name.split("/")[:2])
        if p.is_dir():
            return p
    return None


@contextmanager
def using(path: Path | None) -> Iterator[None]:
    """Serve Hub names from `path` (None: leave things as they are) while inside; the environment carries it to
    worker processes (datatrove's local workers, torchrun ranks, Slurm jobs). The Hub libraries go offline too, so
    nothing is fetched behind the mirror's back."""
    if path is None:
        yield
        return
    keys = (ENV, *_OFFLINE)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ[ENV] = str(Path(path).resolve())
    for k in _OFFLINE:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
