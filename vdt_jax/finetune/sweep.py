r"""Label efficiency in miniature: metric vs fraction of training data, pre-trained vs from scratch.

    python -m vdt_jax.finetune.sweep                      # demo classification, 3 seeds, ./workdirs/finetune_sweep
    python -m vdt_jax.finetune.sweep --config=configs/finetune_default.py --seeds=0 \
        --sweep_dir=workdirs/finetune_sweep_seg            # the segmentation demo instead (slower)

Every (fraction, initialisation, seed) is an ordinary fine-tuning run (the
shared loop) in its own workdir under --sweep_dir, with `data.train_fraction`
and `data.fraction_seed` set and the same number of optimizer steps, so fewer
labels means more passes over them, not less training. A finished run leaves
`result.json` and is skipped when the sweep is run again (an interrupted one
resumes from its checkpoint). The sweep writes results.csv, results.md (mean
and standard deviation over seeds, and the pre-trained minus scratch gap) and
label_efficiency.png into --sweep_dir.

"pretrained" starts from --pretrained (default: the demo pre-training workdir,
./workdirs/pretrain_demo; run `python -m vdt_jax.pretrain` first); "scratch"
from random weights. XLA compilations are cached on disk (`vdt_jax.compile_cache`),
so only the first run of each shape pays for compiling. --print_config prints
the fine-tuning config every run starts from; a mistake in the command ends it
with one "error: ..." line and exit status 2 (VDT_TRACEBACK=1 shows the traceback).
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
from absl import flags

import configs.finetune_default
from vdt_jax import compile_cache, entrypoint, storage  # compile_cache: at import, defines --compile_cache
from vdt_jax.atomic import write_text_atomic
from vdt_jax.errors import UserError

entrypoint.define_config_flag(
    "config", configs.finetune_default.__file__ + ":classification", "The fine-tuning config to sweep."
)
flags.DEFINE_string("sweep_dir", os.path.join("workdirs", "finetune_sweep"), "Run folders, tables and the plot go here.")
flags.DEFINE_list("fractions", ["0.125", "0.25", "0.5", "1.0"], "Fractions of the training data.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: each picks another subset, data order and new-layer initialisation.")
flags.DEFINE_string("pretrained", "auto", "Pre-trained weights for the 'pretrained' arm (vdt-jax workdir or .pth/.safetensors).")
flags.DEFINE_string("metric", "", "Metric to compare; default mean_dice (segmentation) or auc (classification).")

INITS = ("pretrained", "scratch")


def run_name(fraction: float, init: str, seed: int) -> str:
    return f"frac{fraction:g}_{init}_seed{seed}"


def run_one(config, workdir: str) -> dict:
    """One fine-tuning run, or its stored result when it already finished."""
    from vdt_jax.finetune import make_task
    from vdt_jax.train import loop

    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    start = time.perf_counter()
    metrics = loop.train_and_evaluate(config, workdir, make_task(config, output_dir=workdir))
    result = {"metrics": metrics, "seconds": time.perf_counter() - start, "train_fraction": config.data.train_fraction}
    write_text_atomic(result_path, json.dumps(result, indent=2))
    return result


def sweep(base_config, sweep_dir: str, fractions: list[float], seeds: list[int], pretrained: str, metric: str) -> list[dict]:
    """Run every (fraction, init, seed) and return one row per run."""
    rows = []
    for fraction in fractions:
        for init in INITS:
            for seed in seeds:
                config = copy.deepcopy(base_config)
                config.seed = seed
                config.data.train_fraction = fraction
                config.data.fraction_seed = seed
                config.init_from = pretrained if init == "pretrained" else ""
                workdir = os.path.join(sweep_dir, run_name(fraction, init, seed))
                print(f"\n=== {run_name(fraction, init, seed)} -> {workdir}", flush=True)
                result = run_one(config, workdir)
                rows.append({"fraction": fraction, "init": init, "seed": seed, "value": result["metrics"][metric],
                             "seconds": result["seconds"], "workdir": workdir})
    return rows


def summarise(rows: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """init -> [(fraction, mean, std over seeds)]."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for init in INITS:
        for fraction in sorted({r["fraction"] for r in rows}):
            values = [r["value"] for r in rows if r["init"] == init and r["fraction"] == fraction]
            series.setdefault(init, []).append((fraction, float(np.mean(values)), float(np.std(values))))
    return series


def write_outputs(rows: list[dict], sweep_dir: str, metric: str, title: str) -> dict[str, str]:
    from vdt_jax.finetune import figures

    series = summarise(rows)
    paths = {name: os.path.join(sweep_dir, name) for name in ("results.csv", "results.md", "label_efficiency.png")}
    csv_text = "fraction,init,seed,{},seconds,workdir\n".format(metric) + "".join(
        f"{r['fraction']:g},{r['init']},{r['seed']},{r['value']:.4f},{r['seconds']:.0f},{r['workdir']}\n" for r in rows
    )
    write_text_atomic(paths["results.csv"], csv_text)
    seeds = len({r["seed"] for r in rows})
    lines = [
        f"# {title}", "",
        f"{metric} on the validation set, mean +- std over {seeds} seed(s); every run has the same number of steps.", "",
        "| fraction of training data | pretrained | scratch | pretrained - scratch |", "|---|---|---|---|",
    ]
    for (fraction, p_mean, p_std), (_, s_mean, s_std) in zip(series["pretrained"], series["scratch"]):
        lines.append(f"| {fraction:g} | {p_mean:.4f} +- {p_std:.4f} | {s_mean:.4f} +- {s_std:.4f} | {p_mean - s_mean:+.4f} |")
    md_text = "\n".join(lines) + "\n"
    write_text_atomic(paths["results.md"], md_text)
    figures.label_efficiency_plot(paths["label_efficiency.png"], series, metric=metric, title=title)
    print("\n" + md_text)
    return paths


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like --name=value)")
    if entrypoint.print_config_requested():
        return
    entrypoint.quiet_logs()
    FLAGS = flags.FLAGS
    config = FLAGS.config
    sweep_dir = storage.check_workdir(FLAGS.sweep_dir, "--sweep_dir")
    if storage.is_url(sweep_dir):
        raise UserError(f"--sweep_dir={sweep_dir}: the sweep keeps its runs and XLA cache in a local folder")
    fractions, seeds = _numbers("fractions", float), _numbers("seeds", int)
    from vdt_jax.finetune import check_config

    check_config(config)
    if FLAGS.pretrained != "auto":
        storage.check_exists(FLAGS.pretrained, "--pretrained")
    from vdt_jax.finetune.base import resolve_init_from
    from vdt_jax.train import reporting

    pretrained = resolve_init_from(FLAGS.pretrained)
    if not pretrained:
        raise UserError("the sweep compares against pre-trained weights: run `python -m vdt_jax.pretrain` or pass --pretrained=PATH")
    os.makedirs(sweep_dir, exist_ok=True)
    compile_cache.enable_from_flags()
    metric = FLAGS.metric or ("mean_dice" if config.task == "segmentation" else "auc")
    config.eval.write_predictions = False  # only the metric matters here
    start = time.perf_counter()
    rows = sweep(config, sweep_dir, fractions, seeds, pretrained, metric)
    title = (
        f"Label efficiency ({config.task}, {config.num_train_steps} steps per run, "
        f"{len(seeds)} seed(s), bars +-1 std)"
    )
    paths = write_outputs(rows, sweep_dir, metric, title)
    print(f"Sweep done in {reporting.format_duration(time.perf_counter() - start)}: " + ", ".join(paths.values()))


def _numbers(name: str, kind: type) -> list:
    try:
        return [kind(value) for value in flags.FLAGS[name].value]
    except ValueError:
        raise UserError(f"--{name}={','.join(flags.FLAGS[name].value)}: expected comma-separated {kind.__name__}s") from None


if __name__ == "__main__":
    entrypoint.run(main)
