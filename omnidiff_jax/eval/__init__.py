"""Evaluation: benchmark readers, metrics, per-benchmark evaluators and the sweep runner (tools/eval.py)."""
