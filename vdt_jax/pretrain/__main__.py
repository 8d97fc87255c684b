r"""Supervised 3D pre-training with the variable dimension transform.

    python -m vdt_jax.pretrain                                  # built-in demo, ./workdirs/pretrain_demo
    python -m vdt_jax.pretrain --config=configs/imagenet_r3d18.py --workdir=/abs/or/relative/dir \
        --config.batch_size=1024
    python -m vdt_jax.pretrain --config=configs/imagenet_r3d18.py --print_config   # every field, then exit

Any config field can be overridden as --config.<field>=<value> (--print_config
lists them). Running the same command again resumes from the newest usable
checkpoint in the workdir, which may be a local folder or a gs:// URL. The
same command runs on every host of a TPU pod slice or GPU cluster: see
vdt_jax/distributed.py for the --distributed, --coordinator_address,
--num_processes, --process_id and --local_device_ids flags, and launch/.
On SIGTERM (preemption) all processes save one agreed step and exit with
status 0. A mistake in the command ends it with one "error: ..." line and
exit status 2 (VDT_TRACEBACK=1 shows the traceback).
"""

from __future__ import annotations

import os

import configs.default
from vdt_jax import entrypoint

DEFAULT_WORKDIR = os.path.join("workdirs", "pretrain_demo")

entrypoint.define_run_flags(
    configs.default.__file__, DEFAULT_WORKDIR, "Checkpoints, metrics and TensorBoard events go here."
)


def main(argv: list[str]) -> None:
    entrypoint.train_main(argv, _make_task, _print_summary, check_config=check_config)


def check_config(config) -> None:
    """The checks before JAX loads: init_from exists, and the dataset is prepared (the demo one is made here)."""
    entrypoint.check_init_from(config)
    from vdt_jax.data import tfds_datasets  # TFDS only: seconds

    tfds_datasets.prepare_dataset(config.data)


def _make_task(config, workdir: str):
    from vdt_jax.pretrain.vdt_classification import VDTClassificationTask

    return VDTClassificationTask(config)


def _print_summary(config, metrics: dict, workdir: str, seconds: float) -> None:
    import jax

    from vdt_jax.train import reporting

    if jax.process_index() != 0:
        return
    top1 = metrics.get("top1", float("nan"))
    print(
        f"\nDone in {reporting.format_duration(seconds)}. Validation top-1 {100 * top1:.2f}% "
        f"(top-5 {100 * metrics.get('top5', float('nan')):.2f}%) on {int(metrics.get('num_examples', 0))} examples.\n"
        f"  checkpoints: {os.path.join(workdir, 'checkpoints')}\n"
        f"  metrics:     {os.path.join(workdir, 'metrics.jsonl')} and {os.path.join(workdir, 'tensorboard')}\n"
        f"  config:      {os.path.join(workdir, 'config.json')}\n"
        "Next: run the same command to resume or extend (--config.num_epochs=...); fine-tune with "
        "`python -m vdt_jax.finetune`; export with `python -m vdt_jax.export --workdir=... --out=model.pth`; "
        "full recipe: --config=configs/imagenet_r3d18.py (README: Preparing ImageNet)."
    )


if __name__ == "__main__":
    entrypoint.run(main)
