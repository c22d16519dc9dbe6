"""Ahead-of-time compiles for TPU topologies and GPU nodes without the hardware (tools/aot_compile.py)."""
