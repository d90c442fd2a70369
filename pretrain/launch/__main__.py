"""`python -m pretrain.launch`: see pretrain/launch/pod.py."""

from pretrain.launch.pod import run

run()
