"""Evaluation: lm-eval-compatible tasks, batched scoring harness, GSM8K extractors, statistics, compare."""
