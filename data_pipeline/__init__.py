from common import quiet  # noqa: F401  (first: silences library start-up noise)
