"""The curate step merge (S tasks): heap-merge the runs of each output shard into kept/ and excluded/ (sorted by id)."""

from __future__ import annotations

from pathlib import Path

from ledgerlm.data.curate.base import CurateStep
from ledgerlm.data.curate.config import Config
from ledgerlm.data.runs import merge_runs


class MergeStep(CurateStep):
    name = "curate: merge sorted runs into output shards"

    def __init__(self, cfg: Config, work: str, tasks: int, out: str):
        super().__init__(cfg, work, tasks)
        self.out = out

    def run_task(self, rank: int, world: int) -> None:
        wd, out = self.wd, Path(self.out)
        for sub, name in (("kept", "kept"), ("excl", "excluded")):
            runs = wd.runs(sub, rank, self.tasks)
            merge_runs(
                runs, out / name / f"part-{rank:05d}.jsonl", lambda lv, i, sub=sub: wd.merge_tmp(sub, rank, lv, i)
            )
        if rank == 0:  # the boilerplate lines removed, one line each with the document that kept it
            runs = [p for c, _ in wd.scan_chunks(self.tasks) if (p := wd.apply_run(c, "boiler", 0)).exists()]
            merge_runs(runs, out / "boilerplate.jsonl", lambda lv, i: wd.merge_tmp("boiler", 0, lv, i))
            # C4's line edits of the documents the gates kept, one line each (by id): what was removed and why
            runs = [p for c, _ in wd.scan_chunks(self.tasks) if (p := wd.scan(c, "edits.run")).exists()]
            merge_runs(runs, out / "c4_edits.jsonl", lambda lv, i: wd.merge_tmp("edits", 0, lv, i))
