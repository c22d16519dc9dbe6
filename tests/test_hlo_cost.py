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


# XLA:GPU's form: the layer's slice copied out by an asynchronous kLoop fusion (fusion-start / fusion-done), its
# result tuple holding the whole stacked operand, then read by the matmul fusion.
SLICE_THEN_GEMM = """HloModule m

%fused_slice (p0: bf16[4,8,16], p1: s32[]) -> bf16[1,8,16] {
  %p0 = bf16[4,8,16]{2,1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %c = s32[] constant(0)
  ROOT %ds = bf16[1,8,16]{2,1,0} dynamic-slice(%p0, %p1, %c, %c), dynamic_slice_sizes={1,8,16}
}

%gemm (q0: bf16[2,8], q1: bf16[1,8,16]) -> bf16[2,16] {
  %q0 = bf16[2,8]{1,0} parameter(0)
  %q1 = bf16[1,8,16]{2,1,0} parameter(1)
  %w = bf16[8,16]{1,0} bitcast(%q1)
  ROOT %d = bf16[2,16]{1,0} dot(%q0, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
%SLICE_WRAPPER%
ENTRY %main (a: bf16[4,8,16], i: s32[], x: bf16[2,8]) -> bf16[2,16] {
  %a = bf16[4,8,16]{2,1,0} parameter(0)
  %i = s32[] parameter(1)
  %x = bf16[2,8]{1,0} parameter(2)
%SLICE%
  ROOT %f = bf16[2,16]{1,0} fusion(%x, %w), kind=kCustom, calls=%gemm
}
"""
SYNC_SLICE = "  %w = bf16[1,8,16]{2,1,0} fusion(%a, %i), kind=kLoop, calls=%fused_slice"
ASYNC_FUSION = ("  %s = ((bf16[4,8,16]{2,1,0}, s32[]), bf16[1,8,16]{2,1,0}, u32[]) fusion-start(%a, %i), kind=kLoop, "
                "calls=%fused_slice\n  %w = bf16[1,8,16]{2,1,0} fusion-done(%s)")
# An async wrapped computation (async-start / async-done around the synchronous fusion).
WRAPPER = """
%wrapped_slice (w0: bf16[4,8,16], w1: s32[]) -> bf16[1,8,16] {
  %w0 = bf16[4,8,16]{2,1,0} parameter(0)
  %w1 = s32[] parameter(1)
  ROOT %ws = bf16[1,8,16]{2,1,0} fusion(%w0, %w1), kind=kLoop, calls=%fused_slice
}
"""
ASYNC_WRAPPED = ("  %s = ((bf16[4,8,16]{2,1,0}, s32[]), bf16[1,8,16]{2,1,0}, s32[]) async-start(%a, %i), "
                 "calls=%wrapped_slice\n  %w = bf16[1,8,16]{2,1,0} async-done(%s)")


def _slice_then_gemm(slice_text: str, wrapper: str = "") -> str:
  return SLICE_THEN_GEMM.replace("%SLICE_WRAPPER%", wrapper).replace("%SLICE%", slice_text)


def test_async_slices_of_stacked_weights_count_the_slice_like_the_synchronous_fusion():
  # slice fusion: reads one layer 8x16 + the s32 index, writes 8x16; gemm: reads x 2x8 and the slice, writes 2x16
  expected = 2 * (8 * 16) + 4 + 2 * (8 * 16) + 2 * (2 * 8 + 8 * 16 + 2 * 16)
  sync = hlo_cost.analyze(_slice_then_gemm(SYNC_SLICE))
  assert sync.bytes == expected
  assert sync.flops == 2 * 2 * 16 * 8
  for text in (_slice_then_gemm(ASYNC_FUSION), _slice_then_gemm(ASYNC_WRAPPED, WRAPPER)):
    cost = hlo_cost.analyze(text)
    assert (cost.bytes, cost.flops) == (expected, sync.flops)


# Async collectives (GPU) and TPU's slice-start: the start's result tuple holds the operand and the output.
COLLECTIVE = """HloModule m

ENTRY %main (a: bf16[28,64,16]) -> %OUT% {
  %a = bf16[28,64,16]{2,1,0} parameter(0)
%OP%
}
"""
ASYNC_AND_SYNC_OPS = [
    ("bf16[28,64,128]", "  %s = ((bf16[28,64,16]{2,1,0}), bf16[28,64,128]{2,1,0}) all-gather-start(%a), "
     "dimensions={2}\n  ROOT %d = bf16[28,64,128]{2,1,0} all-gather-done(%s)",
     "  ROOT %d = bf16[28,64,128]{2,1,0} all-gather(%a), dimensions={2}", 2 * 28 * 64 * (16 + 128)),
    ("bf16[7,64,16]", "  %s = ((bf16[28,64,16]{2,1,0}), bf16[7,64,16]{2,1,0}, s32[]) slice-start(%a), "
     "slice={[0:7], [0:64], [0:16]}\n  ROOT %d = bf16[7,64,16]{2,1,0} slice-done(%s)",
     "  ROOT %d = bf16[7,64,16]{2,1,0} slice(%a), slice={[0:7], [0:64], [0:16]}", 2 * 2 * 7 * 64 * 16),
]


def test_async_collectives_and_slices_count_once_like_their_synchronous_form():
  for out, async_op, sync_op, expected in ASYNC_AND_SYNC_OPS:
    module = COLLECTIVE.replace("%OUT%", out)
    assert hlo_cost.analyze(module.replace("%OP%", async_op)).bytes == expected
    assert hlo_cost.analyze(module.replace("%OP%", sync_op)).bytes == expected


# A loop with an early exit (`i < 8 and not done`) whose condition also wraps a negative index (`i < 0`), as in
# the KV-cache sampler's block search: the bound is the compare under the root `and`.
EARLY_EXIT_LOOP = """HloModule m

%cond (cp: (s32[], pred[])) -> pred[] {
  %cp = (s32[], pred[]) parameter(0)
  %ci = s32[] get-tuple-element(%cp), index=0
  %zero = s32[] constant(0)
  %eight = s32[] constant(8)
  %negative = pred[] compare(%ci, %zero), direction=LT
  %wrapped = s32[] select(%negative, %eight, %ci)
  %in_range = pred[] compare(%ci, %eight), direction=LT
  %done = pred[] get-tuple-element(%cp), index=1
  %not_done = pred[] not(%done)
  ROOT %go = pred[] and(%in_range, %not_done)
}

%body (bp: (s32[], pred[])) -> (s32[], pred[]) {
  %bp = (s32[], pred[]) parameter(0)
  %bi = s32[] get-tuple-element(%bp), index=0
  %one = s32[] constant(1)
  %next = s32[] add(%bi, %one)
  %bd = pred[] get-tuple-element(%bp), index=1
  ROOT %t = (s32[], pred[]) tuple(%next, %bd)
}

ENTRY %main (flag: pred[]) -> (s32[], pred[]) {
  %flag = pred[] parameter(0)
  %start = s32[] constant(0)
  %init = (s32[], pred[]) tuple(%start, %flag)
  ROOT %loop = (s32[], pred[]) while(%init), condition=%cond, body=%body
}
"""


def test_an_early_exit_loop_counts_its_bound_not_a_negative_index_wrap():
  assert hlo_cost.analyze(EARLY_EXIT_LOOP).trip_counts == {"body": 8}


# Gradient accumulation into the stacked (layers, ...) gradient (the 8x H100 train step): the layer's update is
# written in place into a bitcast of the buffer, and a layer's weights are read through a bitcast.
BITCAST_UPDATE = """HloModule m

%fused_update (p0: f32[4,16,8], p1: bf16[16,8], p2: s32[]) -> f32[8,4,16] {
  %p0 = f32[4,16,8]{1,0,2} parameter(0)
  %buffer = f32[8,4,16]{2,1,0} bitcast(%p0)
  %p1 = bf16[16,8]{0,1} parameter(1)
  %b1 = bf16[8,1,16]{2,1,0} bitcast(%p1)
  %update = f32[8,1,16]{2,1,0} convert(%b1)
  %p2 = s32[] parameter(2)
  %c = s32[] constant(0)
  ROOT %dus = f32[8,4,16]{2,1,0} dynamic-update-slice(%buffer, %update, %c, %p2, %c)
}

%fused_read (q0: bf16[4,8,16], q1: s32[]) -> bf16[1,16,8] {
  %q0 = bf16[4,8,16]{2,1,0} parameter(0)
  %q1 = s32[] parameter(1)
  %c = s32[] constant(0)
  %view = bf16[4,16,8]{1,2,0} bitcast(%q0)
  ROOT %ds = bf16[1,16,8]{1,2,0} dynamic-slice(%view, %q1, %c, %c), dynamic_slice_sizes={1,16,8}
}

ENTRY %main (g: f32[4,16,8], u: bf16[16,8], w: bf16[4,8,16], i: s32[]) -> (f32[8,4,16], bf16[1,16,8]) {
  %g = f32[4,16,8]{1,0,2} parameter(0)
  %u = bf16[16,8]{0,1} parameter(1)
  %w = bf16[4,8,16]{2,1,0} parameter(2)
  %i = s32[] parameter(3)
  %accumulated = f32[8,4,16]{2,1,0} fusion(%g, %u, %i), kind=kLoop, calls=%fused_update
  %layer = bf16[1,16,8]{1,2,0} fusion(%w, %i), kind=kLoop, calls=%fused_read
  ROOT %t = (f32[8,4,16]{2,1,0}, bf16[1,16,8]{1,2,0}) tuple(%accumulated, %layer)
}
"""


def test_updates_and_slices_through_a_bitcast_count_the_slice():
  # update: read + write of one f32 16x8 slice, the bf16 16x8 update and the index; read: one bf16 16x8 layer
  # in and out, and the index
  assert hlo_cost.analyze(BITCAST_UPDATE).bytes == (2 * 4 * 16 * 8 + 2 * 16 * 8 + 4) + (2 * 2 * 16 * 8 + 4)


# XLA:TPU's memory-space assignment: a weight prefetched from HBM into VMEM (layout S(1)) by copy-start, a matmul
# fusion reading it there and leaving its output in VMEM, a copy evicting the output to HBM.
ON_CHIP = """HloModule m

%matmul (p0: bf16[8,64], p1: bf16[64,128]) -> bf16[8,128] {
  %p0 = bf16[8,64]{1,0} parameter(0)
  %p1 = bf16[64,128]{1,0} parameter(1)
  ROOT %d = bf16[8,128]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (w: bf16[64,128], x: bf16[8,64]) -> bf16[8,128] {
  %w = bf16[64,128]{1,0:T(8,128)(2,1)} parameter(0)
  %x = bf16[8,64]{1,0:T(8,128)(2,1)} parameter(1)
  %cs = (bf16[64,128]{1,0:T(8,128)(2,1)S(1)}, bf16[64,128]{1,0:T(8,128)(2,1)}, u32[]{:S(2)}) copy-start(%w)
  %cd = bf16[64,128]{1,0:T(8,128)(2,1)S(1)} copy-done(%cs)
  %h = bf16[8,128]{1,0:T(8,128)(2,1)S(1)} fusion(%x, %cd), kind=kOutput, calls=%matmul
  ROOT %out = bf16[8,128]{1,0:T(8,128)(2,1)} copy(%h)
}
"""


def test_arrays_in_an_on_chip_memory_space_are_not_device_memory_traffic():
  weight, x, out = 2 * 64 * 128, 2 * 8 * 64, 2 * 8 * 128
  # HBM: the prefetch reads the weight, the matmul reads x, the eviction writes the output
  assert hlo_cost.analyze(ON_CHIP, on_chip_memory_spaces=(1,)).bytes == weight + x + out
  # every array counted: prefetch read + write, matmul x + weight + output, eviction read + write
  assert hlo_cost.analyze(ON_CHIP).bytes == 2 * weight + (x + weight + out) + 2 * out
