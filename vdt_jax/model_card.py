"""Model cards: what a user needs to use a model's weights correctly, in one small JSON file.

Where they are:
  - `model_card.json` in every training workdir, rewritten by the training loop
    (process 0, atomically) at each evaluation and each checkpoint;
  - `<out>.json` beside every file `python -m vdt_jax.export` writes.

What they hold (the tasks fill the first four; see `vdt_jax.finetune.contract`
and `vdt_jax.pretrain.vdt_classification`):
  task            "vdt_pretraining", "classification" or "segmentation"
  architecture    network ("ResNet3D", "UNet3D", "ResNet3D encoder of a UNet3D"),
                  in_channels, num_classes and every field of the run's `model`
                  config (depth, widths, strides, norm, conv layout, ...)
  class_names     in output order, background first for segmentation
  preprocessing   the input contract: orientation, spacing, intensity window,
                  normalisation, crop or sliding-window size
  pytorch         how to export the weights and the exact PyTorch / MONAI code
                  that rebuilds the model and loads them
  source          workdir, checkpoint step, the latest evaluation (step, metrics), date
  weights         (exports) the file, its format, key style and tensor count

`python -m vdt_jax.predict` and `init_from` read cards and refuse a mismatch
they cannot adapt (`check_card`).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Mapping, Sequence

from vdt_jax import storage
from vdt_jax.atomic import write_text_atomic
from vdt_jax.errors import UserError

CARD_NAME = "model_card.json"
FORMAT = "vdt-jax model card"
VERSION = 1
# Model config fields that change how the network computes, not what its weights are.
COMPUTE_ONLY = ("conv_impl", "dtype")


class ModelCardError(UserError, ValueError):
    """A model card that cannot be read, or that contradicts the weights or the run it is used with."""


def architecture(model_config: Any, *, network: str, in_channels: int, num_classes: int | None) -> dict[str, Any]:
    """The card's architecture block: the network, its input/output sizes and every `model` config field."""
    fields = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    return plain({"network": network, "in_channels": int(in_channels), "num_classes": num_classes, **fields})


def plain(value: Any) -> Any:
    """`value` as JSON would give it back (tuples become lists), so cards compare equal to what was written."""
    return json.loads(json.dumps(value, default=str))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_card(
    fields: Mapping[str, Any],
    *,
    workdir: str,
    step: int,
    evaluation: tuple[int, Mapping[str, float]] | None,
    num_parameters: int,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a training workdir at `step`.

    Args:
      fields: the task's fields (task, architecture, class_names, preprocessing, pytorch).
      workdir: the run's absolute workdir.
      step: the newest checkpoint (or evaluation) step.
      evaluation: (step, metrics) of the newest evaluation of this process, or
        None to keep the one `previous` holds (a resumed run before its first evaluation).
      num_parameters: the model's parameter count.
      previous: the card written before, if any.
    """
    if evaluation is not None:
        latest = {"step": int(evaluation[0]), "metrics": {k: float(v) for k, v in evaluation[1].items()}}
    else:
        latest = (previous or {}).get("source", {}).get("evaluation")
    card = {"format": FORMAT, "version": VERSION, **plain(dict(fields))}
    card["architecture"]["parameters"] = int(num_parameters)
    card["source"] = {"workdir": workdir, "step": int(step), "evaluation": latest, "date": now()}
    card["weights"] = {
        "format": "Orbax checkpoint (Flax variables)",
        "location": os.path.join(workdir, "checkpoints", str(int(step))),
        "key_style": "flax",
    }
    return card


def write_run_card(workdir: str, fields: Mapping[str, Any], *, step: int, evaluation, num_parameters: int) -> None:
    """Rewrite `<workdir>/model_card.json` for `step` (atomically); see `run_card`."""
    path = os.path.join(workdir, CARD_NAME)
    previous = read_card(path) if storage.exists(path) else None
    card = run_card(fields, workdir=workdir, step=step, evaluation=evaluation, num_parameters=num_parameters, previous=previous)
    write_card(path, card)


def write_card(path: str, card: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(card, indent=2) + "\n")


def read_card(path: str) -> dict[str, Any]:
    """A model card file, checked to be one.

    Raises:
      ModelCardError: the file is not JSON or not a vdt-jax model card.
    """
    try:
        card = json.loads(storage.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{path}: not a readable model card: {error}") from error
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelCardError(f"{path}: not a vdt-jax model card (no \"format\": \"{FORMAT}\")")
    if card.get("version", 0) > VERSION:
        raise ModelCardError(f"{path}: model card version {card['version']} is newer than this vdt-jax reads ({VERSION})")
    return card


def find_card(path: str) -> tuple[str, dict[str, Any]] | None:
    """(card path, card) for a workdir (its model_card.json) or a weight file (`<file>.json`), if there is one."""
    candidate = os.path.join(path, CARD_NAME) if storage.isdir(path) else path + ".json"
    if not storage.exists(candidate) or storage.isdir(candidate):
        return None
    return candidate, read_card(candidate)


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Readable differences between two JSON-like values: ["architecture.widths: [16, 32] vs [8, 8]", ...]."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        out = []
        for key in sorted(set(expected) | set(actual)):
            name = f"{where}.{key}" if where else str(key)
            if key not in actual:
                out.append(f"{name}: {json.dumps(expected[key])} vs (absent)")
            elif key not in expected:
                out.append(f"{name}: (absent) vs {json.dumps(actual[key])}")
            else:
                out += differences(expected[key], actual[key], name)
        return out
    return [] if plain(expected) == plain(actual) else [f"{where}: {json.dumps(plain(expected))} vs {json.dumps(plain(actual))}"]


def check_card(
    card: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    sections: Sequence[str],
    card_path: str,
    expected_name: str,
    advice: str,
    ignore: Sequence[str] = (),
) -> None:
    """Raise `ModelCardError` listing every difference between `card` and `expected` in `sections`.

    Args:
      card: the card read from `card_path`.
      expected: the same sections as the code about to use the weights sees them.
      sections: top-level keys to compare, e.g. ("architecture", "preprocessing").
      card_path, expected_name: named in the message ("the checkpoint's config", "this run's model").
      advice: what the user can do, appended to the message.
      ignore: dotted names of fields that may differ (adaptable).
    """
    found = []
    for section in sections:
        found += differences(card.get(section), expected.get(section), section)
    found = [line for line in found if line.split(":", 1)[0] not in ignore]
    if found:
        listed = "; ".join(found[:8]) + (f"; ... ({len(found)} in all)" if len(found) > 8 else "")
        raise ModelCardError(f"{card_path} does not match {expected_name} (card vs {expected_name}): {listed}. {advice}")
