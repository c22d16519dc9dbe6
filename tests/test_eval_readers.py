"""Each benchmark reader on a tiny fake copy of its published layout, and its error on a broken one."""
import json
import pathlib

import numpy as np
import pytest
import soundfile
from PIL import Image

from configs.eval import table1
from fixtures import make_tfds_librispeech as tfds_fixture
from omnidiff_jax.eval import readers, runner
from omnidiff_jax.eval.evaluators import KINDS, Context

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def _wav(path, seconds=0.1, rate=16000):
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), np.zeros(int(seconds * rate), np.float32), rate)


def _image(path, size=(8, 8)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", size, (10, 20, 30)).save(path)


def test_librispeech(tmp_path):
  chapter = tmp_path / "LibriSpeech" / "test-clean" / "1089" / "134686"
  chapter.mkdir(parents=True)
  (chapter / "1089-134686.trans.txt").write_text("1089-134686-0000 HE HOPED THERE WOULD BE STEW\n"
                                                 "1089-134686-0001 STUFF IT INTO YOU\n")
  for utt in ("1089-134686-0000", "1089-134686-0001"):
    _wav(chapter / f"{utt}.flac")
  samples = readers.librispeech(str(tmp_path))
  assert [s.id for s in samples] == ["1089-134686-0000", "1089-134686-0001"]
  assert samples[0].reference == {"text": "HE HOPED THERE WOULD BE STEW"}
  assert samples[1].inputs["wav"].endswith("1089-134686-0001.flac")
  (chapter / "1089-134686-0001.flac").unlink()
  with pytest.raises(FileNotFoundError, match="trans.txt:2.*0001.flac"):
    readers.librispeech(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no split folder 'test-other'"):
    readers.librispeech(str(tmp_path), "test-other")


def test_libritts(tmp_path):
  chapter = tmp_path / "test-clean" / "121" / "121726"
  chapter.mkdir(parents=True)
  (chapter / "121_121726_000004_000003.normalized.txt").write_text("Also, a popular contrivance.\n")
  (chapter / "121_121726_000004_000003.original.txt").write_text("Also, a popular contrivance.\n")
  _wav(chapter / "121_121726_000004_000003.wav")
  (samples,) = readers.libritts(str(tmp_path))
  assert samples.id == "121_121726_000004_000003"
  assert samples.inputs == {"text": "Also, a popular contrivance."}
  assert samples.reference["text"] == "Also, a popular contrivance." and samples.reference["wav"].endswith(".wav")


# Utterance id -> (seconds, transcript), listed out of order: readers sort by id.
TFDS_UTTERANCES = {"1089-134686-0002": (0.3, "HE WAS IN A FEVERED STATE OF MIND"),
                   "1089-134686-0000": (0.2, "HE HOPED THERE WOULD BE STEW"),
                   "1089-134686-0001": (0.1, "STUFF IT INTO YOU")}


def _speech(seconds, seed):
  return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 3000).astype(np.int16)


@pytest.fixture(scope="module")
def fake_tfds(tmp_path_factory):
  """LibriSpeech- and LibriTTS-shaped TFDS datasets (ArrayRecord) built here, with Tensor / Text features as in
  tests/test_data_offline.py (the real datasets' Audio features need TensorFlow to build and read)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = tmp_path_factory.mktemp("tfds")

  class FakeLibrispeech(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("2.1.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "speech": tfds.features.Tensor(shape=(None,), dtype=np.int16), "text": tfds.features.Text(),
          "id": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"test_clean": self._generate_examples()}

    def _generate_examples(self):
      for seed, (key, (seconds, text)) in enumerate(TFDS_UTTERANCES.items()):
        yield key, {"speech": _speech(seconds, seed), "text": text, "id": key}

  class FakeLibritts(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.1")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "text_normalized": tfds.features.Text(), "text_original": tfds.features.Text(),
          "id": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"test_clean": self._generate_examples()}

    def _generate_examples(self):
      yield "b", {"text_normalized": "Also, a popular contrivance.", "text_original": "Also, a popular contrivance.",
                  "id": "121_121726_000004_000003"}
      yield "a", {"text_normalized": "", "text_original": "", "id": "121_121726_000004_000005"}

  for builder in (FakeLibrispeech, FakeLibritts):
    builder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return data_dir


def test_librispeech_tfds(fake_tfds, tmp_path):
  samples = readers.librispeech_tfds(str(fake_tfds), str(tmp_path / "wavs"), name="fake_librispeech")
  assert [s.id for s in samples] == sorted(TFDS_UTTERANCES)
  for seed, (key, (seconds, text)) in enumerate(TFDS_UTTERANCES.items()):
    (sample,) = [s for s in samples if s.id == key]
    assert sample.reference == {"text": text}
    wave, rate = soundfile.read(sample.inputs["wav"], dtype="int16")
    assert rate == 16000 and np.array_equal(wave, _speech(seconds, seed))  # the dataset's samples, unchanged
  assert [s.id for s in readers.librispeech_tfds(str(fake_tfds), str(tmp_path / "w2"), name="fake_librispeech",
                                                 limit=2)] == sorted(TFDS_UTTERANCES)[:2]
  with pytest.raises(FileNotFoundError, match="split 'test_other'.*tfds build fake_librispeech"):
    readers.librispeech_tfds(str(fake_tfds), str(tmp_path / "wavs"), split="test_other", name="fake_librispeech")
  with pytest.raises(FileNotFoundError, match="TFDS librispeech.*no directory"):
    readers.librispeech_tfds(str(tmp_path / "absent"), str(tmp_path / "wavs"))


def test_libritts_tfds_and_the_evaluators_tfds_fields(fake_tfds, tmp_path):
  with pytest.raises(ValueError, match="example '121_121726_000004_000005': empty or missing 'text_normalized'"):
    readers.libritts_tfds(str(fake_tfds), name="fake_libritts")
  (sample,) = readers.libritts_tfds(str(fake_tfds), name="fake_libritts", limit=1)  # the empty one sorts last
  assert sample.id == "121_121726_000004_000003" and sample.inputs == {"text": "Also, a popular contrivance."}
  assert sample.reference == {"text": "Also, a popular contrivance.", "wav": None}
  cfg = table1.get_config()
  cfg.networks.whisper_path = str(tmp_path)
  for name in ("config.json", "preprocessor_config.json"):
    (tmp_path / name).write_text("{}")
  cfg.benchmarks.librispeech.update(tfds_data_dir=str(fake_tfds), tfds_name="fake_librispeech",
                                    wav_dir=str(tmp_path / "wavs"))
  cfg.benchmarks.libritts.update(tfds_data_dir=str(fake_tfds), tfds_name="fake_libritts")
  runner.check_config(cfg)  # tfds_data_dir alone is a source
  ctx = Context(None, None, None, cfg.networks)
  asr = KINDS["librispeech"]("librispeech", cfg.benchmarks.librispeech, ctx)
  assert [s.id for s in asr.samples()] == sorted(TFDS_UTTERANCES)
  assert sorted(p.name for p in (tmp_path / "wavs").iterdir()) == [k + ".wav" for k in sorted(TFDS_UTTERANCES)]
  with pytest.raises(ValueError, match="empty or missing 'text_normalized'"):
    KINDS["libritts"]("libritts", cfg.benchmarks.libritts, ctx).samples()


def test_librispeech_tfds_audio_feature_as_tfds_builds_it(tmp_path):
  """tests/fixtures/tfds: TFDS's own librispeech builder run on a two-utterance LibriSpeech (Audio features,
  FLAC; configs 'default' and 'lazy_decode'; tests/fixtures/make_tfds_librispeech.py). With TensorFlow both configs
  read back sample for sample; without it (CI) the reader says TensorFlow is needed."""
  pytest.importorskip("tensorflow_datasets")
  data_dir = str(FIXTURES / "tfds")
  for config in ("default", "lazy_decode"):
    name = f"fake_librispeech/{config}"
    try:
      import tensorflow  # noqa: F401
    except ModuleNotFoundError:
      with pytest.raises(ModuleNotFoundError, match=f"TFDS {name}/test_clean.*need TensorFlow.*tensorflow-cpu"):
        readers.librispeech_tfds(data_dir, str(tmp_path / config), name=name)
      continue
    samples = readers.librispeech_tfds(data_dir, str(tmp_path / config), name=name)
    assert [s.id for s in samples] == sorted(tfds_fixture.UTTERANCES)
    for sample in samples:
      seconds, text, seed = tfds_fixture.UTTERANCES[sample.id]
      wave, rate = soundfile.read(sample.inputs["wav"], dtype="int16")
      assert sample.reference == {"text": text}
      assert rate == 16000 and np.array_equal(wave, tfds_fixture.speech(seconds, seed)), (config, sample.id)


def test_mme_upstream_and_release_layouts(tmp_path):
  results = tmp_path / "eval_tool" / "Your_Results"
  results.mkdir(parents=True)
  (results / "existence.txt").write_text("a.jpg\tIs there a dog?\tYes\na.jpg\tIs there a cat?\tNo\n")
  (results / "OCR.txt").write_text("b.png\tDoes it say hi?\tYes\nb.png\tDoes it say no?\tNo\n")
  _image(tmp_path / "images" / "existence" / "a.jpg")  # upstream's layout
  _image(tmp_path / "OCR" / "images" / "b.png")  # the MME release's
  samples = readers.mme(str(tmp_path))
  assert [s.id for s in samples] == ["OCR/00001", "OCR/00002", "existence/00001", "existence/00002"]
  assert samples[2].inputs["text"] == "Is there a dog?" and samples[2].inputs["image"].endswith("existence/a.jpg")
  assert samples[3].reference == {"answer": "No", "subtask": "existence", "image_name": "a.jpg",
                                  "question": "Is there a cat?"}
  assert [s.id for s in readers.mme(str(tmp_path), ("existence",))] == ["existence/00001", "existence/00002"]
  (results / "count.txt").write_text("c.jpg\tOne?\tYes\n")
  with pytest.raises(ValueError, match="count.txt: 1 questions; MME has two per image"):
    readers.mme(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="Your_Results"):
    readers.mme(str(tmp_path / "nowhere"))


def test_pope(tmp_path):
  coco = tmp_path / "val2014"
  _image(coco / "COCO_val2014_000000000042.jpg")
  lines = [dict(question_id=1, image="COCO_val2014_000000000042.jpg", text="Is there a dog in the image?",
                label="yes"),
           dict(question_id=2, image="COCO_val2014_000000000042.jpg", text="Is there a cat in the image?",
                label="no")]
  for split in ("random", "popular"):
    (tmp_path / f"coco_pope_{split}.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
  samples = readers.pope(str(tmp_path), str(coco), ("random", "popular"))
  assert [s.id for s in samples] == ["random/1", "random/2", "popular/1", "popular/2"]
  assert samples[1].reference == {"label": "no", "split": "random"}
  assert samples[1].inputs["text"] == "Is there a cat in the image?"
  with pytest.raises(FileNotFoundError, match="adversarial"):
    readers.pope(str(tmp_path), str(coco))
  (tmp_path / "coco_pope_random.json").write_text(json.dumps(dict(lines[0], label="maybe")) + "\n")
  with pytest.raises(ValueError, match="coco_pope_random.json:1: label"):
    readers.pope(str(tmp_path), str(coco), ("random",))


def test_coco_captions_subset_is_seeded(tmp_path):
  images = tmp_path / "val2014"
  for i in range(3):
    _image(images / f"COCO_val2014_{i:012d}.jpg")
  data = dict(images=[dict(id=i, file_name=f"COCO_val2014_{i:012d}.jpg") for i in range(3)],
              annotations=[dict(id=10 + k, image_id=k % 3, caption=f" caption {k} ") for k in range(6)])
  path = tmp_path / "captions_val2014.json"
  path.write_text(json.dumps(data))
  everything = readers.coco_captions(str(path), str(images))
  assert [s.id for s in everything] == [str(10 + k) for k in range(6)]
  assert everything[4].inputs == {"text": "caption 4"} and everything[4].reference["image"].endswith("0001.jpg")
  subset = readers.coco_captions(str(path), str(images), limit=3, seed=1)
  assert len(subset) == 3 and subset == readers.coco_captions(str(path), str(images), limit=3, seed=1)
  assert {s.id for s in subset} < {s.id for s in everything}
  data["annotations"].append(dict(id=99, image_id=7, caption="x"))
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match="annotation 99 names image_id 7"):
    readers.coco_captions(str(path), str(images))


def test_seed2plus(tmp_path):
  _image(tmp_path / "images" / "charts" / "1.png")
  question = dict(question_id="c1", question="What is the peak?", choice_A="10", choice_B="20", choice_C="30",
                  choice_D="40", answer="C", data_id="charts/1.png", question_image_type="charts")
  path = tmp_path / "seed2plus.json"
  path.write_text(json.dumps({"data": [question]}))
  (sample,) = readers.seed2plus(str(path), str(tmp_path / "images"))
  assert sample.id == "c1" and sample.reference == {"answer": "C", "choices": ["10", "20", "30", "40"],
                                                    "type": "charts"}
  assert sample.inputs["text"].startswith("What is the peak?\nA. 10\nB. 20\nC. 30\nD. 40\nAnswer with")
  path.write_text(json.dumps([{k: v for k, v in question.items() if k != "choice_D"}]))
  with pytest.raises(ValueError, match="question 0 lacks \\['choice_D'\\]"):
    readers.seed2plus(str(path), str(tmp_path / "images"))


def test_manifest(tmp_path):
  _wav(tmp_path / "a.wav")
  _image(tmp_path / "q.png")
  _image(tmp_path / "out.png")
  rows = [
      dict(messages=[dict(role="user", content="Convert the speech to text.\n<|audio|>"),
                     dict(role="assistant", content="hello world")], audios=["a.wav"]),
      dict(messages=[dict(role="user", content="Convert the text to speech.\nGood morning."),
                     dict(role="assistant", content="<|audio|>")], audios=["a.wav"]),
      dict(messages=[dict(role="user", content="What colour?\n<|image|>"), dict(role="assistant", content="Red")],
           images=["q.png"]),
      dict(messages=[dict(role="user", content="Generate an image based on the provided text description.\nA bus"),
                     dict(role="assistant", content="<|image|>")], images=["out.png"]),
  ]
  path = tmp_path / "eval.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "\n" + "".join(json.dumps(r) + "\n"
                                                                                  for r in rows[2:]))
  asr, tts, vqa, t2i = readers.manifest(str(path))
  assert asr.id == "eval.jsonl:1" and asr.inputs == {"wav": str(tmp_path / "a.wav")}
  assert asr.reference == {"text": "hello world", "task": "asr"}
  assert tts.inputs == {"text": "Good morning."}
  assert tts.reference == {"text": "Good morning.", "task": "tts", "wav": str(tmp_path / "a.wav")}  # the reply's speech
  assert vqa.id == "eval.jsonl:4" and vqa.inputs == {"text": "What colour?", "image": str(tmp_path / "q.png")}
  assert vqa.reference["text"] == "Red"
  assert t2i.inputs == {"text": "A bus"} and t2i.reference["image"] == str(tmp_path / "out.png")
  path.write_text(json.dumps(dict(messages=[dict(role="user", content="hi")])) + "\n")
  with pytest.raises(ValueError, match="eval.jsonl:1: no assistant turn"):
    readers.manifest(str(path))
