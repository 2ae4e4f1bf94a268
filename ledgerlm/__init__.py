"""ledgerlm: train a small LM end to end on one GPU and record every decision."""

__version__ = "0.1.0"
