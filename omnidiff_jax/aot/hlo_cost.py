"""FLOPs and HBM bytes of a compiled (post-optimisation) HLO module with while-loop trip counts counted.

XLA's `compiled.cost_analysis()` counts every while-loop body once: the layer scan, the gradient-accumulation
scan and SPMD collective-matmul loops are all under-counted. This walks the module text instead:

  multiplier   every computation runs (sum over its callers) caller multiplier x (trip count for a while
               body / condition: (N - start) / step for a condition `compare(counter, constant(N)),
               direction=LT`, the body's `add(counter, constant(step))` and the init tuple's start)
  FLOPs        2 x output elements x contraction size for each `dot`, and for each `convolution` (inside
               fusions too) 2 x batch x output features x input features x the window taps that land on
               the input (XLA writes batched matmuls as convolutions whose padded window covers a batch axis),
               plus the Splash attention Mosaic kernels (tpu_custom_call; their bodies are opaque) counted
               from their operand shapes: forward 2, dq 3, dkv 4 matmuls of (Lq x Lkv x N x H) per row, and
               cuBLAS GEMM custom calls (GPU) from their dot dimension numbers
  bytes        for every instruction outside fusions that touches memory (fusions, custom calls, copies,
               collectives, ...): output bytes + operand bytes. A fusion operand read only through
               dynamic-slice (a layer's weights out of the stacked (layers, ...) array; also through a nested
               fusion's dynamic-slice, or through a bitcast) counts the slices; a fusion whose root is an
               in-place dynamic-update-slice (of a parameter or its bitcast) counts the update, not the whole
               buffer; a slice or dynamic-slice outside fusions reads what it writes. Asynchronous pairs count
               as the synchronous op, once, at the start: `X-start` (fusion-start, all-gather-start, copy-start,
               slice-start, ...; its result tuple holds the operands, the output and a context) counts its
               operands and the output, `X-done` nothing; an `async-start` counts nothing itself and its
               wrapped computation's instructions count as if they ran in the caller. Arrays whose layout
               places them in an on-chip memory space (`on_chip_memory_spaces`; on TPU `S(1)` is VMEM,
               openxla.org/xla/shapes "memory space identifiers") are not device-memory traffic: a prefetch
               (copy-start from device memory into S(1)) counts its read.

It is an estimate of HBM traffic (no cache reuse); `once` gives the same count with every multiplier 1, to
compare with cost_analysis()'s own numbers.
"""
from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\](\{[^}]*\})?")  # dtype[dims]{layout}
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTR = re.compile(r"^\s*(ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
# No HBM traffic of their own: an async pair's traffic is counted at its start, an async-start's in the
# computation it wraps.
_NO_MEMORY = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "while", "conditional", "call",
              "after-all", "partition-id", "replica-id", "iota", "opt-barrier", "add-dependency", "async-start",
              "async-update", "async-done"}
_SLICES = {"slice", "dynamic-slice"}
# Splash kernels: matmuls of (Lq x Lkv x H) per head and row in each kernel.
_SPLASH_MATMULS = {"splash_mha_fwd": 2, "splash_mha_dq": 3, "splash_mha_dkv": 4}


@dataclasses.dataclass
class Instruction:
  name: str
  type: str      # the result type text, e.g. 'bf16[2,64]{1,0}' or a tuple
  opcode: str
  rest: str      # operands and attributes
  root: bool


@dataclasses.dataclass
class Cost:
  flops: float
  bytes: float
  flops_once: float
  bytes_once: float
  trip_counts: dict[str, int]  # while body -> trip count


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
  return [(d, tuple(int(x) for x in dims.split(",") if x)) for d, dims, _ in _ARRAY.findall(text)]


def _memory_space(layout: str) -> int:
  """The memory space a layout names, e.g. 1 in '{1,0:T(8,128)S(1)}'; 0 (device memory) when it names none."""
  space = re.search(r"S\((\d+)\)", layout)
  return int(space.group(1)) if space else 0


def _bytes(type_text: str, on_chip: frozenset[int] = frozenset()) -> int:
  """Bytes of the arrays in a type text, less those placed in an `on_chip` memory space."""
  return sum(_DTYPE_BYTES[d] * math.prod(int(x) for x in dims.split(",") if x)
             for d, dims, layout in _ARRAY.findall(type_text) if _memory_space(layout) not in on_chip)


def _operands(rest: str) -> list[str]:
  depth, end = 1, 0
  for end, ch in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth == 0:
      break
  return re.findall(r"%([\w.\-]+)", rest[:end])


def _attr(rest: str, key: str) -> str | None:
  m = re.search(key + r"=%?([\w.\-]+)", rest)
  return m.group(1) if m else None


def parse(hlo_text: str) -> tuple[dict[str, list[Instruction]], str]:
  """{computation: instructions} and the entry computation's name."""
  comps, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group(1)
      comps[current] = []
      if line.startswith("ENTRY"):
        entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTR.match(line) if current else None
    if m:
      comps[current].append(Instruction(m.group(2), m.group(3), m.group(4), m.group(5), bool(m.group(1))))
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return comps, entry


def _constants(instrs: list[Instruction]) -> dict[str, int]:
  return {i.name: int(m.group(1)) for i in instrs if i.opcode == "constant"
          for m in [re.match(r"(-?\d+)\)", i.rest)] if m}


def _tuple_index(instrs: list[Instruction], name: str) -> int | None:
  """The tuple index `name` reads when it is a get-tuple-element."""
  instr = next((i for i in instrs if i.name == name), None)
  if instr is None or instr.opcode != "get-tuple-element":
    return None
  return int(re.search(r"index=(\d+)", instr.rest).group(1))


def _trip_count(condition: list[Instruction], body: list[Instruction], caller: list[Instruction],
                loop: Instruction) -> int:
  """Trips of a `counter < N` loop whose body adds a constant step to the counter (XLA's collective-matmul
  loops count by 2) from its initial value in the caller's init tuple (0 when not a constant); 1 when the
  loop is not of that form. The compare is the condition's root or one operand of a root `and` (a loop with
  an early exit); other compares (a negative-index wrap `counter < 0`) are not the bound."""
  bounds = _constants(condition)
  root = next(i for i in condition if i.root)
  deciding = {root.name} | (set(_operands(root.rest)) if root.opcode == "and" else set())
  for instr in condition:
    if instr.opcode != "compare" or "direction=LT" not in instr.rest or instr.name not in deciding:
      continue
    counter, bound = _operands(instr.rest)[:2]
    index = _tuple_index(condition, counter)
    if bound not in bounds or index is None:
      continue
    step, start = 1, 0
    root = next(i for i in body if i.root)
    if root.opcode == "tuple":
      update = next((i for i in body if i.name == _operands(root.rest)[index]), None)
      body_constants = _constants(body)
      if update is not None and update.opcode == "add":
        steps = [body_constants[o] for o in _operands(update.rest) if o in body_constants]
        step = steps[0] if steps and steps[0] > 0 else 1
    init = next((i for i in caller if i.name == _operands(loop.rest)[0]), None)
    if init is not None and init.opcode == "tuple":
      start = _constants(caller).get(_operands(init.rest)[index], 0)
    return max(0, -(-(bounds[bound] - start) // step))
  return 1


def _matmul_flops(instr: Instruction, types: dict[str, str]) -> float:
  out = _arrays(instr.type)
  if not out:
    return 0.0
  out_elems = math.prod(out[0][1])
  operands = _operands(instr.rest)
  if instr.opcode == "dot":
    lhs = _arrays(types.get(operands[0], ""))
    dims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", instr.rest)
    if not lhs or not dims:
      return 0.0
    contraction = math.prod(lhs[0][1][int(d)] for d in dims.group(1).split(",") if d)
    return 2.0 * out_elems * contraction
  lhs, kernel = _arrays(types.get(operands[0], "")), _arrays(types.get(operands[1], ""))
  labels = re.search(r"dim_labels=(\w+)_(\w+)->", instr.rest)
  if not lhs or not kernel or not labels:
    return 0.0
  lhs_dims = dict(zip(labels.group(1), lhs[0][1]))
  kernel_dims = dict(zip(labels.group(2), kernel[0][1]))
  out_spatial = [size for label, size in zip(re.search(r"->(\w+)", instr.rest).group(1), out[0][1])
                 if label.isdigit()]
  window = _window(instr.rest, len(out_spatial))
  # Multiplies per output feature and batch: input features x the taps that land on the input (not padding).
  taps = 1
  for d, (size, stride, pad_low, lhs_dilation, rhs_dilation) in enumerate(window):
    in_size = (lhs_dims[str(d)] - 1) * lhs_dilation + 1
    taps *= sum(1 for o in range(out_spatial[d]) for k in range(size)
                if 0 <= o * stride + k * rhs_dilation - pad_low < in_size
                and (o * stride + k * rhs_dilation - pad_low) % lhs_dilation == 0)
  batch = math.prod(size for label, size in zip(re.search(r"->(\w+)", instr.rest).group(1), out[0][1])
                    if label == "b")
  return 2.0 * batch * kernel_dims["o"] * kernel_dims["i"] * taps


def _window(rest: str, rank: int) -> list[tuple[int, int, int, int, int]]:
  """(size, stride, low padding, lhs dilation, rhs dilation) per spatial dimension of a convolution."""
  spec = re.search(r"window=\{([^}]*)\}", rest)
  fields = dict(re.findall(r"(\w+)=([\w_]+)", spec.group(1))) if spec else {}
  split = lambda key, default: [int(x) for x in fields[key].split("x")] if key in fields else [default] * rank
  pads = [int(p.split("_")[0]) for p in fields["pad"].split("x")] if "pad" in fields else [0] * rank
  return list(zip(split("size", 1), split("stride", 1), pads, split("lhs_dilate", 1), split("rhs_dilate", 1)))


def _cublas_flops(instr: Instruction, types: dict[str, str]) -> float:
  """A cuBLAS GEMM custom call (GPU): 2 x output elements x the contraction its backend config names."""
  out, lhs = _arrays(instr.type), _arrays(types.get(_operands(instr.rest)[0], ""))
  dims = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instr.rest)
  if not out or not lhs or not dims:
    return 0.0
  contraction = math.prod(lhs[0][1][int(d.strip('" '))] for d in dims.group(1).split(",") if d.strip('" '))
  return 2.0 * math.prod(out[0][1]) * contraction


def _splash_flops(instr: Instruction) -> float:
  kind = next((k for k in _SPLASH_MATMULS if k in instr.name), None)
  _, found, constraints = instr.rest.partition("operand_layout_constraints={")
  if kind is None or not found:
    return 0.0
  shapes = [s for _, s in _arrays(constraints)]
  q, k = shapes[2], shapes[3]  # (B, N, Lq, H), (B, N, Lkv, H) after the block-mask operands
  rows_heads = math.prod(q[:-2])
  return _SPLASH_MATMULS[kind] * 2.0 * rows_heads * q[-2] * k[-2] * q[-1]


def _tuple_elements(type_text: str) -> list[str]:
  """Top-level elements of a tuple type text '(a, (b, c), d)'; [type_text] when it is not a tuple."""
  if not type_text.startswith("("):
    return [type_text]
  elements, depth, start = [], 0, 1
  for pos, ch in enumerate(type_text):  # commas also separate dimensions [1,8] and layouts {1,0}
    depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
    if (ch == "," and depth == 1) or depth == 0:
      elements.append(type_text[start:pos].strip())
      start = pos + 1
    if depth == 0:
      break
  return elements


def _async_output(start: Instruction) -> str:
  """The output type of an `X-start`: its result is (operands tuple, output, context...), or for copy-start
  (output, operand, context); a start whose result is not a tuple is its output."""
  elements = _tuple_elements(start.type)
  if len(elements) == 1:
    return elements[0]
  return elements[0] if start.opcode == "copy-start" else elements[1]


def _parameters(fused: list[Instruction]) -> dict[int, str]:
  """{parameter number: instruction name} of a fused computation."""
  return {int(re.match(r"(\d+)\)", i.rest).group(1)): i.name for i in fused if i.opcode == "parameter"}


def _users(fused: list[Instruction]) -> dict[str, list[Instruction]]:
  users: dict[str, list[Instruction]] = {}
  for i in fused:
    for o in _operands(i.rest):
      users.setdefault(o, []).append(i)
  return users


def _sliced_read_bytes(param: str, fused: list[Instruction], comps: dict[str, list[Instruction]]) -> int | None:
  """Bytes read of fusion parameter `param` when it is read only through dynamic-slices (a layer's weights out
  of the stacked (layers, ...) array), also inside a nested fusion (TPU wraps the slice in a kLoop fusion
  that feeds the matmul), or through a bitcast of it; None when some use reads it whole."""
  users = _users(fused).get(param, [])
  if not users:
    return None
  total = 0
  for user in users:
    if user.opcode == "dynamic-slice" and _operands(user.rest)[0] == param:  # not a slice index
      total += _bytes(user.type)
      continue
    if user.opcode == "bitcast":
      inner = _sliced_read_bytes(user.name, fused, comps)
      if inner is None:
        return None
      total += inner
      continue
    nested = comps.get(_attr(user.rest, "calls") or "") if user.opcode == "fusion" else None
    if nested is None:
      return None
    inner_params = _parameters(nested)
    for index, operand in enumerate(_operands(user.rest)):
      inner = _sliced_read_bytes(inner_params[index], nested, comps) if operand == param else 0
      if inner is None:
        return None
      total += inner
  return total


def _fusion_bytes(instr: Instruction, output_type: str, types: dict[str, str], fused: list[Instruction],
                  comps: dict[str, list[Instruction]], on_chip: frozenset[int]) -> int:
  """Device-memory operand + output bytes of a fusion (or fusion-start, whose output is `output_type`), counting
  sliced reads and in-place updates by their sizes; operands and outputs in `on_chip` memory spaces count 0."""
  params = _parameters(fused)
  root = next(i for i in fused if i.root)
  fused_types = types_of(fused)
  total, updated_buffer = 0, None
  if root.opcode == "dynamic-update-slice":
    updated_buffer, update = _operands(root.rest)[:2]
    producers = {i.name: i for i in fused}
    while producers[updated_buffer].opcode == "bitcast":  # the buffer updated in place, seen as another shape
      updated_buffer = _operands(producers[updated_buffer].rest)[0]
    if _bytes(output_type, on_chip):  # read-modify-write of the updated slice in device memory
      total += 2 * _bytes(fused_types.get(update, ""))
  else:
    total += _bytes(output_type, on_chip)
  for index, operand in enumerate(_operands(instr.rest)):
    param = params.get(index)
    whole = _bytes(types.get(operand, ""), on_chip)
    if whole == 0 or (param is not None and param == updated_buffer):
      continue
    sliced = _sliced_read_bytes(param, fused, comps) if param is not None else None
    total += whole if sliced is None else sliced
  return total


def _memory_bytes(instr: Instruction, types: dict[str, str], comps: dict[str, list[Instruction]],
                  on_chip: frozenset[int]) -> int:
  """Device-memory bytes of an instruction outside fusions (see the module docstring)."""
  if instr.opcode in _NO_MEMORY or instr.opcode.endswith("-done"):
    return 0
  output = _async_output(instr) if instr.opcode.endswith("-start") else instr.type
  opcode = instr.opcode.removesuffix("-start")
  operands = _operands(instr.rest)
  if opcode == "fusion":
    return _fusion_bytes(instr, output, types, comps[_attr(instr.rest, "calls")], comps, on_chip)
  if opcode in _SLICES:  # reads only the slice
    return (_bytes(output) if _bytes(types.get(operands[0], ""), on_chip) else 0) + _bytes(output, on_chip)
  return _bytes(output, on_chip) + sum(_bytes(types.get(o, ""), on_chip) for o in operands)


def types_of(instrs: list[Instruction]) -> dict[str, str]:
  return {i.name: i.type for i in instrs}


def analyze(hlo_text: str, entry_loop_trips: int | None = None, on_chip_memory_spaces: tuple[int, ...] = ()) -> Cost:
  """FLOPs and bytes of one execution of the module (per device for an SPMD-partitioned module).

  entry_loop_trips: trip count to use for the while loops of the entry computation instead of the parsed one
  (1 gives the cost of one iteration of a data-dependent loop, e.g. one sampler step).
  on_chip_memory_spaces: memory spaces (a layout's `S(n)`) that are not the device memory whose bandwidth the
  roofline uses; arrays placed there are not counted (TPU: 1, the on-chip VMEM that XLA's memory-space
  assignment prefetches operands into and keeps intermediates in).
  """
  comps, entry = parse(hlo_text)
  on_chip = frozenset(on_chip_memory_spaces)
  types = {name: types_of(instrs) for name, instrs in comps.items()}
  multiplier: dict[str, float] = {}
  trips: dict[str, int] = {}
  fused_in: dict[str, bool] = {}

  def visit(comp: str, mult: float, inside_fusion: bool) -> None:
    multiplier[comp] = multiplier.get(comp, 0.0) + mult
    fused_in[comp] = inside_fusion
    for instr in comps[comp]:
      if instr.opcode == "while":
        body, cond = _attr(instr.rest, "body"), _attr(instr.rest, "condition")
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', instr.rest)  # GPU backends record it
        n = (entry_loop_trips if comp == entry and entry_loop_trips is not None
             else int(known.group(1)) if known else _trip_count(comps[cond], comps[body], comps[comp], instr))
        trips[body] = n
        visit(cond, mult * n, inside_fusion)
        visit(body, mult * n, inside_fusion)
      elif instr.opcode in ("fusion", "fusion-start"):
        visit(_attr(instr.rest, "calls"), mult, True)
      elif instr.opcode in ("call", "async-start"):
        callee = _attr(instr.rest, "to_apply") or _attr(instr.rest, "calls")
        if callee in comps:
          visit(callee, mult, inside_fusion)
      elif instr.opcode == "conditional":
        for branch in re.findall(r"%([\w.\-]+)", (re.search(r"branch_computations=\{(.*?)\}", instr.rest)
                                                   or re.search(r"(true_computation=.*)", instr.rest)).group(1)):
          if branch in comps:
            visit(branch, mult, inside_fusion)

  visit(entry, 1.0, False)
  flops = bytes_ = flops_once = bytes_once = 0.0
  for comp, mult in multiplier.items():
    for instr in comps[comp]:
      f = 0.0
      if instr.opcode in ("dot", "convolution"):
        f = _matmul_flops(instr, types[comp])
      elif instr.opcode == "custom-call" and "tpu_custom_call" in instr.rest:
        f = _splash_flops(instr)
      elif instr.opcode == "custom-call" and "__cublas" in instr.rest:
        f = _cublas_flops(instr, types[comp])
      b = 0 if fused_in[comp] else _memory_bytes(instr, types[comp], comps, on_chip)
      flops, bytes_ = flops + f * mult, bytes_ + b * mult
      flops_once, bytes_once = flops_once + f, bytes_once + b
  return Cost(flops=flops, bytes=bytes_, flops_once=flops_once, bytes_once=bytes_once, trip_counts=trips)
