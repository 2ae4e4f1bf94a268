"""`ledgerlm inspect RUN --reason R -n 5`: samples of what a curation reason removed."""

from ledgerlm.data.curate import add_inspect_args as add_args
from ledgerlm.data.curate import inspect_cmd as main

__all__ = ["add_args", "main"]
