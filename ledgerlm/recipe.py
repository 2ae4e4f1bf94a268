"""A recipe: the top-level keys (name, seed, device, stages, samples, logging) and one validated Config per stage.
Everything about checking a recipe lives here and in config.py (field types, overrides, `base:`); pipeline.py runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm import hub
from ledgerlm.config import (
    TOP_LEVEL,
    ConfigError,
    apply_overrides,
    coerce,
    from_dict,
    load_raw_recipe,
    to_dict,
)
from ledgerlm.progress import LoggingConfig
from ledgerlm.samples import SamplesConfig
from ledgerlm.stage import CHECKS, STAGES, get


@dataclass
class Recipe:
    name: str
    seed: int = 0
    device: str = "auto"
    stages: list[str] = field(default_factory=list)
    description: str = ""
    sections: dict[str, Any] = field(default_factory=dict)  # stage -> validated Config
    source: str | None = None  # the file it came from
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # progress display and metric tracking
    hub_mirror: hub.HubMirror = field(default_factory=hub.HubMirror)  # Hub names served from local copies

    def section(self, stage: str) -> Any:
        if stage not in self.sections:
            self.sections[stage] = from_dict(get(stage).config, {}, prefix=stage)
        return self.sections[stage]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "stages": self.stages,
            "logging": to_dict(self.logging),
            **({"hub_mirror": to_dict(self.hub_mirror)} if self.hub_mirror.path else {}),
            **{k: to_dict(v) for k, v in self.sections.items()},
        }


def build_recipe(raw: dict, file: str | Path | None = None, need_all: bool = True) -> Recipe:
    """Validate a raw recipe mapping into a Recipe. Every section of a listed stage is validated, even if empty."""
    for k in raw:
        if k not in TOP_LEVEL and k not in STAGES:
            raise ConfigError(
                k, f"unknown key (top-level keys: {', '.join(sorted(TOP_LEVEL))}; stages: {', '.join(STAGES)})", file
            )
    top = {
        "name": raw.get("name", Path(file).stem if file else "run"),
        "seed": raw.get("seed", 0),
        "device": raw.get("device", "auto"),
        "stages": raw.get("stages", [s for s in STAGES if s in raw]),
        "description": raw.get("description", ""),
    }
    top["name"] = coerce(top["name"], str, "name", file)
    top["seed"] = coerce(top["seed"], int, "seed", file)
    top["device"] = coerce(top["device"], str, "device", file)
    top["stages"] = coerce(top["stages"], list[str], "stages", file)
    for i, s in enumerate(top["stages"]):
        if s not in STAGES and s not in CHECKS:
            raise ConfigError(f"stages[{i}]", f"unknown stage {s!r} (known: {', '.join([*STAGES, *CHECKS])})", file)
    samples = from_dict(SamplesConfig, raw.get("samples") or {}, prefix="samples", file=file)
    logging_cfg = from_dict(LoggingConfig, raw.get("logging") or {}, prefix="logging", file=file)
    mirror = from_dict(hub.HubMirror, raw.get("hub_mirror") or {}, prefix="hub_mirror", file=file)
    recipe = Recipe(**top, source=str(file) if file else None, samples=samples, hub_mirror=mirror, logging=logging_cfg)
    for name in STAGES:
        if name in raw or (need_all and name in top["stages"]):
            recipe.sections[name] = from_dict(get(name).config, raw.get(name) or {}, prefix=name, file=file)
    for name in list(recipe.sections):  # each stage's rules between its section and others' (StageSpec.checks)
        check = get(name).checks
        if check is not None:
            try:
                check(recipe)
            except ConfigError as e:
                raise ConfigError(e.key, e.message, e.file or file) from None
    return recipe


def load_recipe(name_or_path: str | Path = "demo", overrides: list[str] | dict | None = None) -> Recipe:
    raw, path = load_raw_recipe(name_or_path)
    raw = apply_overrides(raw, overrides or [])
    return build_recipe(raw, path)
