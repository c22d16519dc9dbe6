"""Config builders for the GLM-4-Voice speech decoder (defaults = the released glm-4-voice-decoder)."""
import ml_collections


def flow_config(*, vocab_size=16384, input_size=512, heads=8, linear_units=2048, num_blocks=6, block_size=10,
                num_regulator_convs=4, channels=(256, 256), attention_head_dim=64, n_blocks=4, num_mid_blocks=12,
                num_heads=8):
  return ml_collections.ConfigDict(dict(
      vocab_size=vocab_size, input_size=input_size, output_size=80, spk_embed_dim=192, input_frame_rate=12.5,
      sample_rate=22050, hop_size=256, num_regulator_convs=num_regulator_convs,
      encoder=dict(input_size=input_size, output_size=input_size, attention_heads=heads, linear_units=linear_units,
                   num_blocks=num_blocks, block_size=block_size),
      cfm=dict(inference_cfg_rate=0.7,
               estimator=dict(in_channels=320, out_channels=80, channels=channels,
                              attention_head_dim=attention_head_dim, n_blocks=n_blocks,
                              num_mid_blocks=num_mid_blocks, num_heads=num_heads))))


def hift_config(*, base_channels=512, f0_cond_channels=512):
  return ml_collections.ConfigDict(dict(
      in_channels=80, base_channels=base_channels, f0_cond_channels=f0_cond_channels, nb_harmonics=8,
      sampling_rate=22050, nsf_alpha=0.1, nsf_sigma=0.003, nsf_voiced_threshold=10.0, upsample_rates=(8, 8),
      upsample_kernel_sizes=(16, 16), n_fft=16, hop_len=4, resblock_kernel_sizes=(3, 7, 11),
      resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), source_resblock_kernel_sizes=(7, 11),
      source_resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)), lrelu_slope=0.1, audio_limit=0.99))


def decoder_config(**flow_overrides):
  """Full config: sections flow, hift, decode (10 Euler steps as Omni-Diffusion)."""
  cfg = ml_collections.ConfigDict()
  cfg.flow = flow_config(**flow_overrides)
  cfg.hift = hift_config()
  cfg.decode = ml_collections.ConfigDict(dict(n_timesteps=10, seed=0))
  return cfg
