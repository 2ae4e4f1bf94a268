"""`ledgerlm contamination DATASET --against TASKS`: the contamination table of any dataset, read-only."""

from ledgerlm.data.curate import add_contamination_args as add_args
from ledgerlm.data.curate import contamination_cmd as main

__all__ = ["add_args", "main"]
