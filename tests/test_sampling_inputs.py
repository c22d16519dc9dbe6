"""Media inputs of the sampling API (omnidiff_jax.sampling.inputs): images through MAGVIT-v2 into the prompt ids,
user speech through WavFrontend + SenseVoice + projector into the prompt embeddings, s2i's CFG prompt."""
import pathlib

import jax.numpy as jnp
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


@pytest.fixture(scope="module")
def setup():
  """A tiny random backbone 48 wide, its tokenizer, and the tiny SenseVoice + projector of the parity fixture
  loaded from Omni-checkpoint-style tensors ('model.audio_model.model.*', 'model.audio_projection.*')."""
  cfg = tiny.get_config()
  cfg.vocab = cfglib.vocab_config(**VOCAB)
  cfg.model.vocab_size, cfg.model.hidden_size = cfg.vocab.size, 48
  vocab = VocabLayout.from_config(cfg.vocab)
  data = np.load(FIXTURES / "speech_in_sensevoice.npz")
  extra = {k[3:]: data[k] for k in data.files if k.startswith("sd/")}
  speech_cfg = sensevoice_tiny.get_config()
  speech_cfg.projector.hidden_size = 48
  with pytest.warns(UserWarning, match="CMVN"):
    encoder = inputs.load_speech_encoder(speech_cfg, extra=extra)
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
  codes = image_processing.encode_files(magvit, paths, 32, batch_size=2)   # 32 px, f = 4: 8 x 8 codes each
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
    direct = np.asarray(encoder.projector(jnp.asarray(sensevoice.encode_features(encoder.encoder, [frames])[0])))
    ids, slots = prompts.ids[row], prompts.audio_slots[row]
    assert len(slots) == len(frames) + 4 == direct.shape[0]                    # T_lfr + 4 slots
    assert (ids[slots] == context).all() and (ids == context).sum() == len(slots)
    offset = length - len(ids)
    assert not mask[row, :offset].any() and mask[row, offset:].all()
    row_embeds = np.asarray(embeds[row, offset:])
    np.testing.assert_allclose(row_embeds[slots], direct, rtol=1e-5, atol=1e-5)
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
  with pytest.warns(UserWarning, match="random sensevoice"):
    encoder = inputs.load_speech_encoder(cfg, seed=3)
  again = inputs.load_speech_encoder(cfg, seed=3)
  wav = _wav(tmp_path / "r.wav", 0.2, 0)
  features = encoder(wav)
  assert features.shape == (len(encoder.features(wav)) + 4, cfg.projector.hidden_size) and np.isfinite(features).all()
  np.testing.assert_array_equal(features, again(wav))
  with pytest.raises(ValueError, match="SenseVoice: no key ending in 'encoder.after_norm.weight'"):
    inputs.load_speech_encoder(cfg, extra={"model.embed_tokens.weight": np.zeros((4, 4), np.float32)})


def test_the_models_own_projector_replaces_the_checkpoints(tmp_path):
  """A training checkpoint's backbone owns the trained projector (DreamModel.audio_projection): it is used instead
  of the carried-through (untrained) tensors."""
  from omnidiff_jax.models.speech_in import params as speech_in
  cfg = sensevoice_tiny.get_config()
  cfg.projector.hidden_size = 48  # the fixture's projector
  data = np.load(FIXTURES / "speech_in_sensevoice.npz")
  extra = {k[3:]: data[k] for k in data.files if k.startswith("sd/")}
  trained = speech_in.model_for("projector", cfg)
  speech_in.fill_random(trained, seed=7)
  with pytest.warns(UserWarning, match="CMVN"):
    from_checkpoint = inputs.load_speech_encoder(cfg, extra=extra)
  with pytest.warns(UserWarning, match="CMVN"):
    with_trained = inputs.load_speech_encoder(cfg, extra=extra, projector=trained)
  wav = _wav(tmp_path / "p.wav", 0.3, 2)
  encoded = jnp.asarray(sensevoice.encode_features(with_trained.encoder, [with_trained.features(wav)])[0])
  np.testing.assert_allclose(with_trained(wav), np.asarray(trained(encoded)), rtol=1e-5, atol=1e-6)
  assert np.abs(with_trained(wav) - from_checkpoint(wav)).max() > 1e-3
