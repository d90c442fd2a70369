"""Gemma (v1) decoder in Flax linen, mirroring the google-deepmind/gemma reference."""
