"""Per-document filters: small callables that return None to keep a record or a reason to drop it."""
