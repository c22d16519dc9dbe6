"""The demo's media networks, trained on the built-in corpus (omnidiff_jax.demo.corpus) with the model code of the
full-size ports and optax; configs/demo_media.py holds their shapes and training settings.

  magvit      MAGVIT-v2 (models/magvit): pixel MSE + Show-o's LFQ commitment and entropy losses, Adam, with a
              continuous-to-LFQ warm start. Reports held-out reconstruction PSNR and code usage. Saved as our
              converted safetensors (ImageTokenizer).
  whisper_vq  WhisperVQ (models/speech_in/whisper_vq): the encoder is frozen at its random initialisation (fixed
              seed); its codebook is k-means over the pre-quantiser features of the train speech, so the codes
              are deterministic and separate words. Saved with speech_in.params.save_params (SpeechTokenizer).
  sensevoice  SenseVoice (models/speech_in/sensevoice): frozen random weights (speech_in.params.fill_random,
              fixed seed) and a CMVN file (am.mvn format) of the train speech's LFR frames. The projector into the
              backbone is trained by the demo's stages, not here.
  classifier  the shape / colour CNN (omnidiff_jax.demo.classifier) that scores generated pictures.
  No speech decoder (codes -> audio) is trained: TTS is scored on codes (see the report's 'speech_decoder').

train_media_networks(corpus_dir, out_dir, cfg) trains whatever is not saved yet for the same corpus and network
config (resume), writes out_dir/media_report.json and returns the paths (`MediaPaths` keys);
media_tokenizers(paths) builds the omnidiff_jax.media_tokenizers.MediaTokenizers over them.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import configs
from omnidiff_jax.demo import classifier as classifier_lib
from omnidiff_jax.demo import corpus as corpus_lib
from omnidiff_jax.data import media

CONFIGS_DIR = os.path.dirname(os.path.abspath(configs.__file__))
NETWORKS = ("magvit", "whisper_vq", "sensevoice", "classifier")
SPEECH_DECODER_NOTE = ("no speech decoder (codes -> audio) is trained for the demo; TTS is scored on codes: the "
                       "generated WhisperVQ codes against the reference codes of the held-out spoken caption "
                       "(code accuracy / code edit distance)")


def config_spec(json_path: str) -> str:
  """The config-file spec (omnidiff_jax.config.load_config_file) of a config saved as JSON."""
  return f"{os.path.join(CONFIGS_DIR, 'from_json.py')}:{os.path.abspath(json_path)}"


# ----------------------------------------------------------------------------------------------- MAGVIT-v2


def lfq_losses(z: jax.Array, beta: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Lookup-free quantisation with its training losses, as Show-o's `LFQuantizer.forward`
  (showlab/Show-o models/modeling_magvitv2.py, vendored by Omni-Diffusion):

    z_q     = sign(z) (z == 0 -> -1, as codes_from_latents' bit 0), straight-through: z + stop_grad(z_q - z)
    commit  = mean((stop_grad(z_q) - z)^2) + beta * mean((z_q - stop_grad(z))^2)
    entropy = mean over bits and positions of H(softmax([-(z - 1)^2, -(z + 1)^2]))
              - mean over bits of H(that distribution averaged over positions)
  (upstream scales them by commit_loss_multiplier and entropy_multiplier, here the caller). z: (B, h, w, bits).
  Returns (z_q (B, h, w, bits), commit (), entropy ()).
  """
  hard = jnp.where(z > 0, 1.0, -1.0)
  z_q = z + jax.lax.stop_gradient(hard - z)
  logits = jnp.stack([-(z - 1.0) ** 2, -(z + 1.0) ** 2], axis=-1)            # (B, h, w, bits, 2)
  probs, log_probs = jax.nn.softmax(logits, -1), jax.nn.log_softmax(logits, -1)
  per_sample = -jnp.sum(probs * log_probs, -1).mean()
  mean_probs = probs.reshape(-1, z.shape[-1], 2).mean(0)                       # (bits, 2)
  codebook = -jnp.sum(mean_probs * jnp.log(jnp.maximum(mean_probs, 1e-12)), -1).mean()
  commit = jnp.mean((jax.lax.stop_gradient(z_q) - z) ** 2) + beta * jnp.mean((z_q - jax.lax.stop_gradient(z)) ** 2)
  return z_q, commit, per_sample - codebook


def train_magvit(images: np.ndarray, cfg: ml_collections.ConfigDict):
  """Trains a MagvitV2 (cfg: the `magvit` section) on pictures (N, H, W, 3) uint8. Returns (model, last losses).

  Loss: mean squared error of decoder(z_mix) over [-1, 1] pixels (no perceptual or GAN term) + commit_weight *
  commit + entropy_weight * entropy (lfq_losses). z_mix = z + q * (z_q - z) with q rising linearly from 0 to 1
  over the first quantize_ramp fraction of the steps (then pure LFQ): a warm start that lets the tiny model learn
  in a few hundred steps; upstream trains with q = 1 throughout. Adam, warm-up then cosine decay; horizontal flips.
  """
  from omnidiff_jax.models.magvit import modeling as magvit
  t = cfg.train
  model = magvit.MagvitV2(cfg.model, rngs=nnx.Rngs(t.seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps, t.steps, t.learning_rate * 0.1)
  optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, q):
    def loss_fn(model):
      z = model.encode_latents(x)
      z_q, commit, entropy = lfq_losses(z, t.beta)
      pixel = jnp.mean((model.decoder(z + q * (z_q - z)).astype(jnp.float32) - x) ** 2)
      return pixel + t.commit_weight * commit + t.entropy_weight * entropy, (pixel, commit, entropy)
    (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, parts

  rng = np.random.default_rng(t.seed)
  pixels = classifier_lib.to_unit_range(images)
  ramp_steps = max(t.quantize_ramp * t.steps, 1e-9)
  bar = tqdm(range(t.steps), desc="MAGVIT-v2", leave=False)
  for i in bar:
    x = pixels[rng.integers(len(pixels), size=t.batch_size)]
    x = np.where(rng.random((len(x), 1, 1, 1)) < 0.5, x[:, :, ::-1], x)   # horizontal flips
    loss, parts = step(model, optimizer, jnp.asarray(x), jnp.float32(min(1.0, i / ramp_steps)))
    if i % 10 == 0 or i == t.steps - 1:
      bar.set_postfix(loss=f"{float(loss):.3f}", mse=f"{float(parts[0]):.4f}")
  return model, dict(loss=float(loss), pixel_mse=float(parts[0]), commit=float(parts[1]), entropy=float(parts[2]))


def reconstruct(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pictures (N, H, W, 3) uint8 -> (codes (N, h*w) int32, reconstructions (N, H, W, 3) uint8)."""
  from omnidiff_jax.models.magvit import modeling as magvit
  codes = magvit.encode_batched(model, classifier_lib.to_unit_range(images), batch_size)
  decoded = magvit.decode_batched(model, codes, batch_size)
  return codes, np.round(decoded * 255).astype(np.uint8)


def psnr(reference: np.ndarray, images: np.ndarray) -> float:
  """Mean over pictures of 10 log10(255^2 / MSE), uint8 pictures (N, H, W, 3)."""
  mse = np.mean((reference.astype(np.float64) - images.astype(np.float64)) ** 2, axis=(1, 2, 3))
  return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def save_magvit(model, path: str) -> None:
  """Our converted-checkpoint layout (models/magvit/params.py), loadable by ImageTokenizer.from_config."""
  from safetensors.numpy import save_file

  from omnidiff_jax.models.magvit import params as magvit_params
  arrays = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  save_file(arrays, path, metadata={"format": magvit_params.FORMAT, "source": "omnidiff_jax.demo.media_training"})


def _magvit_part(corpus_dir: str, cfg, files: dict[str, str]) -> dict:
  from omnidiff_jax.media_tokenizers import ImageTokenizer
  train, _, _ = corpus_lib.load_pictures(corpus_dir, "train")
  heldout, _, _ = corpus_lib.load_pictures(corpus_dir, "heldout")
  model, losses = train_magvit(train, cfg.magvit)
  save_magvit(model, files["weights"])
  tokenizer = ImageTokenizer.from_config(cfg.magvit, files["weights"])   # the saved file, as users load it
  train_codes, train_recon = reconstruct(tokenizer.model, train, cfg.magvit.run.batch_size)
  heldout_codes, recon = reconstruct(tokenizer.model, heldout, cfg.magvit.run.batch_size)
  np.save(files["heldout_reconstructions"], recon)
  num_codes = tokenizer.num_codes
  used = np.unique(np.concatenate([train_codes.ravel(), heldout_codes.ravel()]))
  return dict(heldout_psnr_db=psnr(heldout, recon), train_psnr_db=psnr(train, train_recon),
              codes_used=int(used.size), codebook_size=num_codes,
              code_usage=used.size / num_codes, codes_per_image=int(train_codes.shape[1]), final_losses=losses)


# ----------------------------------------------------------------------------------------------- speech


def _speech_paths(corpus_dir: str, split: str) -> list[str]:
  """Every wav the split's manifests use, sorted."""
  paths = set()
  folder = os.path.join(corpus_dir, "manifests", split)
  for source in corpus_lib.SOURCES:
    with open(os.path.join(folder, f"{source}.jsonl"), encoding="utf-8") as f:
      for line in f:
        paths.update(os.path.normpath(os.path.join(folder, p)) for p in json.loads(line)["audios"])
  return sorted(paths)


def kmeans(vectors: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding (numpy PCG64(seed)). vectors (N, d) -> centroids (k, d) float32;
  an emptied cluster is re-seeded at the point farthest from its centroid."""
  if len(vectors) < k:
    raise ValueError(f"k-means needs at least codebook_size={k} feature vectors, got {len(vectors)}; "
                     "build a larger corpus (corpus.train_images / chat_train)")
  rng = np.random.default_rng(seed)
  x = vectors.astype(np.float64)
  sq = (x ** 2).sum(1)
  centroids = [x[rng.integers(len(x))]]
  dist = sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0]
  for _ in range(k - 1):
    probs = np.maximum(dist, 0)
    centroids.append(x[rng.choice(len(x), p=probs / probs.sum())])
    dist = np.minimum(dist, sq - 2 * x @ centroids[-1] + centroids[-1] @ centroids[-1])
  c = np.stack(centroids)
  for _ in range(iters):
    d = sq[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    assign = d.argmin(1)
    best = d[np.arange(len(x)), assign]
    for j in range(k):
      members = assign == j
      if members.any():
        c[j] = x[members].mean(0)
      else:
        far = best.argmax()
        c[j], best[far] = x[far], 0.0
  return c.astype(np.float32)


def _whisper_features(model, frontend, waves: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  """Pre-quantiser features (T_i, d) per wave, over the clip's own frames (the front end's frame mask, as
  whisper_vq.tokenize): each batch of clips is padded as the front end pads it (one compile per padded length);
  padding never changes valid rows (causal convs, padded keys masked)."""
  encode = nnx.jit(lambda m, x, mask: m.encode(x, mask))
  out = []
  for start in tqdm(range(0, len(waves), batch_size), desc="WhisperVQ features", leave=False):
    mels, frame_masks = frontend(waves[start:start + batch_size])     # (n, T, n_mels), (n, T)
    n = len(mels)
    x = np.zeros((batch_size, *mels.shape[1:]), np.float32)
    mask = np.zeros((batch_size, mels.shape[1]), np.int32)
    x[:n], mask[:n] = mels, frame_masks
    hidden, code_mask = jax.device_get(encode(model, jnp.asarray(x), jnp.asarray(mask)))
    out.extend(hidden[i][code_mask[i].astype(bool)] for i in range(n))
  return out


def _whisper_vq_part(corpus_dir: str, cfg, files: dict[str, str]) -> dict:
  from omnidiff_jax.media_tokenizers import SpeechTokenizer
  from omnidiff_jax.models.speech_in import params as speech_in, whisper_vq
  from omnidiff_jax.models.speech_in.frontend import WhisperFrontend
  c, f = cfg.whisper_vq, cfg.whisper_vq.frontend
  model = whisper_vq.WhisperVQEncoder(c.encoder, rngs=nnx.Rngs(c.train.seed))
  frontend = WhisperFrontend(n_mels=f.n_mels, n_fft=f.n_fft, hop_length=f.hop_length, sample_rate=f.sample_rate,
                             pad_to_multiple_of=f.pad_to_multiple_of)
  waves = [media.load_audio(p) for p in _speech_paths(corpus_dir, "train")]
  features = _whisper_features(model, frontend, waves, f.batch_size)
  codebook = kmeans(np.concatenate(features), c.encoder.codebook_size, c.train.kmeans_iters, c.train.seed)
  model.codebook.set_value(jnp.asarray(codebook))
  speech_in.save_params(model, files["weights"])
  SpeechTokenizer.from_config(c, files["weights"]).encode_speech(waves[:1])   # the saved file loads and runs
  # Every clip's features in one call (one compile; the quantiser is row by row).
  codes = np.asarray(whisper_vq.vector_quantize(jnp.asarray(np.concatenate(features)[None]), jnp.asarray(codebook))[0])
  used = np.unique(codes)
  seconds = sum(map(len, waves)) / corpus_lib.speech.SAMPLE_RATE
  return dict(codes_used=int(used.size), codebook_size=int(c.encoder.codebook_size),
              code_usage=used.size / c.encoder.codebook_size, train_clips=len(waves),
              codes_per_second=len(codes) / seconds,
              encoder=f"frozen random initialisation (seed {c.train.seed}); codebook: k-means of its features")


def write_cmvn(path: str, shift: np.ndarray, scale: np.ndarray) -> None:
  """A Kaldi nnet am.mvn (<AddShift> then <Rescale>, as SenseVoiceSmall's) that frontend.load_cmvn reads."""
  vec = lambda v: " ".join(f"{x:.6g}" for x in v)
  d = len(shift)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"<Nnet>\n<Splice> {d} {d}\n[ 0 ]\n<AddShift> {d} {d}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
            f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n")


def _sensevoice_part(corpus_dir: str, cfg, files: dict[str, str]) -> dict:
  from omnidiff_jax.media_tokenizers import SpeechFeaturizer
  from omnidiff_jax.models.speech_in import params as speech_in
  from omnidiff_jax.models.speech_in.frontend import SenseVoiceFrontend
  c = cfg.sensevoice
  encoder = speech_in.model_for("sensevoice", c)
  speech_in.fill_random(encoder, c.seed)
  speech_in.save_params(encoder, files["weights"])
  frontend = SenseVoiceFrontend.from_config(c.frontend, "")    # no CMVN: its statistics are computed here
  waves = [media.load_audio(p) for p in _speech_paths(corpus_dir, "train")]
  frames = np.concatenate([frontend(w, corpus_lib.speech.SAMPLE_RATE) for w in waves])
  write_cmvn(files["cmvn"], -frames.mean(0), 1.0 / np.maximum(frames.std(0), 1e-5))
  featurizer = SpeechFeaturizer.from_config(c, files["weights"], files["cmvn"])   # the saved files, as users load them
  features = featurizer.speech_features(waves[:1])[0]
  return dict(encoder=f"frozen random weights (speech_in.params.fill_random, seed {c.seed}); CMVN of the train speech",
              feature_dim=featurizer.feature_dim, cmvn_frames=int(len(frames)),
              example_features_shape=list(features.shape))


def _classifier_part(corpus_dir: str, cfg, files: dict[str, str]) -> dict:
  from omnidiff_jax.media_tokenizers import ImageTokenizer
  train, train_shapes, train_colours = corpus_lib.load_pictures(corpus_dir, "train")
  heldout, shapes, colours = corpus_lib.load_pictures(corpus_dir, "heldout")
  model = classifier_lib.train_classifier(train, train_shapes, train_colours, cfg.corpus.shapes, cfg.corpus.colours,
                                          cfg.classifier)
  model.save(files["weights"])
  model = classifier_lib.ShapeColourClassifier.load(files["weights"])
  report = dict(heldout_accuracy=model.accuracy(heldout, shapes, colours),
                chance=dict(shape=1 / len(cfg.corpus.shapes), colour=1 / len(cfg.corpus.colours)))
  magvit = ImageTokenizer.from_config(cfg.magvit, files["magvit_weights"])
  _, recon = reconstruct(magvit.model, heldout, cfg.magvit.run.batch_size)
  report["heldout_magvit_reconstruction_accuracy"] = model.accuracy(recon, shapes, colours)
  return report


# ----------------------------------------------------------------------------------------------- entry points

_PARTS: dict[str, Callable[[str, ml_collections.ConfigDict, dict[str, str]], dict]] = dict(
    magvit=_magvit_part, whisper_vq=_whisper_vq_part, sensevoice=_sensevoice_part, classifier=_classifier_part)
# File names under out_dir per network (the classifier part reads the MAGVIT weights to score reconstructions).
FILES = dict(
    magvit=dict(weights="magvit.safetensors", heldout_reconstructions="magvit_heldout_reconstructions.npy"),
    whisper_vq=dict(weights="whisper_vq.safetensors"),
    sensevoice=dict(weights="sensevoice.safetensors", cmvn="sensevoice_am.mvn"),
    classifier=dict(weights="classifier.safetensors", magvit_weights="magvit.safetensors"))
# Config sections whose change retrains a network (besides the corpus).
_KEYED_BY = dict(magvit=("magvit",), whisper_vq=("whisper_vq",), sensevoice=("sensevoice",),
                 classifier=("classifier", "magvit"))


def _section_json(cfg: ml_collections.ConfigDict, name: str) -> dict:
  return json.loads(cfg[name].to_json(sort_keys=True))


def media_paths(out_dir: str, cfg: ml_collections.ConfigDict) -> dict:
  """What train_media_networks returns: config specs (configs/from_json.py:<json>) and weight files of the
  networks, the CMVN file, the report, and the sizes the backbone's vocabulary and projector need."""
  join = lambda name: os.path.join(os.path.abspath(out_dir), name)
  return dict(
      magvit_config=config_spec(join("magvit.json")), magvit_weights=join(FILES["magvit"]["weights"]),
      whisper_vq_config=config_spec(join("whisper_vq.json")), whisper_vq_weights=join(FILES["whisper_vq"]["weights"]),
      sensevoice_config=config_spec(join("sensevoice.json")), sensevoice_weights=join(FILES["sensevoice"]["weights"]),
      cmvn_file=join(FILES["sensevoice"]["cmvn"]), sensevoice_seed=int(cfg.sensevoice.seed),
      classifier_weights=join(FILES["classifier"]["weights"]), report=join("media_report.json"),
      num_image_codes=2 ** int(cfg.magvit.model.z_channels), num_audio_codes=int(cfg.whisper_vq.encoder.codebook_size),
      feature_dim=int(cfg.sensevoice.encoder.output_size), image_resolution=int(cfg.magvit.image.resolution))


def train_media_networks(corpus_dir: str, out_dir: str, cfg: ml_collections.ConfigDict) -> dict:
  """Trains the media networks on the corpus at corpus_dir (built by corpus.build_corpus with cfg.corpus) into
  out_dir, skipping each one already saved there for the same corpus and config; writes out_dir/media_report.json
  (PSNR, code usage, classifier accuracy, CPU / wall seconds per network) and returns media_paths(out_dir, cfg).

  cfg: a demo config (configs/demo_media.py).
  """
  summary_path = os.path.join(corpus_dir, "corpus.json")
  if not os.path.isfile(summary_path):
    raise FileNotFoundError(f"{summary_path} not found: build the corpus first (omnidiff_jax.demo.corpus.build_corpus)")
  with open(summary_path, encoding="utf-8") as f:
    corpus_summary = json.load(f)
  if corpus_summary["config"] != _section_json(cfg, "corpus"):
    raise ValueError(f"{corpus_dir} was built with another corpus config than cfg.corpus; rebuild it with "
                     "build_corpus(corpus_dir, cfg) (or pass the config it was built with)")
  os.makedirs(out_dir, exist_ok=True)
  report = {}
  for name in NETWORKS:
    files = {k: os.path.join(out_dir, v) for k, v in FILES[name].items()}
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
      f.write(cfg[name].to_json(sort_keys=True, indent=1))
    key = dict(corpus=corpus_summary["config"], **{s: _section_json(cfg, s) for s in _KEYED_BY[name]})
    part_path = os.path.join(out_dir, f"{name}_report.json")
    if os.path.isfile(part_path):
      with open(part_path, encoding="utf-8") as f:
        saved = json.load(f)
      if saved["key"] == key and all(os.path.isfile(p) for p in files.values()):
        report[name] = saved["report"]
        continue
    cpu, wall = time.process_time(), time.perf_counter()
    result = _PARTS[name](corpus_dir, cfg, files)
    result.update(cpu_seconds=round(time.process_time() - cpu, 2), wall_seconds=round(time.perf_counter() - wall, 2))
    with open(part_path, "w", encoding="utf-8") as f:
      json.dump(dict(key=key, report=result), f, indent=1, sort_keys=True)
    report[name] = result
  report.update(speech_decoder=SPEECH_DECODER_NOTE, synthesiser=corpus_summary["synthesiser"])
  paths = media_paths(out_dir, cfg)
  with open(paths["report"], "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, sort_keys=True)
  return paths


def media_tokenizers(paths: dict):
  """omnidiff_jax.media_tokenizers.MediaTokenizers over the trained networks (`paths` from train_media_networks),
  the same ones tools/tokenize_data.py builds from the flags --magvit_config=paths['magvit_config'],
  --magvit=paths['magvit_weights'], ... --cmvn=paths['cmvn_file']."""
  from omnidiff_jax.media_tokenizers import MediaTokenizers
  return MediaTokenizers.from_configs(
      magvit=paths["magvit_config"], whisper_vq=paths["whisper_vq_config"], sensevoice=paths["sensevoice_config"],
      magvit_weights=paths["magvit_weights"], whisper_vq_weights=paths["whisper_vq_weights"],
      sensevoice_weights=paths["sensevoice_weights"], cmvn_file=paths["cmvn_file"], seed=paths["sensevoice_seed"])
