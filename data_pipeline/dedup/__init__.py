"""Deduplication: exact (normalised-text hash), near (MinHash LSH) and their shared word shingles."""
