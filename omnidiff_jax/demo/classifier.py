"""A small shape + colour CNN trained on the demo corpus's pictures; it scores generated T2I / S2I pictures.

  images (B, H, W, 3) uint8 -> [-1, 1] -> conv3x3 + ReLU (+ 2x2 average pool between convs) x len(widths)
  -> [global mean, global max] -> Linear(hidden) + ReLU -> shape logits (B, S), colour logits (B, C)

Trained with optax Adam on the train pictures with Gaussian pixel noise and horizontal flips (generated pictures
come out of the MAGVIT-v2 decoder slightly noisy); saved as one safetensors file whose metadata holds the label
names and the network shape.
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

FORMAT = "omnidiff_jax.demo.classifier"
NOISE_STD = 0.05     # augmentation noise on [-1, 1] pixels


class ShapeColourNet(nnx.Module):
  """See the module docstring. x: (B, H, W, 3) float32 in [-1, 1] -> ((B, S), (B, C)) logits."""

  def __init__(self, num_shapes: int, num_colours: int, widths: tuple[int, ...], hidden: int, *, rngs: nnx.Rngs):
    channels = (3,) + tuple(widths)
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(channels[:-1], channels[1:])])
    self.hidden = nnx.Linear(2 * channels[-1], hidden, rngs=rngs)
    self.shape_head = nnx.Linear(hidden, num_shapes, rngs=rngs)
    self.colour_head = nnx.Linear(hidden, num_colours, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    for i, conv in enumerate(self.convs):
      x = jax.nn.relu(conv(x))
      if i + 1 < len(self.convs):
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    h = jax.nn.relu(self.hidden(jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)))
    return self.shape_head(h), self.colour_head(h)


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 (B, H, W, 3) -> float32 in [-1, 1]."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


@nnx.jit
def _predict(net: ShapeColourNet, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  shape_logits, colour_logits = net(x)
  return jnp.argmax(shape_logits, -1).astype(jnp.int32), jnp.argmax(colour_logits, -1).astype(jnp.int32)


@dataclasses.dataclass
class ShapeColourClassifier:
  """The trained net with its label names; image_size: the picture side it was trained on."""
  net: ShapeColourNet
  shapes: tuple[str, ...]
  colours: tuple[str, ...]
  image_size: int
  widths: tuple[int, ...]
  hidden: int

  @classmethod
  def create(cls, shapes, colours, image_size: int, widths, hidden: int, seed: int = 0) -> ShapeColourClassifier:
    net = ShapeColourNet(len(shapes), len(colours), tuple(widths), hidden, rngs=nnx.Rngs(seed))
    return cls(net, tuple(shapes), tuple(colours), image_size, tuple(widths), hidden)

  @classmethod
  def load(cls, path: str) -> ShapeColourClassifier:
    """Reads a file written by `save`."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    with safe_open(path, framework="numpy") as f:
      meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
      raise ValueError(f"{path}: not a shape/colour classifier file (metadata format {meta.get('format')!r}, "
                       f"expected {FORMAT!r}); train one with omnidiff_jax.demo.media_training")
    info = json.loads(meta["config"])
    classifier = cls.create(info["shapes"], info["colours"], info["image_size"], info["widths"], info["hidden"])
    arrays = load_file(path)
    flat = nnx.to_flat_state(nnx.state(classifier.net, nnx.Param))
    expected = {"/".join(map(str, p)) for p, _ in flat}
    if expected != set(arrays):
      raise ValueError(f"{path}: parameters {sorted(set(arrays) ^ expected)} do not match the network in its metadata")
    for p, variable in flat:
      variable.set_value(jnp.asarray(arrays["/".join(map(str, p))]))
    return classifier

  def save(self, path: str) -> None:
    from safetensors.numpy import save_file
    info = dict(shapes=self.shapes, colours=self.colours, image_size=self.image_size, widths=self.widths,
                hidden=self.hidden)
    arrays = {"/".join(map(str, p)): np.asarray(v.get_value())
              for p, v in nnx.to_flat_state(nnx.state(self.net, nnx.Param))}
    save_file(arrays, path, metadata={"format": FORMAT, "config": json.dumps(info)})

  def predict(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """images (B, H, W, 3) uint8 -> (shape ids (B,), colour ids (B,)) int32, indices into shapes / colours."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3) or images.dtype != np.uint8:
      raise ValueError(f"expected uint8 pictures (B, {self.image_size}, {self.image_size}, 3), got {images.dtype} "
                       f"{images.shape}")
    outs = [_predict(self.net, jnp.asarray(to_unit_range(images[i:i + batch_size])))
            for i in range(0, len(images), batch_size)]
    return (np.concatenate([np.asarray(o[0]) for o in outs]), np.concatenate([np.asarray(o[1]) for o in outs]))

  def accuracy(self, images: np.ndarray, shape_ids: np.ndarray, colour_ids: np.ndarray) -> dict[str, float]:
    """Shape, colour and both-right accuracy on labelled pictures."""
    shapes, colours = self.predict(images)
    return dict(shape=float(np.mean(shapes == shape_ids)), colour=float(np.mean(colours == colour_ids)),
                both=float(np.mean((shapes == shape_ids) & (colours == colour_ids))))


def train_classifier(images: np.ndarray, shape_ids: np.ndarray, colour_ids: np.ndarray, shapes, colours,
                     cfg: ml_collections.ConfigDict) -> ShapeColourClassifier:
  """Trains on pictures (N, H, W, 3) uint8 with labels (N,); cfg: the `classifier` section of configs/demo_media.py."""
  classifier = ShapeColourClassifier.create(shapes, colours, images.shape[1], cfg.widths, cfg.hidden, cfg.seed)
  optimizer = nnx.Optimizer(classifier.net, optax.adam(cfg.learning_rate), wrt=nnx.Param)

  @nnx.jit
  def step(net, optimizer, x, shape_y, colour_y):
    def loss_fn(net):
      shape_logits, colour_logits = net(x)
      return (optax.softmax_cross_entropy_with_integer_labels(shape_logits, shape_y).mean()
              + optax.softmax_cross_entropy_with_integer_labels(colour_logits, colour_y).mean())
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    optimizer.update(net, grads)
    return loss

  rng = np.random.default_rng(cfg.seed)
  pixels = to_unit_range(images)
  bar = tqdm(range(cfg.steps), desc="shape/colour classifier", leave=False)
  for _ in bar:
    idx = rng.integers(len(images), size=cfg.batch_size)
    x = pixels[idx]
    x = np.where(rng.random((len(idx), 1, 1, 1)) < 0.5, x[:, :, ::-1], x)
    x = x + NOISE_STD * rng.standard_normal(x.shape, dtype=np.float32)
    loss = step(classifier.net, optimizer, jnp.asarray(x), jnp.asarray(shape_ids[idx]), jnp.asarray(colour_ids[idx]))
    bar.set_postfix(loss=f"{float(loss):.3f}")
  return classifier
