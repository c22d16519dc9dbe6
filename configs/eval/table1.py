"""Paper Table 1 (speech): LibriSpeech test-clean ASR WER 7.05, LibriTTS test-clean TTS WER 3.07 (Whisper-large-v3).

  python tools/eval.py --config configs/eval/table1.py --workdir /ckpt/eval/table1 --cpu_devices=0 \\
      --config.checkpoint=/ckpt/omni_orbax --config.tokenizer=/ckpt/Omni-Diffusion \\
      --config.networks.cmvn=/ckpt/SenseVoiceSmall/am.mvn --config.networks.speech_decoder=/ckpt/decoder_ours \\
      --config.networks.whisper_path=/ckpt/whisper-large-v3 \\
      --config.benchmarks.librispeech.root=/data/LibriSpeech --config.benchmarks.libritts.root=/data/LibriTTS
Each benchmark runs its preset as upstream's eval script (asr_eval, tts_eval); add settings to sweep them.
The TTS WER transcribes with Whisper as the paper does (asr_model="whisper"); without a Whisper directory,
--config.benchmarks.libritts.asr_model=self transcribes with our own model's ASR task (SenseVoice weights and am.mvn
in networks.sensevoice / networks.cmvn; not the paper's protocol, so not comparable with 3.07).
Local TFDS copies instead of the folders: --config.benchmarks.librispeech.tfds_data_dir=/data/tfds (and
.libritts.tfds_data_dir); tfds_name / tfds_split name the dataset and split, wav_dir caches LibriSpeech's audio.
"""
import ml_collections

from configs.eval.common import base_config


def get_config():
  cfg = base_config()
  cfg.benchmarks.librispeech = ml_collections.ConfigDict(dict(
      kind="librispeech", root="", split="test-clean", manifest="", tfds_data_dir="", tfds_name="librispeech",
      tfds_split="test_clean", wav_dir="", limit=0, paper=7.05))
  cfg.benchmarks.libritts = ml_collections.ConfigDict(dict(
      kind="libritts", root="", split="test-clean", manifest="", tfds_data_dir="", tfds_name="libritts",
      tfds_split="test_clean", asr_model="whisper", limit=0, paper=3.07))
  return cfg
