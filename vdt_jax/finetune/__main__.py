r"""Fine-tune a (pre-trained) 3D ResNet on NIfTI volumes: classification or segmentation.

    python -m vdt_jax.finetune                                    # demo, ./workdirs/finetune_demo
    python -m vdt_jax.finetune --config=configs/finetune_default.py:classification --workdir=workdirs/cls
    python -m vdt_jax.finetune --config=configs/bcv_unet_r3d18.py --workdir=/runs/bcv \
        --config.data.path=/data/bcv/dataset.json --config.init_from=/weights/res3d18.pth
    python -m vdt_jax.finetune --config=configs/lidc_r3d18.py --print_config   # every field, then exit

--config.data.path (a dataset.json or a CSV/JSON manifest) names your data;
without it the demo configs generate synthetic CT data (data.synthetic).
Running the same command again resumes from the newest usable checkpoint in
the workdir (a local folder or a gs:// URL). A mistake in the command ends it
with one "error: ..." line and exit status 2 (VDT_TRACEBACK=1 shows the
traceback).
"""

from __future__ import annotations

import os

import configs.finetune_default
from vdt_jax import entrypoint
from vdt_jax.finetune import check_config

DEFAULT_WORKDIR = os.path.join("workdirs", "finetune_demo")

entrypoint.define_run_flags(
    configs.finetune_default.__file__, DEFAULT_WORKDIR, "Checkpoints, metrics, predictions and figures go here."
)


def main(argv: list[str]) -> None:
    from vdt_jax.finetune import make_task

    entrypoint.train_main(
        argv, lambda config, workdir: make_task(config, output_dir=workdir), print_summary, check_config=check_config
    )


def print_summary(config, metrics: dict, workdir: str, seconds: float) -> None:
    import jax

    from vdt_jax.train import reporting

    if jax.process_index() != 0:
        return
    if not metrics:
        print(
            f"\nNothing to do: the run in {workdir} already finished. "
            "Raise --config.num_train_steps (or num_epochs) to continue it, or use a new --workdir."
        )
        return
    if config.task == "segmentation":
        per_class = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in metrics.items() if k.startswith("dice/"))
        headline = f"mean Dice {metrics['mean_dice']:.3f} ({per_class})"
        outputs = (
            f"  predictions: {os.path.join(workdir, 'predictions')} (NIfTI in each source's orientation, PNG overlays, dice.csv)\n"
        )
    else:
        headline = f"accuracy {100 * metrics['accuracy']:.1f}%, ROC AUC {metrics['auc']:.3f}"
        outputs = f"  predictions: {os.path.join(workdir, 'eval_predictions.csv')} (confusion matrix in eval_metrics.json)\n"
    print(
        f"\nDone in {reporting.format_duration(seconds)}. Validation {headline} "
        f"on {int(metrics.get('num_examples', 0))} {'volumes' if config.task == 'segmentation' else 'examples'}.\n"
        + outputs
        + f"  metrics:     {os.path.join(workdir, 'eval_metrics.json')}, {os.path.join(workdir, 'metrics.jsonl')}, "
        f"{os.path.join(workdir, 'curves.png')}\n"
        f"  checkpoints: {os.path.join(workdir, 'checkpoints')} (model card: {os.path.join(workdir, 'model_card.json')})\n"
        f"  init report: {os.path.join(workdir, 'init_report.txt')}\n"
        f"Next: python -m vdt_jax.predict --workdir={workdir} --input=<NIfTI file, folder or manifest> --out=<folder>"
    )


if __name__ == "__main__":
    entrypoint.run(main)
