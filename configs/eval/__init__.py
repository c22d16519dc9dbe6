"""Eval sweep configs (tools/eval.py): the grids of the paper's Tables 1-3 and tiny ones for tests."""
