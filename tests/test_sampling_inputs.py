"""Media inputs of the sampling API (omnidiff_jax.sampling.inputs): images through MAGVIT-v2 into the prompt ids,
user speech through WavFrontend + SenseVoice + projector into the prompt embeddings, s2i's CFG prompt."""
import json
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import soundfile
from PIL import Image

import tiny_tokenizer
from configs import sensevoice_tiny, tiny
from omnidiff_jax import chat, sharding
from omnidiff_jax import config as cfglib
from omnidiff_jax.models.magvit import preprocess as image_processing
from omnidiff_jax.models.speech_in import sensevoice
from omnidiff_jax.sampling import (PRESETS, TASK_INPUTS, embed_prompts, generate_from_inputs, generate_task, inputs,
                                   split_outputs)
from omnidiff_jax.vocab import VocabLayout

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

# The tiny MAGVIT-v2 keeps the real 13-bit codebook, so the vocabulary has 8192 image codes.
VOCAB = dict(text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64, num_image_codes=8192, size=8680)
S2I_SYSTEM = "Please generate an image based on the input audio."


def _backbone_config():
  """The tiny backbone 48 wide (the parity fixture's projector width) with the tokenizer's vocabulary."""
  cfg = tiny.get_config()
  cfg.vocab = cfglib.vocab_config(**VOCAB)
  cfg.model.vocab_size, cfg.model.hidden_size = cfg.vocab.size, 48
  return cfg


def _omni_tensors():
  """The parity fixture's Omni-checkpoint tensors: 'model.audio_model.model.*' (SenseVoice) and
  'model.audio_projection.*'."""
  data = np.load(FIXTURES / "speech_in_sensevoice.npz")
  return {k[3:]: data[k] for k in data.files if k.startswith("sd/")}


def _speech_config():
  speech_cfg = sensevoice_tiny.get_config()
  speech_cfg.projector.hidden_size = 48
  return speech_cfg


@pytest.fixture(scope="module")
def setup():
  """A tiny random backbone, its tokenizer, and the tiny SenseVoice + projector of the parity fixture."""
  from omnidiff_jax.models.speech_in import params as speech_in
  cfg, tensors, speech_cfg = _backbone_config(), _omni_tensors(), _speech_config()
  vocab = VocabLayout.from_config(cfg.vocab)
  projector = speech_in.model_for("projector", speech_cfg)
  speech_in.load_projector(projector, tensors)
  with pytest.warns(UserWarning, match="CMVN"):
    encoder = inputs.load_speech_encoder(speech_cfg, projector=projector, sensevoice_tensors=tensors)
  return sharding.create_model(cfg.model, seed=0), vocab, tiny_tokenizer.build(vocab), encoder


def _wav(path, seconds, seed):
  t = np.arange(int(16000 * seconds)) / 16000
  wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
  soundfile.write(path, wave.astype(np.float32), 16000, subtype="FLOAT")
  return str(path)


def test_every_preset_lists_its_inputs():
  assert set(TASK_INPUTS) == set(PRESETS) == set(inputs.CHAT_TASKS)


def test_vqa_prompt_holds_the_encoded_image_codes(tmp_path, setup):
  model, vocab, tokenizer, _ = setup
  with pytest.warns(UserWarning, match="random MAGVIT-v2"):
    magvit = inputs.load_image_tokenizer("configs/magvit.py:tiny", seed=0)
  rng = np.random.default_rng(0)
  paths = []
  for i, size in enumerate([(40, 56), (64, 36)]):
    paths.append(str(tmp_path / f"img{i}.png"))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
  questions = ["What is shown in the picture?", "What is it?"]
  result, cfg, prompts = generate_from_inputs(model, vocab, tokenizer, "vqa", texts=questions, images=paths,
                                              image_tokenizer=magvit, image_resolution=32, region_len=8, steps=4)
  begin, end = vocab.special_id("<|begin_of_image|>"), vocab.special_id("<|end_of_image|>")
  codes = image_processing.encode_files(magvit.model, paths, 32, batch_size=2)   # 32 px, f = 4: 8 x 8 codes each
  for row, (want, question) in enumerate(zip(codes, questions)):
    ids = prompts.ids[row]
    start, stop = np.flatnonzero(ids == begin), np.flatnonzero(ids == end)
    assert len(start) == len(stop) == 1 and want.shape == (64,)
    np.testing.assert_array_equal(ids[start[0] + 1:stop[0]], want + vocab.image_offset)
    question_ids = tokenizer.encode(question + "\n", add_special_tokens=False).ids
    np.testing.assert_array_equal(ids[start[0] - len(question_ids):start[0]], question_ids)
  assert len(prompts.ids[0]) > len(prompts.ids[1]) and prompts.uncond is None
  assert (cfg.steps, cfg.alg) == (4, "entropy")
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (2, 8) and (tokens != vocab.mask_id).all()


def test_asr_embeddings_splice_projected_speech_features(tmp_path, setup):
  model, vocab, tokenizer, encoder = setup
  wavs = [_wav(tmp_path / "a.wav", 0.5, 0), _wav(tmp_path / "b.wav", 0.3, 1)]
  result, cfg, prompts = generate_from_inputs(model, vocab, tokenizer, "asr", wavs=wavs, speech_encoder=encoder,
                                              steps=4, region_len=8)
  embeds, mask = embed_prompts(model, prompts.ids, vocab.pad_id, prompts.features, prompts.audio_slots)
  length = embeds.shape[1]
  context = vocab.special_id("<|context_of_audio|>")
  for row, wav in enumerate(wavs):
    frames = encoder.features(wav)
    encoded = sensevoice.encode_features(encoder.featurizer.encoder, [frames])[0]
    direct = np.asarray(encoder.projector(jnp.asarray(encoded)))
    ids, slots = prompts.ids[row], prompts.audio_slots[row]
    assert len(slots) == len(frames) + 4 == direct.shape[0]                    # T_lfr + 4 slots
    assert (ids[slots] == context).all() and (ids == context).sum() == len(slots)
    offset = length - len(ids)
    assert not mask[row, :offset].any() and mask[row, offset:].all()
    row_embeds = np.asarray(embeds[row, offset:])
    np.testing.assert_array_equal(row_embeds[slots], direct)  # measured bit-equal: the same projector call
    others = np.setdiff1d(np.arange(len(ids)), slots)
    np.testing.assert_array_equal(row_embeds[others], np.asarray(model.embed(jnp.asarray(ids[others]))))
  want = chat.build_chat(chat.task_messages("asr"), vocab, tokenizer, audio_slot_counts=[len(prompts.audio_slots[0])],
                         add_generation_prompt=True).ids
  np.testing.assert_array_equal(prompts.ids[0], want)
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (2, 8) and (tokens != vocab.mask_id).all()
  texts = [split_outputs(row, vocab)["text"] for row in tokens]
  assert all(((t >= 0) & (t < vocab.text_size)).all() for t in texts)


def test_s2i_builds_the_uncond_prompt_and_runs_cfg(tmp_path, setup):
  model, vocab, tokenizer, encoder = setup
  wav = _wav(tmp_path / "s.wav", 0.4, 2)
  result, cfg, prompts = generate_from_inputs(model, vocab, tokenizer, "s2i", wavs=[wav], speech_encoder=encoder,
                                              steps=4, region_len=8)
  assert cfg.cfg_scale == 2.0 and prompts.uncond is not None
  enc = lambda s: tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
  system_turn = [vocab.im_start_id, *enc("system"), *enc("\n"), *enc(S2I_SYSTEM), vocab.im_end_id, *enc("\n")]
  want = system_turn + [vocab.im_start_id, *enc("user"), *enc("\n"), vocab.im_end_id, *enc("\n"), vocab.im_start_id,
                        *enc("assistant"), *enc("\n")]
  assert prompts.uncond.tolist() == want
  # upstream's inference user turn is "\n<|audio|>", tokenized together with its role line
  user = [vocab.im_start_id, *enc("user\n\n"), vocab.special_id("<|begin_of_audio|>")]
  assert prompts.ids[0][:len(system_turn) + len(user)].tolist() == system_turn + user
  embeds, mask = embed_prompts(model, prompts.ids, vocab.pad_id, prompts.features, prompts.audio_slots)
  explicit, _ = generate_task(model, vocab, "s2i", prompt_embeds=embeds, prompt_mask=mask, uncond_ids=[want], steps=4,
                              region_len=8)
  no_cfg, no_cfg_config, no_uncond = generate_from_inputs(model, vocab, tokenizer, "s2i", wavs=[wav],
                                                          speech_encoder=encoder, steps=4, region_len=8, cfg_scale=0.0)
  assert no_cfg_config.cfg_scale == 0.0 and no_uncond.uncond is None
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (1, 8)
  np.testing.assert_array_equal(tokens, np.asarray(explicit.tokens))
  assert (tokens != np.asarray(no_cfg.tokens)).any()


def test_missing_or_wrong_inputs_are_named(tmp_path, setup):
  model, vocab, tokenizer, encoder = setup
  with pytest.raises(FileNotFoundError, match="nope.wav"):
    generate_from_inputs(model, vocab, tokenizer, "asr", wavs=[str(tmp_path / "nope.wav")], speech_encoder=encoder)
  with pytest.raises(FileNotFoundError, match="nope.png"):
    inputs.check_inputs("vqa", texts=["q"], images=[str(tmp_path / "nope.png")])
  (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
  with pytest.raises(ValueError, match="junk.wav"):
    generate_from_inputs(model, vocab, tokenizer, "asr", wavs=[str(tmp_path / "junk.wav")], speech_encoder=encoder)
  with pytest.raises(ValueError, match="missing image"):
    inputs.check_inputs("vqa", texts=["q"])
  with pytest.raises(ValueError, match="unexpected text"):
    inputs.check_inputs("asr", texts=["q"], wavs=[_wav(tmp_path / "c.wav", 0.1, 0)])
  with pytest.raises(ValueError, match=r"row 0: features of shape \(1, 5\) for 1 slots; expected \(1, 48\)"):
    embed_prompts(model, [[1, 2, 3]], vocab.pad_id, [np.zeros((1, 5))], [[1]])
  with pytest.raises(ValueError, match="slot positions must increase"):
    embed_prompts(model, [[1, 2, 3]], vocab.pad_id, [np.zeros((2, 48))], [[2, 1]])
  with pytest.raises(ValueError, match="one of each input per batch row"):
    inputs.check_inputs("svqa", wavs=[str(tmp_path / "c.wav")] * 2, images=[str(tmp_path / "c.wav")])


def test_random_speech_encoder_and_bad_weights(tmp_path):
  cfg = sensevoice_tiny.get_config()
  with pytest.warns(UserWarning, match="random SenseVoice"):
    encoder = inputs.load_speech_encoder(cfg, seed=3)
  again = inputs.load_speech_encoder(cfg, seed=3)
  wav = _wav(tmp_path / "r.wav", 0.2, 0)
  features = encoder(wav)
  assert features.shape == (len(encoder.features(wav)) + 4, cfg.projector.hidden_size) and np.isfinite(features).all()
  np.testing.assert_array_equal(features, again(wav))
  with pytest.raises(ValueError, match="SenseVoice: no key ending in 'encoder.after_norm.weight'"):
    inputs.load_speech_encoder(cfg, sensevoice_tensors={"model.embed_tokens.weight": np.zeros((4, 4), np.float32)})


def test_a_converted_checkpoint_with_a_projector_drives_the_speech_path(tmp_path, setup):
  """HF Omni directory (backbone, model.audio_projection.*, model.audio_model.*) -> hf-to-orbax ->
  checkpoints.load: the model owns the projector (params/audio_projection), 'extra' holds only SenseVoice, and
  ASR on a wav file runs through the model's projector."""
  torch_reference = pytest.importorskip("torch_reference")
  import torch
  from safetensors.torch import save_file
  from omnidiff_jax import checkpoints
  from omnidiff_jax.checkpoints import convert
  _, vocab, tokenizer, fixture_encoder = setup
  cfg, tensors = _backbone_config(), _omni_tensors()
  reference = torch_reference.random_qwen2(cfg.model, seed=0)
  hf = {k: v.contiguous() for k, v in reference.state_dict().items()}
  hf.update({k: torch.from_numpy(v) for k, v in tensors.items()})
  (tmp_path / "hf").mkdir()
  save_file(hf, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
  (tmp_path / "hf" / "config.json").write_text(json.dumps(reference.config.to_dict()))
  info = convert.hf_to_orbax(tmp_path / "hf", tmp_path / "ck", config=cfg, progress=False)
  assert info["extra_keys"] and all(k.startswith("model.audio_model.") for k in info["extra_keys"])

  model, stored = checkpoints.load(tmp_path / "ck")
  assert (stored.model.audio_projector.input_size, stored.model.audio_projector.hidden_size) == (32, 48)
  np.testing.assert_array_equal(np.asarray(model.audio_projection.linear_1.kernel.get_value()),
                                tensors["model.audio_projection.mlp.0.weight"].T)
  extra = checkpoints.load_extra(tmp_path / "ck")
  assert sorted(extra) == sorted(k for k in tensors if k.startswith("model.audio_model."))
  with pytest.warns(UserWarning, match="CMVN"):
    encoder = inputs.load_speech_encoder(_speech_config(), projector=model.audio_projection, sensevoice_tensors=extra)
  assert encoder.projector is model.audio_projection
  wav = _wav(tmp_path / "q.wav", 0.3, 4)
  np.testing.assert_array_equal(encoder(wav), fixture_encoder(wav))  # the same networks: measured bit-equal
  result, _, prompts = generate_from_inputs(model, vocab, tokenizer, "asr", wavs=[wav], speech_encoder=encoder,
                                            steps=4, region_len=8)
  embeds, _ = embed_prompts(model, prompts.ids, vocab.pad_id, prompts.features, prompts.audio_slots)
  np.testing.assert_array_equal(np.asarray(embeds[0])[prompts.audio_slots[0]], encoder(wav))  # measured bit-equal
  assert np.asarray(result.tokens).shape == (1, 8)


@pytest.mark.parametrize("task", ["s2i", "sqa"])
def test_demo_prompts_are_built_as_the_training_data_encodes_them(tmp_path, setup, task):
  """The demo's held-out prompts equal its training encoding up to the targets: s2i / sqa's user turn is the
  training template's "<|audio|>", not upstream inference's "\\n<|audio|>" (that extra newline, never seen in
  training, left the demo's S2I and SQA at chance)."""
  import types
  from omnidiff_jax.demo.evaluators import DemoManifest
  from omnidiff_jax.eval import generate
  model, vocab, tokenizer, encoder = setup
  question = _wav(tmp_path / "question.wav", 0.3, 5)
  reply = {"s2i": dict(images=["picture.png"]), "sqa": dict(audios=[_wav(tmp_path / "reply.wav", 0.2, 6)])}[task]
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "picture.png")
  messages = chat.task_messages(task, answer="two")
  line = dict(messages=messages, task=task, audios=[question] + reply.get("audios", []), images=reply.get("images", []))
  (tmp_path / "heldout.jsonl").write_text(json.dumps(line) + "\n")
  ctx = types.SimpleNamespace(vocab=vocab, tokenizer=tokenizer, speech_encoder=encoder)
  evaluator = DemoManifest(task, ml_collections.ConfigDict(dict(manifest=str(tmp_path / "heldout.jsonl"),
                                                                preset=task)), ctx)
  (request,), errors = generate.build_requests(evaluator, ctx, evaluator.samples(), {}, None)
  assert errors == [None]
  trained = chat.build_chat(messages, vocab, tokenizer, audio_slot_counts=[len(request.features)],
                            images=[[0] * 4] if task == "s2i" else (), speech_codes=[[0, 1]] if task == "sqa" else ())
  np.testing.assert_array_equal(request.ids, trained.ids[:np.flatnonzero(trained.target_mask)[0]])
  np.testing.assert_array_equal(request.slots, trained.audio_slots)
  upstream = inputs.build_prompts(task, vocab, tokenizer, wavs=[question], speech_encoder=encoder, cfg_scale=0.0)
  assert len(upstream.ids[0]) == len(request.ids) + 1  # upstream's inference prompt: the extra "\n"
