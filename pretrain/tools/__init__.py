"""Stand-alone commands around the trainer: compile ahead of time, evaluate a checkpoint, count parameters."""
