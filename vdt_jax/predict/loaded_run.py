"""A fine-tuning run as `predict` uses it: one checkpoint's weights, the run's own config, classes and contract.

Nothing about the model or its preprocessing is typed by the user: the
network, the preprocessing (orientation, spacing, window, normalisation) and
the sliding-window settings come from the config saved with the checkpoint,
and the workdir's model card (`model_card.json`) must agree with it; a card
that contradicts the checkpoint is refused, naming every difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from vdt_jax import checkpoint_table, checkpointing, model_card, storage
from vdt_jax.errors import UserError
from vdt_jax.finetune import TASKS, contract
from vdt_jax.finetune.volume_cache import Preprocessing

# Card fields that may differ from the checkpoint's config without changing the predictions' meaning.
ADAPTABLE = ("architecture.parameters", "architecture.conv_impl", "architecture.dtype")


class NotAFinetuningRun(UserError, ValueError):
    """A --workdir that holds no fine-tuning checkpoint."""


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """What predicting with a run needs.

    Attributes:
      workdir: the run's absolute workdir.
      step: the checkpoint step loaded.
      config: the config saved with that checkpoint.
      variables: {"params", "batch_stats"} as numpy.
      class_names: output classes, in order.
      card_path: the model card checked against the checkpoint, or None (a run from before cards).
    """

    workdir: str
    step: int
    config: ml_collections.ConfigDict
    variables: dict[str, Any]
    class_names: tuple[str, ...]
    card_path: str | None

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_config(self.config.data, len(self.class_names))

    def build_model(self):
        if self.task == "segmentation":
            from vdt_jax.models.unet3d import build_unet

            return build_unet(self.config.model, self.config.unet, len(self.class_names))
        from vdt_jax.models.factory import build_model

        return build_model(self.config.model, num_classes=len(self.class_names))


def load_run(workdir: str, step: int | None = None) -> LoadedRun:
    """Load `workdir`'s checkpoint at `step` (default: the latest) and check the run's model card against it.

    Raises:
      UserError: not a workdir with checkpoints, no such step, not a
        fine-tuning run, or a model card that contradicts the checkpoint.
    """
    workdir = storage.absolute(workdir)  # a local folder or a gs:// URL
    step = checkpoint_table.resolve_step(workdir, step)
    _check_finetuning(os.path.join(workdir, "config.json"), workdir)
    variables, config = checkpointing.load_variables(workdir, step)
    _check_finetuning_config(config, workdir)
    num_classes = _num_classes(variables["params"], config.task)
    found = model_card.find_card(workdir)
    card_path, card = found if found else (None, None)
    class_names = contract.class_names(config, num_classes, card)
    if card is not None:
        expected = contract.card_fields(config, class_names, workdir)
        model_card.check_card(
            card,
            expected,
            sections=("task", "architecture", "preprocessing", "class_names"),
            card_path=card_path,
            expected_name=f"checkpoint step {step}'s config",
            advice="The card belongs to another run or version: move it away to predict from the checkpoint's own config.",
            ignore=ADAPTABLE,
        )
    return LoadedRun(workdir, step, config, variables, class_names, card_path)


def _check_finetuning(config_json: str, workdir: str) -> None:
    """Cheap check before loading weights: the run's first config.json names a fine-tuning task."""
    if not storage.exists(config_json):
        return
    config = json.loads(storage.read_text(config_json))
    _check_finetuning_config(config, workdir)


def _check_finetuning_config(config: Any, workdir: str) -> None:
    task = config.get("task") if hasattr(config, "get") else None
    if task not in TASKS:
        kind = "a pre-training run" if "vdt" in config else "not a fine-tuning run"
        raise NotAFinetuningRun(
            f"--workdir={workdir}: {kind} (its config has no task in {TASKS}); predict needs a workdir "
            "written by `python -m vdt_jax.finetune`"
        )


def _num_classes(params: dict[str, Any], task: str) -> int:
    """Output classes of the checkpoint's network: its UNet head or its classifier."""
    head = params["head"] if task == "segmentation" else params["fc"]
    return int(head["kernel"].shape[-1])
