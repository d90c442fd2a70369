"""Checkpoint conversion: export to Hugging Face / Orbax params and import from Hugging Face."""
