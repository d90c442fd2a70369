"""Quality scoring: the trained classifier (and its command), the heuristic fallback, the scoring stage."""
