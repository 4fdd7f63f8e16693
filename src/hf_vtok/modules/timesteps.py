"""Sinusoidal timestep features, as DiT / SiT / Flux / ADM feed them to their timestep MLP."""

from diffusers.models.embeddings import Timesteps

TIMESTEP_FREQUENCY_DIM = 256


def sinusoidal_timesteps(num_channels: int = TIMESTEP_FREQUENCY_DIM) -> Timesteps:
    """diffusers ``Timesteps``: ``[cos | sin]`` of ``t * 10000^(-i / half)``, float32 ``[B, num_channels]``.

    A module without parameters (state-dict keys do not change); feed its output to ``TimestepEmbedding``.
    """
    return Timesteps(num_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
