r"""Export a vdt-jax checkpoint's ResNet (or P3D / MP3D) as a PyTorch state dict.

  python -m vdt_jax.export --workdir=/abs/path/to/workdir --out=r3d18.pth \
      [--step=N] [--keys=plain|monai|mmcls|medicalnet|mp3d] [--backbone_only] [--downsample_bias]

Restores the model variables and model config of the workdir's Orbax checkpoint
(the latest step unless --step; the workdir may be a gs:// URL), writes `--out`
(.pth needs PyTorch: pip install "vdt-jax[torch]"; .safetensors does not) and
prints the MONAI code that builds the matching PyTorch model and loads the file
with strict=True. A pseudo-3D network (model.arch "mp3d" or "p3d") is written
with the P3D reference's keys (--keys=mp3d, or mmcls for the `backbone.` prefix;
`vdt_jax.weights.p3d_keys`). The conversion itself is `vdt_jax.weights`. A mistake in the
command ends it with one "error: ..." line and exit status 2 (VDT_TRACEBACK=1
shows the traceback).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
from absl import flags

from vdt_jax import compile_cache, entrypoint, storage
from vdt_jax.errors import UserError
from vdt_jax.weights import files, monai_code
from vdt_jax.weights.keys import KEY_STYLES

_WORKDIR = flags.DEFINE_string("workdir", None, "Pre-training or fine-tuning workdir holding Orbax checkpoints.")
_OUT = flags.DEFINE_string("out", None, "Output file: .pth/.pt (torch.save) or .safetensors.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export; the latest when unset.")
_KEYS = flags.DEFINE_enum(
    "keys", "plain", (*KEY_STYLES, "mp3d"), "Key style of the state dict (mp3d: the P3D / MP3D reference's)."
)
_BACKBONE_ONLY = flags.DEFINE_bool("backbone_only", False, "Drop the classifier (fc.*).")
_DOWNSAMPLE_BIAS = flags.DEFINE_bool(
    "downsample_bias", False, "Add zero shortcut-conv biases, for MONAI's default bias_downsample=True."
)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export` wrote."""

    path: str
    num_tensors: int
    num_parameters: int
    num_classes: int | None  # classifier outputs written, None without a classifier
    classifier_note: str
    monai_code: str

    def summary(self) -> str:
        return (
            f"wrote {self.path}: {self.num_tensors} tensors, {self.num_parameters:,} parameters; "
            f"classifier {self.classifier_note}\n"
            f"Matching MONAI model:\n{self.monai_code}"
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
    """Write the model of `workdir`'s checkpoint (at `step`, default the latest) to `out`."""
    from vdt_jax import checkpointing  # JAX and Orbax load here, after the checks in `main`
    from vdt_jax.models.p3d import ARCHS as P3D_ARCHS
    from vdt_jax.weights import p3d_keys

    variables, config = checkpointing.load_variables(storage.absolute(workdir), step)
    pseudo_3d = _arch(config.model) in P3D_ARCHS
    if keys == "mp3d" and not pseudo_3d:
        raise UserError(f"--keys=mp3d is for P3D / MP3D networks; {workdir} holds a 3D ResNet: use one of {KEY_STYLES}")
    write = p3d_keys.export_torch_weights if pseudo_3d else files.export_torch_weights
    state = write(variables, out, keys=keys, backbone_only=backbone_only, downsample_bias=downsample_bias)
    params = variables["params"]
    has_fc = "fc" in params
    num_classes = int(params["fc"]["kernel"].shape[1]) if has_fc and not backbone_only else None
    if num_classes is not None:
        note = f"kept ({num_classes} classes)"
    else:
        note = "dropped (--backbone_only)" if has_fc else "absent (the checkpoint holds a backbone)"
    counted = {name: tree for name, tree in params.items() if num_classes is not None or name != "fc"}
    return ExportResult(
        path=os.path.abspath(out),
        num_tensors=len(state),
        num_parameters=sum(int(np.size(leaf)) for leaf in _leaves(counted)),
        num_classes=num_classes,
        classifier_note=note,
        monai_code=_P3D_NOTE if pseudo_3d else _matching_monai_code(
            params, config.model, num_classes, keys, downsample_bias, out
        ),
    )


_P3D_NOTE = (
    "(none: MONAI has no pseudo-3D network; the file loads with strict=True into the P3D reference's backbone, "
    "urmagicsmine/MP3D modified_P3D / P3D, as README \"P3D / MP3D\" shows)\n"
)


def _arch(model_config) -> str:
    """The checkpoint's architecture; configs saved before pseudo-3D networks existed have no `arch` field."""
    return model_config.arch if "arch" in model_config else "resnet3d"


def _matching_monai_code(
    params: Mapping, model_config, num_classes: int | None, keys: str, downsample_bias: bool, out: str
) -> str:
    """`monai_code.monai_code` for the exported model, or why MONAI has none."""
    stem = tuple(int(n) for n in params["conv1"]["kernel"].shape[:3])
    try:
        return monai_code.monai_code(
            int(model_config.depth),
            num_classes=num_classes,
            in_channels=int(params["conv1"]["kernel"].shape[3]),
            stem_kernel=stem[0] if len(set(stem)) == 1 else stem,
            stem_stride=bool(model_config.stem_stride),
            depth_stride=bool(model_config.depth_stride),
            stage_strides=tuple(model_config.stage_strides),
            widths=tuple(model_config.widths),
            norm=model_config.norm,
            downsample_bias=downsample_bias,
            keys=keys,
            path=out,
        )
    except ValueError as error:
        return f"(none: {error})\n"


def _leaves(tree: Mapping):
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _leaves(value)
        else:
            yield value


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
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
    flags.mark_flags_as_required(["workdir", "out"])
    entrypoint.run(main)
