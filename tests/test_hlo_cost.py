"""omnidiff_jax.aot.hlo_cost on hand-written HLO: what a fusion reads of a stacked (layers, ...) weight array."""
from omnidiff_jax.aot import hlo_cost

# A layer's weights sliced out of the stacked array by a kLoop fusion nested in the matmul fusion (what XLA:TPU
# emits for a scanned layer's dot), as in the 7B sampler's compiled HLO.
NESTED_SLICE = """HloModule m

%nested (p0: bf16[4,8,16], p1: s32[]) -> bf16[8,16] {
  %p0 = bf16[4,8,16]{2,1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %c = s32[] constant(0)
  %ds = bf16[1,8,16]{2,1,0} dynamic-slice(%p0, %p1, %c, %c), dynamic_slice_sizes={1,8,16}
  ROOT %b = bf16[8,16]{1,0} bitcast(%ds)
}

%outer (q0: bf16[4,8,16], q1: s32[], q2: bf16[2,8]) -> bf16[2,16] {
  %q0 = bf16[4,8,16]{2,1,0} parameter(0)
  %q1 = s32[] parameter(1)
  %q2 = bf16[2,8]{1,0} parameter(2)
  %w = bf16[8,16]{1,0} fusion(%q0, %q1), kind=kLoop, calls=%nested
  ROOT %d = bf16[2,16]{1,0} dot(%q2, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: bf16[4,8,16], i: s32[], x: bf16[2,8]) -> bf16[2,16] {
  %a = bf16[4,8,16]{2,1,0} parameter(0)
  %i = s32[] parameter(1)
  %x = bf16[2,8]{1,0} parameter(2)
  ROOT %f = bf16[2,16]{1,0} fusion(%a, %i, %x), kind=kOutput, calls=%outer
}
"""


def test_a_slice_inside_a_nested_fusion_counts_the_slice():
  cost = hlo_cost.analyze(NESTED_SLICE)
  # output 2x16 + one layer's 8x16 slice + x 2x8 (bf16) + the s32 index
  assert cost.bytes == 2 * (2 * 16 + 8 * 16 + 2 * 8) + 4
  assert cost.flops == 2 * 2 * 16 * 8


def test_a_whole_read_inside_a_nested_fusion_counts_the_whole_array():
  whole = NESTED_SLICE.replace("ROOT %b = bf16[8,16]{1,0} bitcast(%ds)",
                               "%r = bf16[8,16]{1,0} reduce(%p0, %c), dimensions={0}\n  ROOT %b = bf16[8,16]{1,0} "
                               "add(%r, %r)")
  assert hlo_cost.analyze(whole).bytes == 2 * (2 * 16 + 4 * 8 * 16 + 2 * 8) + 4
