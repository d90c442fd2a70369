"""The per-document stage: normalise text, run the filter chain, redact PII (stage.py)."""
