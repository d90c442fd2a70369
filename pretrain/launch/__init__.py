"""Launching training on Cloud TPU pod slices (pod.py) and the per-host supervisor (host.sh)."""
