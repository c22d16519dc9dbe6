"""Media loading, manifest validation, sample encoding and the bad-input policy (issue 7, item 4)."""
import json

import numpy as np
import PIL.Image
import pytest
import soundfile

from omnidiff_jax import tasks
from omnidiff_jax.data import manifest, media
from omnidiff_jax.data.encode import SampleEncoder
from omnidiff_jax.data.errors import BadInputError, BadInputPolicy, BadSample
from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS
from tests.fixtures.data.fakes import FakeMediaTokenizer, text_tokenizer_and_layout

FEATURE_DIM = 8


@pytest.fixture
def vocab():
  return text_tokenizer_and_layout()[1]


@pytest.fixture
def encoder(vocab):
  return SampleEncoder(vocab, text_tokenizer_and_layout()[0], FakeMediaTokenizer(vocab, FEATURE_DIM),
                       feature_dim=FEATURE_DIM)


def _sine(rate, seconds=0.5, channels=1, freq=440.0):
  t = np.arange(int(rate * seconds)) / rate
  wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_audio_stereo_44k_is_averaged_and_resampled(tmp_path):
  path = str(tmp_path / "stereo.wav")
  left, right = _sine(44_100, freq=1000.0), _sine(44_100, freq=1000.0) * 0.5
  soundfile.write(path, np.stack([left, right], axis=1), 44_100, subtype="FLOAT")
  wave = media.load_audio(path)
  assert wave.dtype == np.float32 and wave.ndim == 1
  assert len(wave) == int(np.ceil(len(left) * 160 / 441))
  expected = 0.75 * 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(len(wave)) / 16_000)
  # Polyphase resampling is exact up to the FIR edge effects (first/last ~50 samples).
  np.testing.assert_allclose(wave[100:-100], expected[100:-100], atol=2e-3)


def test_audio_8k_int16_upsampled(tmp_path):
  path = str(tmp_path / "low.wav")
  soundfile.write(path, (_sine(8_000) * 32767).astype(np.int16), 8_000, subtype="PCM_16")
  wave = media.load_audio(path)
  assert len(wave) == 8_000
  expected = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(8_000) / 16_000)
  np.testing.assert_allclose(wave[100:-100], expected[100:-100], atol=2e-3)


def test_image_resize_and_center_crop(tmp_path):
  # 96 x 48 (W x H): left third red, middle green, right third blue -> the centre crop is all green.
  pixels = np.zeros((48, 96, 3), np.uint8)
  pixels[:, :32, 0], pixels[:, 32:64, 1], pixels[:, 64:, 2] = 255, 200, 255
  PIL.Image.fromarray(pixels).save(tmp_path / "wide.png")
  image = media.load_image(str(tmp_path / "wide.png"), 32)
  assert image.shape == (32, 32, 3) and image.dtype == np.float32
  np.testing.assert_allclose(image[:, 8:24], np.broadcast_to([-1.0, 200 / 127.5 - 1, -1.0], (32, 16, 3)),
                             atol=1e-6)


def _media_files(tmp_path):
  """Good and broken media files used by the manifests below."""
  soundfile.write(tmp_path / "ok.wav", _sine(16_000), 16_000)
  soundfile.write(tmp_path / "stereo48k.wav", _sine(48_000, channels=2), 48_000)
  soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16_000)
  nan = _sine(16_000)
  nan[10] = np.nan
  soundfile.write(tmp_path / "nan.wav", nan, 16_000, subtype="FLOAT")
  (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
  PIL.Image.fromarray(np.full((300, 200, 3), 77, np.uint8)).save(tmp_path / "ok.png")
  (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
  np.save(tmp_path / "speech_codes.npy", np.arange(20) % 64)
  np.save(tmp_path / "feats.npy", np.ones((30, FEATURE_DIM), np.float32))
  np.save(tmp_path / "feats_bad_dim.npy", np.ones((30, FEATURE_DIM + 1), np.float32))
  (tmp_path / "codes.json").write_text(json.dumps(list(range(30))))


def _msgs(user, assistant="fine"):
  return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


GOOD = {
    "text": {"messages": _msgs("hello world")},
    "asr_file": {"messages": _msgs("Convert the speech to text.\n<|audio|>"), "audios": ["stereo48k.wav"]},
    "asr_features": {"messages": _msgs("Convert the speech to text.\n<|audio|>"),
                     "audios": [{"features": "feats.npy"}]},
    "tts_codes_json": {"messages": _msgs("Convert the text to speech.\nhello", "<|audio|>"),
                       "audios": [{"path": "ok.wav", "codes": "codes.json"}]},
    "t2i_file": {"messages": _msgs("Generate an image based on the provided text description.\na cat", "<|image|>"),
                 "images": ["ok.png"]},
    "vqa_inline": {"messages": _msgs("What is in the picture?\n<|image|>"), "images": [{"codes": [3] * 1024}]},
    "svqa": {"messages": [{"role": "system", "content": "Please response the input audio."},
                          *_msgs("<|audio|>\n<|image|>", "a cat\n<|audio|>")],
             "audios": ["ok.wav", {"codes": "speech_codes.npy"}], "images": ["ok.png"]},
}
GOOD_TASKS = {"text": "text", "asr_file": "asr", "asr_features": "asr", "tts_codes_json": "tts", "t2i_file": "t2i",
              "vqa_inline": "vqa", "svqa": "svqa"}

ASR, TTS, T2I = (tasks.get(name).chat[1].format(text="hi") for name in ("asr", "tts", "t2i"))
# name -> (manifest line, substring of the reason)
BAD = {
    "invalid_json": ('{"messages": [', "invalid JSON"),
    "not_object": ("[1, 2]", "expected a JSON object"),
    "unknown_key": (json.dumps({"messages": _msgs("hi"), "video": []}), "unknown keys"),
    "no_messages": (json.dumps({"audios": []}), "'messages' must be a non-empty list"),
    "message_shape": (json.dumps({"messages": [{"role": "user"}]}), "exactly 'role' and 'content'"),
    "bad_role": (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "is not one of"),
    "empty_text": (json.dumps({"messages": _msgs("   ")}), "empty text"),
    "no_assistant": (json.dumps({"messages": _msgs("hi")[:1]}), "no assistant turn"),
    "image_count": (json.dumps({"messages": _msgs("<|image|> <|image|>"), "images": ["ok.png"]}),
                    "2 <|image|> placeholder(s) in the messages but 1 images"),
    "audio_count": (json.dumps({"messages": _msgs("hello"), "audios": ["ok.wav"]}),
                    "0 <|audio|> placeholder(s) in the messages but 1 audios"),
    "bad_task": (json.dumps({"messages": _msgs("hi"), "task": "dance"}), "task 'dance' is not one of"),
    "no_task_fits": (json.dumps({"messages": _msgs("hi", "<|image|> <|audio|>"), "images": [{"codes": [1] * 256}],
                                 "audios": [{"codes": [1]}]}), "cannot infer the task: no task has"),
    "prompt_missing": (json.dumps({"messages": _msgs("What did they say?\n<|audio|>"), "audios": ["ok.wav"]}),
                       "fit ['asr'], but the user turn lacks their prompt text"),
    "media_key": (json.dumps({"messages": _msgs("<|audio|>"), "audios": [{"file": "ok.wav"}]}), "keys must be among"),
    "missing_image": (json.dumps({"messages": _msgs("<|image|>"), "images": ["nope.png"]}), "file not found"),
    "corrupt_image": (json.dumps({"messages": _msgs("<|image|>"), "images": ["corrupt.png"]}), "cannot decode"),
    "missing_audio": (json.dumps({"messages": _msgs(ASR), "audios": ["nope.wav"]}), "file not found"),
    "corrupt_audio": (json.dumps({"messages": _msgs(ASR), "audios": ["corrupt.wav"]}), "cannot decode"),
    "empty_audio": (json.dumps({"messages": _msgs(ASR), "audios": ["empty.wav"]}), "no samples"),
    "nan_audio": (json.dumps({"messages": _msgs(ASR), "audios": ["nan.wav"]}), "NaN or Inf"),
    "codes_range": (json.dumps({"messages": _msgs("<|image|>"), "images": [{"codes": [999] * 1024}]}),
                    "codes must lie in [0, 32)"),
    "codes_count": (json.dumps({"messages": _msgs(T2I, "<|image|>"), "images": [{"codes": [1] * 1024}]}),
                    "expected 256 codes, got 1024"),
    "codes_file_missing": (json.dumps({"messages": _msgs(TTS, "<|audio|>"), "audios": [{"codes": "x.npy"}]}),
                           "file not found"),
    "features_dim": (json.dumps({"messages": _msgs(ASR), "audios": [{"features": "feats_bad_dim.npy"}]}),
                     f"expected features of shape (T > 0, {FEATURE_DIM})"),
}


def _write_manifest(tmp_path, lines):
  path = tmp_path / "manifest.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _encode_all(path, encoder, policy):
  out = []
  for record in manifest.iter_records(path, policy):
    try:
      out.append((record, encoder.encode(record)))
    except BadSample as e:
      policy.handle(record.where, e)
  return out


def test_good_records_encode(tmp_path, encoder, vocab):
  _media_files(tmp_path)
  path = _write_manifest(tmp_path, [json.dumps(r) for r in GOOD.values()])
  policy = BadInputPolicy("error")
  encoded = _encode_all(path, encoder, policy)
  assert [TASKS[s["task_id"]] for _, s in encoded] == list(GOOD_TASKS.values())
  by_name = dict(zip(GOOD, (s for _, s in encoded)))
  newline, = text_tokenizer_and_layout()[0].encode("\n").ids
  for s in by_name.values():
    targets = s["labels"] != IGNORE_ID
    np.testing.assert_array_equal(s["labels"][targets], s["input_ids"][targets])
    assert s["input_ids"][targets][-2:].tolist() == [vocab.im_end_id, newline]  # targets end with <|im_end|> \n
    np.testing.assert_array_equal(s["input_ids"][s["feature_slots"]], vocab.special_id("<|context_of_audio|>"))
    assert s["audio_features"].shape == (len(s["feature_slots"]), FEATURE_DIM)
  # 0.5 s at 48 kHz stereo -> 8000 samples at 16 kHz -> 8 frames of 960 samples (fake 60 ms features).
  assert len(by_name["asr_file"]["feature_slots"]) == 8
  assert len(by_name["asr_features"]["feature_slots"]) == 30
  assert len(by_name["tts_codes_json"]["input_ids"]) > 30  # 30 speech codes from the json file
  np.testing.assert_array_equal(  # the user image of vqa: 1024 codes, assistant image of t2i: 256
      [int(((s["input_ids"] >= vocab.image_offset) & (s["input_ids"] < vocab.used_size)).sum())
       for s in (by_name["vqa_inline"], by_name["t2i_file"], by_name["svqa"])], [1024, 256, 1024])
  # One batched tokenizer call per kind / resolution when records are encoded together.
  records = [r for r, _ in encoded]
  encoder.tokenizer.calls.clear()
  batch = encoder.encode_batch(records)
  # 512 px user images, 256 px assistant images and user speech: one call each (speech codes are given).
  assert sorted(c[0] for c in encoder.tokenizer.calls) == ["features", "image", "image"]
  for (_, single), batched in zip(encoded, batch):
    np.testing.assert_array_equal(single["input_ids"], batched["input_ids"])


def test_bad_inputs_skipped_counted_and_located(tmp_path, encoder, caplog):
  _media_files(tmp_path)
  good = [json.dumps(r) for r in GOOD.values()]
  lines = good[:3] + [line for line, _ in BAD.values()] + good[3:]
  path = _write_manifest(tmp_path, lines)
  policy = BadInputPolicy("skip")
  encoded = _encode_all(path, encoder, policy)
  assert len(encoded) == len(GOOD)
  assert policy.skipped == len(BAD) >= 15
  for example, (name, (_, reason)) in zip(policy.examples, BAD.items()):
    line_number = 4 + list(BAD).index(name)
    assert example["where"] == f"{path}:{line_number}", name
    assert reason in example["reason"], (name, example["reason"])
  assert f"{path}:4" in caplog.text  # logged with file and line


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_error_names_file_and_line(tmp_path, encoder, name):
  _media_files(tmp_path)
  line, reason = BAD[name]
  path = _write_manifest(tmp_path, [json.dumps(GOOD["text"]), line])
  with pytest.raises(BadInputError) as info:
    _encode_all(path, encoder, BadInputPolicy("error"))
  assert info.value.where == f"{path}:2"
  assert reason in str(info.value) and str(info.value).startswith(f"{path}:2: ")


def test_media_without_codes_needs_a_tokenizer(tmp_path, vocab):
  _media_files(tmp_path)
  path = _write_manifest(tmp_path, [json.dumps(GOOD["t2i_file"]), json.dumps(GOOD["vqa_inline"])])
  policy = BadInputPolicy("skip")
  encoded = _encode_all(path, SampleEncoder(vocab, text_tokenizer_and_layout()[0], None, feature_dim=FEATURE_DIM), policy)
  assert len(encoded) == 1 and policy.skipped == 1
  assert "no media tokenizer configured" in policy.examples[0]["reason"]
