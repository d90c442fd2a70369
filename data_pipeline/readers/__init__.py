"""Reading raw corpora: input formats, compression, and the language of a code file."""
