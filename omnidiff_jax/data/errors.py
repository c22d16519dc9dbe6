"""Bad-input policy shared by the manifest reader, the offline tokenizer and the online pipeline.

A problem with one sample raises `BadSample(reason)`. The caller knows where the sample came from
(`file:line`, or `tfds:name/split[index]`) and hands both to `BadInputPolicy.handle`:

  on_error='skip'   the sample is dropped, counted per reason and logged (file, line, reason)
  on_error='error'  a `BadInputError` stops the run, naming the file, the line and the reason
"""
from __future__ import annotations

import collections
import logging

ON_ERROR_CHOICES = ("skip", "error")

log = logging.getLogger(__name__)


class BadSample(ValueError):
  """One sample is unusable; `reason` says why (e.g. "audio 'a.wav': file not found")."""


class BadInputError(ValueError):
  """Raised under on_error='error': `where` (file:line) and the reason."""

  def __init__(self, where: str, reason: str):
    super().__init__(f"{where}: {reason}")
    self.where, self.reason = where, reason


class BadInputPolicy:
  """Counts skipped samples per reason kind and keeps the first `keep_examples` (where, reason) pairs."""

  def __init__(self, on_error: str = "skip", keep_examples: int = 1000):
    if on_error not in ON_ERROR_CHOICES:
      raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    self.on_error = on_error
    self.keep_examples = keep_examples
    self.counts: collections.Counter[str] = collections.Counter()
    self.examples: list[dict[str, str]] = []

  def handle(self, where: str, error: BadSample) -> None:
    """Skips (counts + logs) or raises BadInputError, depending on the policy."""
    reason = str(error)
    if self.on_error == "error":
      raise BadInputError(where, reason) from error
    self.counts[reason_kind(reason)] += 1
    if len(self.examples) < self.keep_examples:
      self.examples.append({"where": where, "reason": reason})
    log.warning("skipping %s: %s", where, reason)

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def report(self) -> dict:
    return {"skipped": self.skipped, "by_reason": dict(self.counts), "examples": list(self.examples)}


def reason_kind(reason: str) -> str:
  """The reason with quoted names removed, so that counts group by kind ("audio '*': file not found")."""
  parts = reason.split("'")
  return "'".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts))
