r"""Export a vdt-jax checkpoint's network as a PyTorch state dict, with its model card beside it.

  python -m vdt_jax.export --workdir=/abs/path/to/workdir --out=r3d18.pth \
      [--step=N] [--keys=plain|monai|mmcls|medicalnet|mp3d] [--backbone_only] [--downsample_bias]
  python -m vdt_jax.export --workdir=/abs/path/to/workdir --list_checkpoints

Restores the model variables and model config of the workdir's Orbax checkpoint
(the latest step unless --step; the workdir may be a gs:// URL) and writes
`--out` (.pth needs PyTorch: pip install "vdt-jax[torch]"; .safetensors does
not). ResNet runs (pre-training, classification) give torchvision/MONAI ResNet
keys; the printed MONAI code builds the matching model and loads the file with
strict=True. Segmentation (UNet) runs give, with `--backbone_only`, the encoder
with the same ResNet keys (MONAI's ResNet with feed_forward=False), or else the
whole UNet with the keys of `vdt_jax.weights.unet_keys`, which the plain-PyTorch
`vdt_jax.weights.torch_unet.TorchUNet3D` loads strictly. A pseudo-3D network
(model.arch "mp3d" or "p3d") is written with the P3D reference's keys
(--keys=mp3d, or mmcls for the `backbone.` prefix; `vdt_jax.weights.p3d_keys`).

Beside `--out` goes `<out>.json`, the model card (`vdt_jax.model_card`): the
architecture, classes, preprocessing contract, source step and metrics, key
style and the exact PyTorch code for this file. Every check runs before
anything is written, and both files are written atomically. A mistake in the
command ends it with one "error: ..." line and exit status 2 (VDT_TRACEBACK=1
shows the traceback).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import flags, logging

from vdt_jax import checkpoint_table, compile_cache, entrypoint, model_card, storage
from vdt_jax.errors import UserError
from vdt_jax.weights import files, monai_code, unet_keys
from vdt_jax.weights.keys import KEY_STYLES, check_choice, to_torch_state_dict

_WORKDIR = flags.DEFINE_string("workdir", None, "Pre-training or fine-tuning workdir holding Orbax checkpoints.")
_OUT = flags.DEFINE_string("out", None, "Output file: .pth/.pt (torch.save) or .safetensors.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export; the latest when unset.")
EXPORT_KEY_STYLES = (*KEY_STYLES, "mp3d")
_KEYS = flags.DEFINE_enum(
    "keys", "plain", EXPORT_KEY_STYLES, "Key style of the state dict (mp3d: the P3D / MP3D reference's; a whole UNet has its own)."
)
_BACKBONE_ONLY = flags.DEFINE_bool("backbone_only", False, "Drop the classifier (fc.*); for a UNet, export the encoder.")
_DOWNSAMPLE_BIAS = flags.DEFINE_bool(
    "downsample_bias", False, "Add zero shortcut-conv biases, for MONAI's default bias_downsample=True."
)
_LIST = flags.DEFINE_bool("list_checkpoints", False, "List the workdir's checkpoints (step, time, metrics) and exit.")


class ExportError(UserError, ValueError):
    """An export that cannot be honoured as asked; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Everything an export writes, computed (and checked) before writing."""

    state: dict[str, np.ndarray]
    counted: Mapping  # the params the file holds, for the parameter count
    num_classes: int | None  # classifier / head outputs written, None for a backbone
    classifier_note: str
    code: str  # PyTorch code that rebuilds the model and loads the file
    code_title: str
    contents: str  # what the file holds, for the summary and the card

    @property
    def num_parameters(self) -> int:
        return sum(int(np.size(leaf)) for leaf in _leaves(self.counted))


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export` wrote."""

    path: str
    card_path: str
    step: int
    num_tensors: int
    num_parameters: int
    num_classes: int | None
    classifier_note: str
    code: str
    code_title: str
    contents: str

    def summary(self) -> str:
        return (
            f"wrote {self.path} ({self.contents}, checkpoint step {self.step}): {self.num_tensors} tensors, "
            f"{self.num_parameters:,} parameters; classifier {self.classifier_note}\n"
            f"model card: {self.card_path}\n"
            f"{self.code_title}\n{self.code}"
        )


def export(
    workdir: str,
    out: str,
    *,
    step: int | None = None,
    keys: str = "plain",
    backbone_only: bool = False,
    downsample_bias: bool = False,
) -> ExportResult:
    """Write the model of `workdir`'s checkpoint (at `step`, default the latest) to `out`, and `<out>.json`.

    Raises:
      UserError: no checkpoint or step, an unknown extension, or an export the
        network cannot honour (key style or shortcut biases for a whole UNet,
        model options the PyTorch reference lacks); nothing is written then.
    """
    if files.file_extension(out) not in files.TORCH_EXTENSIONS + files.SAFETENSORS_EXTENSIONS:
        raise ExportError(f"--out={out}: use a .safetensors file or one of {files.TORCH_EXTENSIONS}")
    check_choice(keys, EXPORT_KEY_STYLES, "key style")
    from vdt_jax import checkpointing  # JAX and Orbax load here, after the cheap checks in `main`

    workdir = storage.absolute(workdir)
    step = checkpoint_table.resolve_step(workdir, step)
    variables, config = checkpointing.load_variables(workdir, step)
    plan = plan_export(variables, config, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias, out=out)
    card = export_card(workdir, step, config, plan, keys=keys, out=out)
    files.write_state_dict(plan.state, out, metadata={"producer": "vdt-jax", "keys": keys, "contents": plan.contents})
    model_card.write_card(out + ".json", card)
    return ExportResult(
        os.path.abspath(out), os.path.abspath(out + ".json"), step, len(plan.state), plan.num_parameters,
        plan.num_classes, plan.classifier_note, plan.code, plan.code_title, plan.contents,
    )


def plan_export(variables: Mapping, config: Any, *, keys: str, backbone_only: bool, downsample_bias: bool, out: str) -> ExportPlan:
    """The state dict, counts and PyTorch code of an export, or an `ExportError` saying why it cannot be done."""
    params = variables["params"]
    pseudo_3d = _arch(config.model) != "resnet3d"
    if keys == "mp3d" and not pseudo_3d:
        raise ExportError(f"--keys=mp3d is for P3D / MP3D networks; this run holds a 3D ResNet: use one of {KEY_STYLES}")
    if unet_keys.is_unet(params):
        if pseudo_3d:
            raise ExportError(
                f"a UNet with a {config.model.arch} encoder has no PyTorch counterpart here: export a P3D / MP3D "
                "pre-training or classification run, or keep this run in vdt-jax (python -m vdt_jax.predict)"
            )
        return _plan_unet(variables, config, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias, out=out)
    if pseudo_3d:
        return _plan_p3d(variables, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias)
    state = to_torch_state_dict(variables, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias)
    num_classes, note = _classifier(params, backbone_only)
    code = _matching_monai_code(params, config.model, num_classes, keys, downsample_bias, out)
    contents = "ResNet with classifier" if num_classes is not None else "ResNet backbone"
    return ExportPlan(state, _counted(params, num_classes), num_classes, note, code, "Matching MONAI model:", contents)


def _classifier(params: Mapping, backbone_only: bool) -> tuple[int | None, str]:
    """The classifier's class count (None when it is not written) and what the summary says about it."""
    has_fc = "fc" in params
    num_classes = int(params["fc"]["kernel"].shape[1]) if has_fc and not backbone_only else None
    if num_classes is not None:
        return num_classes, f"kept ({num_classes} classes)"
    return None, "dropped (--backbone_only)" if has_fc else "absent (the checkpoint holds a backbone)"


def _counted(params: Mapping, num_classes: int | None) -> Mapping:
    return {name: tree for name, tree in params.items() if num_classes is not None or name != "fc"}


def _plan_p3d(variables: Mapping, *, keys: str, backbone_only: bool, downsample_bias: bool) -> ExportPlan:
    """A P3D / MP3D run, with the P3D reference's keys (`vdt_jax.weights.p3d_keys`)."""
    from vdt_jax.weights import p3d_keys

    p3d_keys.check_key_style(keys, downsample_bias)
    params = variables["params"]
    state = p3d_keys.to_torch_state_dict(variables, keys=keys, backbone_only=backbone_only)
    num_classes, note = _classifier(params, backbone_only)
    contents = "P3D / MP3D with classifier" if num_classes is not None else "P3D / MP3D backbone"
    return ExportPlan(state, _counted(params, num_classes), num_classes, note, P3D_NOTE, "Matching PyTorch model:", contents)


def _plan_unet(variables: Mapping, config: Any, *, keys: str, backbone_only: bool, downsample_bias: bool, out: str) -> ExportPlan:
    params = variables["params"]
    if backbone_only:
        encoder = unet_keys.encoder_variables(variables)
        state = to_torch_state_dict(encoder, keys=keys, downsample_bias=downsample_bias)
        code = _matching_monai_code(encoder["params"], config.model, None, keys, downsample_bias, out)
        title = "Matching MONAI model (the UNet's encoder; model(x) returns pooled layer4 features):"
        return ExportPlan(state, encoder["params"], None, "absent (UNet encoder, --backbone_only)", code, title, "UNet encoder (ResNet keys)")
    if keys != "plain":
        raise ExportError(
            f"--keys={keys} names a ResNet key style; a whole UNet is written with its own keys "
            f"(vdt_jax/weights/unet_keys.py): use --keys=plain, or --backbone_only for the encoder with {keys} keys"
        )
    if downsample_bias:
        raise ExportError(
            "--downsample_bias adds the shortcut biases MONAI's ResNet expects; the whole-UNet export loads into "
            "TorchUNet3D, whose shortcut convs have none: drop the flag (or add --backbone_only for MONAI)"
        )
    num_classes = int(params["head"]["kernel"].shape[-1])
    in_channels = int(params["encoder"]["conv1"]["kernel"].shape[3])
    code = unet_keys.torch_unet_code(config.model, config.unet, in_channels=in_channels, num_classes=num_classes, path=out)
    note = f"the segmentation head ({num_classes} classes)"
    title = "Matching PyTorch model (vdt_jax.weights.torch_unet, plain PyTorch):"
    return ExportPlan(unet_keys.unet_state_dict(variables), params, num_classes, note, code, title, "whole UNet")


P3D_NOTE = (
    "(none: MONAI has no pseudo-3D network; the file loads with strict=True into the P3D reference's backbone, "
    "urmagicsmine/MP3D modified_P3D / P3D, as README \"P3D / MP3D\" shows)"
)


def _arch(model_config) -> str:
    """The checkpoint's architecture; configs saved before pseudo-3D networks existed have no `arch` field."""
    return model_config.arch if "arch" in model_config else "resnet3d"


def _matching_monai_code(
    params: Mapping, model_config, num_classes: int | None, keys: str, downsample_bias: bool, out: str
) -> str:
    """`monai_code.monai_code` for the exported ResNet, or why MONAI has none."""
    stem = tuple(int(n) for n in params["conv1"]["kernel"].shape[:3])
    return monai_code.monai_code_for(
        model_config,
        num_classes=num_classes,
        in_channels=int(params["conv1"]["kernel"].shape[3]),
        stem_kernel=stem[0] if len(set(stem)) == 1 else stem,
        downsample_bias=downsample_bias,
        keys=keys,
        path=out,
    )


def export_card(workdir: str, step: int, config: Any, plan: ExportPlan, *, keys: str, out: str) -> dict[str, Any]:
    """The model card written beside an exported file."""
    fields = _run_fields(workdir, config, plan.num_classes)
    if plan.num_classes is None:  # a backbone: features, no classes
        network = "ResNet3D" if _arch(config.model) == "resnet3d" else config.model.arch.upper()
        fields["architecture"].update(network=f"{network} ({plan.contents})", num_classes=None)
        fields["class_names"] = None
    evaluation = checkpoint_table.evaluation_at(workdir, step)
    return {
        "format": model_card.FORMAT,
        "version": model_card.VERSION,
        **fields,
        "pytorch": {"code": plan.code},
        "weights": {
            "file": os.path.basename(out),
            "format": "safetensors" if files.file_extension(out) in files.SAFETENSORS_EXTENSIONS else "torch.save state dict",
            "contents": plan.contents,
            "key_style": "vdt-jax UNet keys (vdt_jax/weights/unet_keys.py)" if plan.contents == "whole UNet" else keys,
            "tensors": len(plan.state),
            "parameters": plan.num_parameters,
            "layout": "PyTorch: conv weights (O, I, kD, kH, kW), inputs (N, C, D, H, W), float32",
        },
        "source": {"workdir": workdir, "step": step, "evaluation": evaluation, "date": model_card.now()},
    }


def _run_fields(workdir: str, config: Any, num_classes: int | None) -> dict[str, Any]:
    """The task, architecture, classes and preprocessing of the run, from its config (and its card's class names)."""
    found = model_card.find_card(workdir)
    card = found[1] if found else None
    if "task" in config:  # a fine-tuning run
        from vdt_jax.finetune import contract

        count = num_classes or len(config.data.class_names) or len((card or {}).get("class_names") or ()) or 1
        fields = contract.card_fields(config, contract.class_names(config, count, card), workdir)
    else:
        from vdt_jax.pretrain.vdt_classification import card_fields

        names = (card or {}).get("class_names")
        fields = card_fields(config, names if names and len(names) == num_classes else None, num_classes)
    return {k: v for k, v in model_card.plain(fields).items() if k != "pytorch"}


def _leaves(tree: Mapping):
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        else:
            yield value


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax logs every restore at INFO; --verbosity=0 shows all
    if _LIST.value:
        storage.check_exists(_WORKDIR.value, "--workdir")
        print(checkpoint_table.format_table(_WORKDIR.value))
        return
    if not _OUT.value:
        raise UserError("--out is required (a .pth or .safetensors file), unless --list_checkpoints")
    check_arguments(_WORKDIR.value, _OUT.value)
    compile_cache.enable_from_flags()
    result = export(
        _WORKDIR.value,
        _OUT.value,
        step=_STEP.value,
        keys=_KEYS.value,
        backbone_only=_BACKBONE_ONLY.value,
        downsample_bias=_DOWNSAMPLE_BIAS.value,
    )
    print(result.summary())


def check_arguments(workdir: str, out: str) -> None:
    """The cheap checks: the workdir holds checkpoints, --out has a known extension, PyTorch is there for .pth."""
    storage.check_exists(workdir, "--workdir")
    checkpoints = os.path.join(storage.absolute(workdir), "checkpoints")
    if not storage.isdir(checkpoints) and not storage.isdir(os.path.join(workdir, "state")):
        if not any(name.isdigit() for name in storage.listdir(workdir)):
            raise UserError(f"--workdir={workdir} holds no checkpoints: give a pre-training or fine-tuning workdir")
    extension = files.file_extension(out)
    if extension not in files.TORCH_EXTENSIONS + files.SAFETENSORS_EXTENSIONS:
        raise UserError(f"--out={out}: unknown extension {extension!r}; use .safetensors or one of {files.TORCH_EXTENSIONS}")
    if extension in files.TORCH_EXTENSIONS:
        files.check_torch_available(f"writing {out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    entrypoint.run(main)
