"""The fine-tuning tasks: 3D classification and segmentation behind the shared `Task` interface.

Both run in the one training loop (`vdt_jax.train.loop.train_and_evaluate`),
with its sharding, checkpoints (train state and grain iterator together),
resume and reporting. What they add:

  - data: NIfTI volumes preprocessed once into a cache (`datasets`), random
    crops and augmentations in a checkpointable grain `DataLoader`, sharded by
    process; `data.train_fraction` keeps a seeded (stratified) subset;
  - initialisation: `config.init_from` (a vdt-jax run or a PyTorch /
    safetensors file, via `vdt_jax.pretrained`), "auto" for the demo
    pre-training workdir when it exists; the report of what was loaded,
    adapted and newly initialised is printed and saved in the output folder;
  - `finetune.freeze`: stages ("stem", "layer1".."layer4", or "encoder") that
    get no updates (their BatchNorm statistics still follow the new data);
  - evaluation: `eval_metrics` returns per-example outputs (not sums), and
    `evaluate` turns them into accuracy / ROC AUC / confusion matrix, or into
    sliding-window whole-volume predictions scored with per-class Dice and
    written as NIfTI plus PNG overlays.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from vdt_jax import pretrained
from vdt_jax.finetune import augment, datasets, figures, metrics, nifti, sliding_window, synthetic
from vdt_jax.models.factory import build_model, compute_dtype
from vdt_jax.models.unet3d import build_unet
from vdt_jax.train import mesh as mesh_lib
from vdt_jax.train.tasks import Task

DEFAULT_PRETRAIN_WORKDIR = os.path.join("workdirs", "pretrain_demo")


def log(message: str) -> None:
    """Print on process 0 only, like the loop's reporter."""
    if jax.process_index() == 0:
        print(message, flush=True)


def resolve_init_from(value: str) -> str:
    """config.init_from, with "auto" meaning the demo pre-training workdir if it holds a checkpoint, else ""."""
    if value != "auto":
        return value
    checkpoints = os.path.join(DEFAULT_PRETRAIN_WORKDIR, "checkpoints")
    if os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)):
        return os.path.abspath(DEFAULT_PRETRAIN_WORKDIR)
    log(
        f"No pre-training checkpoint in ./{DEFAULT_PRETRAIN_WORKDIR} (run `python -m vdt_jax.pretrain` to make one): "
        "training from scratch."
    )
    return ""


def data_path(config: ml_collections.ConfigDict, what: str) -> str:
    """data.path, or the generated dataset data.synthetic names (made on first use)."""
    if config.data.get("synthetic"):
        return synthetic.ensure_dataset(config.data.synthetic, root=config.data.get("synthetic_root"))
    if not config.data.get("path"):
        raise ValueError(f"set data.path to {what} (or data.synthetic for the generated demo data)")
    return config.data.path


def make_task(config: ml_collections.ConfigDict, output_dir: str | None = None) -> "FinetuneTask":
    """The task `config.task` names: "classification" or "segmentation"."""
    tasks = {"classification": Classification3DTask, "segmentation": SegmentationTask}
    if config.task not in tasks:
        raise ValueError(f"unknown config.task {config.task!r}; expected one of {sorted(tasks)}")
    return tasks[config.task](config, output_dir=output_dir)


class FinetuneTask(Task):
    """What both fine-tuning tasks share: volumes in, initialisation, freezing, outputs."""

    def __init__(self, config: ml_collections.ConfigDict, class_names: tuple[str, ...], output_dir: str | None = None):
        super().__init__(config)
        self.class_names = tuple(class_names)
        self.output_dir = os.path.abspath(output_dir) if output_dir else None
        self.init_from = resolve_init_from(config.get("init_from", "") or "")
        self.init_report: pretrained.InitReport | None = None
        self.dtype = compute_dtype(config.model.get("dtype", "float32"))
        data = config.data
        self.cache = datasets.VolumeCache(
            data.get("cache_dir") or datasets.default_cache_dir(),
            datasets.Preprocessing.from_config(data, len(self.class_names)),
        )

    # ---- data helpers ----
    def _preprocess(self, items: list[tuple[str, str | None, str]], what: str) -> list[datasets.Volume]:
        """Cache every (image, label or None, where) volume, checking it; errors name the manifest row."""
        log(f"Preparing {len(items)} {what} volume(s) (cached in {self.cache.directory})...")
        volumes = []
        for image, label, where in items:
            try:
                volumes.append(self.cache.get(image, label))
            except nifti.NiftiError as error:
                raise nifti.NiftiError(f"{where}: {error}") from None
        return volumes

    def _loader(self, source: grain.sources.RandomAccessDataSource, operations: list, *, seed: int, per_process_batch: int):
        shard = grain.sharding.ShardOptions(jax.process_index(), jax.process_count(), drop_remainder=True)
        if len(source) < jax.process_count():
            raise ValueError(f"{len(source)} training examples cannot be shared by {jax.process_count()} processes")
        sampler = grain.samplers.IndexSampler(
            num_records=len(source), shard_options=shard, shuffle=True, num_epochs=None, seed=seed
        )
        prefetch = max(int(self.config.data.get("prefetch_buffer", 2)), 1)
        loader = grain.DataLoader(
            data_source=source,
            sampler=sampler,
            operations=[*operations, grain.transforms.Batch(per_process_batch, drop_remainder=True)],
            worker_count=int(self.config.data.get("num_workers", 0)),
            worker_buffer_size=prefetch,
            shard_options=shard,
            read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch * per_process_batch),
        )
        return iter(loader)

    def _augment(self) -> augment.Augment:
        data = self.config.data
        return augment.Augment(
            flip_axes=tuple(data.get("flip_axes", ())),
            rotate_planes=augment.ALL_PLANES if data.get("rotate90", False) else tuple(map(tuple, data.get("rotate_planes", ()))),
        )

    # ---- model ----
    def example_inputs(self) -> jax.Array:
        size = tuple(self.config.data.crop_size)
        return jnp.zeros((1, *size, int(self.config.data.get("in_channels", 1))), self.dtype)

    def prepare_inputs(self, batch, rng, train):
        return batch["image"].astype(self.dtype)

    def _backbone_prefix(self) -> tuple[str, ...]:
        return ()

    # ---- initialisation and freezing ----
    def initial_variables(self, template: dict[str, Any]) -> dict[str, Any] | None:
        if not self.init_from:
            message = "Initialisation: random (no init_from); every tensor newly initialised."
            log(message)
            self._write_text("init_report.txt", message + "\n")
            return None
        variables, self.init_report = pretrained.initial_variables(
            self.init_from, template, in_channels_reduce=self.config.get("finetune", {}).get("in_channels_reduce", "sum")
        )
        log(self.init_report.summary())
        self._write_text("init_report.txt", self.init_report.details())
        return variables

    def trainable(self, params: Any) -> Any:
        freeze = tuple(self.config.get("finetune", {}).get("freeze", ()) or ())
        if not freeze:
            return None
        mask = pretrained.trainable_mask(params, freeze, self._backbone_prefix())
        log(f"Frozen stages: {', '.join(freeze)} ({sum(not t for t in jax.tree.leaves(mask))} tensors get no updates).")
        return mask

    # ---- outputs ----
    def _write_text(self, name: str, text: str) -> None:
        if self.output_dir is None or jax.process_index() != 0:
            return
        path = os.path.join(self.output_dir, name)
        nifti.atomic_write(path, lambda tmp: open(tmp, "w").write(text))

    def _evaluate_step(self, state, mesh):
        from vdt_jax.train.step import jit_eval_step

        if self._eval_step is None:
            self._eval_step = jit_eval_step(self, state, mesh)
        return self._eval_step


# ============================================================ classification


class Classification3DTask(FinetuneTask):
    """Classify 3D crops (around a manifest's world-coordinate centres) with a 3D ResNet.

    Config fields (besides the loop's): data.path (CSV/JSON manifest) or
    data.synthetic="classification", data.class_names, data.train_split /
    eval_split, data.crop_size, data.max_shift, data.rotate90, data.flip_axes,
    data.train_fraction / fraction_seed, the intensity and spacing fields of
    `datasets.Preprocessing`, and model.* (depth_stride=True for LIDC).
    """

    def __init__(self, config: ml_collections.ConfigDict, output_dir: str | None = None):
        if not config.data.get("class_names"):
            raise ValueError("set data.class_names, e.g. ('benign', 'malignant'): the manifest's labels index them")
        super().__init__(config, tuple(config.data.class_names), output_dir)
        data = config.data
        rows = datasets.read_manifest(data_path(config, "a CSV/JSON manifest"), len(self.class_names))
        train_split = datasets.SPLIT_ALIASES.get(data.get("train_split", "train"), data.get("train_split"))
        eval_split = datasets.SPLIT_ALIASES.get(data.get("eval_split", "val"), data.get("eval_split"))
        train = [r for r in rows if r.split == train_split]
        self.eval_rows = [r for r in rows if r.split == eval_split]
        if not train or not self.eval_rows:
            raise ValueError(
                f"the manifest needs rows in split {train_split!r} and {eval_split!r}; found {len(train)} and {len(self.eval_rows)}"
            )
        fraction = float(data.get("train_fraction", 1.0))
        self.train_rows = datasets.select_fraction(train, fraction, data.get("fraction_seed", 0), [r.label for r in train])
        if fraction < 1.0:
            log(f"data.train_fraction={fraction}: training on {len(self.train_rows)} of {len(train)} examples (stratified).")
        unique = {r.image: r for r in self.train_rows + self.eval_rows}
        items = [(r.image, None, r.where) for r in unique.values()]
        cached = dict(zip(unique, self._preprocess(items, "classification")))
        self.train_source = datasets.ClassificationSource(self.train_rows, [cached[r.image] for r in self.train_rows], "train")
        self.eval_source = datasets.ClassificationSource(self.eval_rows, [cached[r.image] for r in self.eval_rows], "eval")

    def build_model(self) -> nn.Module:
        return build_model(self.config.model, num_classes=len(self.class_names))

    @property
    def num_train_examples(self) -> int:
        return len(self.train_source)

    def train_iterator(self, *, seed: int, per_process_batch: int):
        crop = augment.RandomCentredCrop(self.config.data.crop_size, self.config.data.get("max_shift", 0), self._augment())
        return self._loader(self.train_source, [crop], seed=seed, per_process_batch=per_process_batch)

    def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """Centred crops of this process's contiguous share, padded; every process yields as many batches."""
        count, processes = len(self.eval_source), jax.process_count()
        share = -(-count // processes)
        start = min(jax.process_index() * share, count)
        examples = (
            grain.MapDataset.source(self.eval_source)[start : min(start + share, count)]
            .map(augment.CentredCrop(self.config.data.crop_size))
            .map_with_index(lambda i, example: {**example, "index": np.int32(start + i)})
        )
        batches = list(examples.batch(per_process_batch, drop_remainder=False).to_iter_dataset()) if len(examples) else []
        channels = self.cache.preprocessing.channels
        empty = {
            "image": np.zeros((0, *self.config.data.crop_size, channels), np.float32),
            "label": np.zeros((0,), np.int32),
            "index": np.zeros((0,), np.int32),
        }
        for i in range(-(-share // per_process_batch)):
            yield _pad_batch(batches[i] if i < len(batches) else empty, per_process_batch)

    def loss(self, outputs, batch):
        labels = batch["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(outputs, -1) == labels)}

    def eval_metrics(self, outputs, batch):
        """Per-example class probabilities with their labels and mask (reduced on the host by `evaluate`)."""
        return {"probs": jax.nn.softmax(outputs), "label": batch["label"], "index": batch["index"], "mask": batch["mask"]}

    def evaluate(self, state, mesh) -> dict[str, float]:
        step = self._evaluate_step(state, mesh)
        per_process = mesh_lib.per_process_batch_size(self.config.eval_batch_size, mesh)
        outputs: dict[str, list[np.ndarray]] = {"probs": [], "label": [], "index": []}
        for batch in self.eval_batches(per_process_batch=per_process):
            out = mesh_lib.to_host(step(state, mesh_lib.global_batch(batch, mesh)))
            for key, values in outputs.items():
                values.append(out[key][out["mask"]])
        order = np.argsort(np.concatenate(outputs["index"]))  # back to manifest order, whatever the process layout
        probs, labels = np.concatenate(outputs["probs"])[order], np.concatenate(outputs["label"])[order]
        result = metrics.classification_metrics(probs, labels, self.class_names)
        self._write_predictions(probs, labels, result)
        return result

    def _write_predictions(self, probs: np.ndarray, labels: np.ndarray, result: dict[str, float]) -> None:
        if self.output_dir is None or jax.process_index() != 0:
            return
        lines = [["image", "where", "label", "prediction", *[f"p_{n}" for n in self.class_names]]]
        for row, p, label in zip(self.eval_rows, probs, labels):
            lines.append([row.image, row.where, int(label), int(p.argmax()), *[f"{v:.6f}" for v in p]])
        text = "".join(",".join(map(str, line)) + "\n" for line in lines)
        self._write_text("eval_predictions.csv", text)
        matrix = metrics.confusion_matrix(labels, probs.argmax(-1), len(self.class_names)).tolist()
        summary = {**result, "confusion_matrix": {"rows_true_columns_predicted": list(self.class_names), "counts": matrix}}
        self._write_text("eval_metrics.json", json.dumps(summary, indent=2) + "\n")


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    valid = len(next(iter(batch.values())))
    out = {k: np.concatenate([v, np.zeros((size - valid, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    out["mask"] = np.arange(size) < valid
    return out


# ============================================================== segmentation


class SegmentationTask(FinetuneTask):
    """Segment volumes with a UNet on a 3D ResNet encoder; whole-volume sliding-window evaluation.

    Config fields (besides the loop's): data.path (dataset.json) or
    data.synthetic="segmentation", data.train_key / eval_key / num_val_cases,
    data.crop_size, data.foreground_probability, data.samples_per_case,
    data.flip_axes, data.rotate_planes, data.train_fraction / fraction_seed,
    intensity and spacing fields; eval.window / stride / weighting /
    write_predictions / figure_slices; loss.dice_weight / ce_weight.
    """

    def __init__(self, config: ml_collections.ConfigDict, output_dir: str | None = None):
        data = config.data
        path = data_path(config, "a dataset.json")
        train, self.eval_cases, names = datasets.read_decathlon(
            path,
            train_key=data.get("train_key", "training"),
            eval_key=data.get("eval_key", "validation"),
            num_val_cases=int(data.get("num_val_cases", 0)),
            seed=int(data.get("val_seed", 0)),  # not fraction_seed: a sweep must keep one validation set
        )
        super().__init__(config, tuple(data.get("class_names") or names), output_dir)
        fraction = float(data.get("train_fraction", 1.0))
        self.train_cases = datasets.select_fraction(train, fraction, data.get("fraction_seed", 0))
        if fraction < 1.0:
            log(f"data.train_fraction={fraction}: training on {len(self.train_cases)} of {len(train)} cases.")
        self.train_volumes = self._preprocess([(c.image, c.label, c.where) for c in self.train_cases], "training")
        self.eval_volumes = self._preprocess([(c.image, c.label, c.where) for c in self.eval_cases], "evaluation")
        self.train_source = datasets.SegmentationSource(self.train_volumes, data.get("samples_per_case", 1), "train")

    def build_model(self) -> nn.Module:
        return build_unet(self.config.model, num_classes=len(self.class_names))

    def _backbone_prefix(self) -> tuple[str, ...]:
        return (pretrained.BACKBONE_KEY,)

    @property
    def num_train_examples(self) -> int:
        return len(self.train_source)

    def train_iterator(self, *, seed: int, per_process_batch: int):
        data = self.config.data
        crop = augment.RandomForegroundCrop(data.crop_size, data.get("foreground_probability", 0.5), self._augment())
        return self._loader(self.train_source, [crop], seed=seed, per_process_batch=per_process_batch)

    # ---- loss ----
    def loss(self, outputs, batch):
        labels = batch["label"].astype(jnp.int32)
        onehot = jax.nn.one_hot(labels, outputs.shape[-1], dtype=jnp.float32)
        ce = optax.softmax_cross_entropy(outputs, onehot).mean()
        dice = soft_dice(jax.nn.softmax(outputs), onehot)
        weights = self.config.get("loss", {})
        loss = weights.get("dice_weight", 1.0) * (1.0 - dice.mean()) + weights.get("ce_weight", 1.0) * ce
        return loss, {"ce": ce, "dice": dice[1:].mean(), "voxel_accuracy": jnp.mean(jnp.argmax(outputs, -1) == labels)}

    # ---- sliding-window evaluation ----
    def _plans(self) -> list[sliding_window.Plan]:
        window, stride = tuple(self.config.eval.window), tuple(self.config.eval.stride)
        return [sliding_window.plan(v.geometry.model_shape, window, stride) for v in self.eval_volumes]

    def eval_batches(self, *, per_process_batch: int) -> Iterator[dict[str, np.ndarray]]:
        """The windows of every evaluation volume, in global batches of eval_batch_size; this process's rows.

        Rows carry the window's 'case' index and 'start', so `evaluate` can
        stitch the replicated outputs; padding rows have mask False.
        """
        plans, images = self._plans(), {}
        windows = [(case, start) for case, plan in enumerate(plans) for start in plan.starts]
        global_batch = per_process_batch * jax.process_count()
        first = jax.process_index() * per_process_batch
        for i in range(0, len(windows), global_batch):
            rows = windows[i : i + global_batch][first : first + per_process_batch]
            batch = {"image": [], "case": [], "start": []}
            for case, start in rows:
                if case not in images:
                    images = {case: self.eval_volumes[case].image()}  # keep one volume open at a time
                batch["image"].append(plans[case].window_of(images[case], start, self.eval_volumes[case].pad_value))
                batch["case"].append(case)
                batch["start"].append(start)
            channels = self.cache.preprocessing.channels
            arrays = {
                "image": np.stack(batch["image"]) if rows else np.zeros((0, *plans[0].window, channels), np.float32),
                "case": np.asarray(batch["case"], np.int32),
                "start": np.asarray(batch["start"], np.int32).reshape(-1, 3),
            }
            yield _pad_batch(arrays, per_process_batch)

    def eval_metrics(self, outputs, batch):
        """Per-window class probabilities with their case, start and mask (stitched on the host by `evaluate`)."""
        return {"probs": jax.nn.softmax(outputs), "case": batch["case"], "start": batch["start"], "mask": batch["mask"]}

    def evaluate(self, state, mesh) -> dict[str, float]:
        step = self._evaluate_step(state, mesh)
        per_process = mesh_lib.per_process_batch_size(self.config.eval_batch_size, mesh)
        weighting = self.config.eval.get("weighting", "gaussian")
        stitchers = {i: sliding_window.Stitcher(p, weighting) for i, p in enumerate(self._plans())}
        dice: dict[int, np.ndarray] = {}
        for batch in self.eval_batches(per_process_batch=per_process):
            out = mesh_lib.to_host(step(state, mesh_lib.global_batch(batch, mesh)))
            for probs, case, start in zip(out["probs"][out["mask"]], out["case"][out["mask"]], out["start"][out["mask"]]):
                stitcher = stitchers[int(case)]
                stitcher.add(start, probs)
                if stitcher.complete:
                    dice[int(case)] = self._finish_case(int(case), stitchers.pop(int(case)).result())
        per_case = [dice[i] for i in range(len(self.eval_volumes))]
        result = metrics.summarise_dice(per_case, self.class_names)
        self._write_dice_table(per_case, result)
        return result

    def _finish_case(self, case: int, probs: np.ndarray) -> np.ndarray:
        """Score one stitched case at the source resolution and write its prediction; returns per-class Dice."""
        volume = self.eval_volumes[case]
        prediction = probs.argmax(-1).astype(np.uint8)
        geometry = volume.geometry
        at_source = nifti.resize(prediction, geometry.canonical_shape, order=0)
        dice = metrics.dice_per_class(at_source, volume.label_at_source_resolution(), len(self.class_names))
        if self._writes_predictions:
            name = _case_name(self.eval_cases[case].image)
            folder = os.path.join(self.output_dir, "predictions")
            nifti.save_label(os.path.join(folder, name + ".nii.gz"), at_source, geometry)
            figures.segmentation_overlay(
                os.path.join(folder, name + ".png"),
                volume.image()[..., 0],
                np.asarray(volume.label()),
                prediction,
                self.class_names,
                num_slices=int(self.config.eval.get("figure_slices", 3)),
                title=f"{name}: Dice " + ", ".join(f"{n} {d:.3f}" for n, d in zip(self.class_names[1:], dice[1:])),
            )
        return dice

    @property
    def _writes_predictions(self) -> bool:
        return self.output_dir is not None and jax.process_index() == 0 and self.config.eval.get("write_predictions", True)

    def _write_dice_table(self, dice: list[np.ndarray], result: dict[str, float]) -> None:
        if not self._writes_predictions:
            return
        lines = [["case", "image", *self.class_names[1:]]]
        for case, row in zip(self.eval_cases, dice):
            lines.append([_case_name(case.image), case.image, *[f"{d:.4f}" for d in row[1:]]])
        self._write_text(os.path.join("predictions", "dice.csv"), "".join(",".join(line) + "\n" for line in lines))
        self._write_text("eval_metrics.json", json.dumps(result, indent=2) + "\n")


def soft_dice(probs: jax.Array, onehot: jax.Array, smooth: float = 1e-5) -> jax.Array:
    """Per-class soft Dice over the whole batch, (num_classes,); absent-and-unpredicted classes score 1."""
    axes = tuple(range(probs.ndim - 1))
    overlap = jnp.sum(probs * onehot, axis=axes)
    sizes = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
    return (2 * overlap + smooth) / (sizes + smooth)


def _case_name(path: str) -> str:
    name = os.path.basename(path)
    for extension in nifti.NIFTI_EXTENSIONS[::-1]:
        if name.endswith(extension):
            return name[: -len(extension)]
    return os.path.splitext(name)[0]
