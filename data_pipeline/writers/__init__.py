"""Writing the job's output: the TFDS datasets and the output folder's staging and commit."""
