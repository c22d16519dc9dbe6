"""Preemption safety: kill -9 and SIGTERM in mid-training, resume, and the loss trajectory is bit-identical
to an uninterrupted run (CPU, fixed seeds), with every batch consumed exactly once. Then the next
curriculum stage starts from the final checkpoint."""
import signal

import train_subprocess as ts

# Enough steps that the SIGTERM below lands mid-run even on an idle machine (tiny steps take ~20 ms).
STEPS = 40


def test_kill9_and_sigterm_resume_is_bit_identical(tmp_path):
  reference, cache = tmp_path / "reference", tmp_path / "jax_cache"
  ts.run(reference, steps=STEPS, cache_dir=cache)
  expected = {r["step"]: r for r in ts.metrics(reference)}
  assert sorted(expected) == list(range(1, STEPS + 1))
  assert len({r["data_digest"] for r in expected.values()}) == STEPS  # every step sees a different batch

  work = tmp_path / "interrupted"
  proc = ts.start(work, steps=STEPS, cache_dir=cache)
  ts.wait_for_step(proc, work, 5)  # checkpoint 3 is complete by now; 6 may be half written
  proc.kill()  # SIGKILL
  proc.wait()
  killed_at = max(r["step"] for r in ts.metrics(work))

  proc = ts.start(work, steps=STEPS, cache_dir=cache)
  ts.wait_for_step(proc, work, killed_at + 2)
  proc.send_signal(signal.SIGTERM)  # preemption notice: save now and exit cleanly
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-4000:]
  assert "preempted" in err
  # The preempted run saved the last step it ran, whether or not a save was due.
  assert ts.checkpoint_steps(work)[-1] == max(r["step"] for r in ts.metrics(work)) > killed_at

  ts.run(work, steps=STEPS, cache_dir=cache)
  records = ts.metrics(work)
  # Steps after a restart are re-run from the checkpoint; each record must equal the uninterrupted run.
  for r in records:
    assert r["data_digest"] == expected[r["step"]]["data_digest"], r["step"]
    assert r["loss"] == expected[r["step"]]["loss"], (r["step"], r["loss"], expected[r["step"]]["loss"])
    assert r["grad_norm"] == expected[r["step"]]["grad_norm"], r["step"]
  final = {r["step"]: r for r in records}
  assert sorted(final) == list(range(1, STEPS + 1))
  assert ts.checkpoint_steps(work)[-1] == STEPS

  # Curriculum: stage 2 in the same workdir starts from stage 1's final parameters (not a fresh init).
  proc = ts.run(reference, steps=2, cache_dir=cache, stage="stage2")
  assert "init from " + str(reference / "stage1" / "checkpoints") in proc.stderr
  stage2 = ts.metrics(reference, "stage2")
  assert stage2[0]["loss"] < expected[1]["loss"] - 0.5, (stage2[0]["loss"], expected[1]["loss"])
