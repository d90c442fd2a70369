"""Defaults shared by every training launch; launch configs override fields.

Sections: model, mixture, data, train, optim, checkpoint, metrics, mesh, sharding,
eval, downstream, init_from, aot, distributed. `pretrain.train_config.validate` checks them at start.
"""

import ml_collections

from pretrain import heldout, optim


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""  # required: --config.workdir=DIR
    c.seed = 0
    # Resuming a workdir: optimiser fields (optim.*, train.z_loss) allowed to differ from its
    # config.json, comma-separated ("optim.peak_lr,train.z_loss"); any other change is refused.
    c.resume_accept = ""
    c.model = ml_collections.ConfigDict()  # a configs/models/*.py get_config()
    c.mixture = ml_collections.ConfigDict()  # a configs/mixtures/*.py get_config()
    c.data = ml_collections.ConfigDict(
        dict(
            synthetic=False,  # True: random tokens, a pure function of (seed, step)
            synthetic_document_tokens=0,  # synthetic rows packed with documents of this mean length; 0: one
            packed_dir="",  # rows packed by `python -m mixtures.pack --output=...` (the mixture's tasks)
            prep_dir="",  # the prepared data those rows came from: not read by the trainer (held-out evaluation)
            tokenizer="",  # the tokenizer the rows were packed with (vocab size check, evaluation)
            tokenizer_sha256="",  # set by the trainer: data.tokenizer's SHA-256, which export and evaluate require
            workers=0,  # Grain worker processes reading rows; 0: read threads in this process
            seq_len=128,
            global_batch_size=8,
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            total_steps=100,
            dry_run=False,  # True: compile the step, report its memory per device, exit (writes nothing)
            log_every=10,
            grad_accum_steps=1,  # micro-batches per optimiser step
            z_loss=0.0,  # PaLM z-loss coefficient (1e-4 in PaLM); 0 disables
            compilation_cache_dir="",  # persistent XLA cache, so a resumed run skips compiling
        )
    )
    c.optim = optim.default_config()
    c.checkpoint = ml_collections.ConfigDict(
        dict(
            every_steps=50,  # and the last step; 0: no checkpoints (benchmarks)
            keep_last=3,
            keep_every=0,  # also keep every K-th step forever; 0: none
            async_save=True,
        )
    )
    c.metrics = ml_collections.ConfigDict(
        dict(
            tensorboard=True,
            peak_flops=0.0,  # per-device peak for MFU; 0: device table or CPU matmul probe
        )
    )
    c.eval = heldout.default_config()
    # Downstream tasks scored in the loop (pretrain/downstream_in_loop.py; evals.tasks names them).
    c.downstream = ml_collections.ConfigDict(
        dict(
            tasks="",  # comma-separated, e.g. "arc_easy,humaneval_bpb"; empty: off
            user_tasks="",  # comma-separated JSON files defining tasks (evals.tasks.user_task)
            every_steps=0,  # a multiple of train.log_every; 0: only at the end
            at_end=True,  # also at the last step: the end of the annealing stage
            limit=100,  # first items of each task; 0: all
            num_fewshot=0,
            eval_dir="",  # folder holding the eval sets' original files
            eval_sets="",  # comma-separated NAME=PATH, replacing a task's file under eval_dir
            fewshot_sets="",  # comma-separated NAME=PATH: the train/dev files the shots come from
        )
    )
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.sharding = ml_collections.ConfigDict(dict(logical_axis_rules=()))
    c.init_from = ml_collections.ConfigDict(
        dict(
            workdir="",  # another run's workdir: start from its params and optimiser state
            step=-1,  # its checkpoint step; -1: the latest
            keep_step=False,  # False: step counter and LR schedule restart at 0; True: continue
        )
    )  # the data stream always starts fresh; ignored once this run has its own checkpoint
    c.aot = ml_collections.ConfigDict(
        dict(  # python -m pretrain.tools.aot: compile for a TPU slice here
            topology="",  # e.g. "v5e:16x16" (a v5litepod-256)
            max_hbm_fraction=0.9,  # the step must fit in this share of a chip's HBM
        )
    )
    c.distributed = ml_collections.ConfigDict(
        dict(
            initialize=False,  # jax.distributed.initialize() on multi-host pods
            coordinator_address="",  # empty: auto-detect (TPU VMs)
            num_processes=1,
            process_id=0,
            heartbeat_timeout_s=100,  # a process silent this long is dead: the others abort
            initialization_timeout_s=300,  # how long to wait for every process to join
            cpu_collectives="gloo",  # cross-process collectives on the CPU backend
        )
    )
    return c
