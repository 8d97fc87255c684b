"""Fine-tune a (pre-trained) 3D ResNet on NIfTI volumes: classification or segmentation.

    python -m vdt_jax.finetune                                    # demo, ./workdirs/finetune_demo
    python -m vdt_jax.finetune --config=configs/finetune_default.py:classification --workdir=workdirs/cls
    python -m vdt_jax.finetune --config=configs/bcv_unet_r3d18.py --workdir=/runs/bcv \
        --config.data.path=/data/bcv/dataset.json --config.init_from=/weights/res3d18.pth

Running the same command again resumes from the newest checkpoint in the workdir.
"""

from __future__ import annotations

import os

from absl import app

import configs.finetune_default
from vdt_jax import entrypoint  # at import: defines the multi-process flags
from vdt_jax.train import preemption, reporting

preemption.ignore_sigterm_in_data_workers(__name__)

DEFAULT_WORKDIR = os.path.join("workdirs", "finetune_demo")

entrypoint.define_run_flags(
    configs.finetune_default.__file__, DEFAULT_WORKDIR, "Checkpoints, metrics, predictions and figures go here."
)


def main(argv: list[str]) -> None:
    from vdt_jax.finetune import make_task

    entrypoint.train_main(argv, lambda config, workdir: make_task(config, output_dir=workdir), print_summary)


def print_summary(config, metrics: dict, workdir: str, seconds: float) -> None:
    import jax

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
    app.run(main)
