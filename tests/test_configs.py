"""The configs: each default is written once, recipes only override known fields, and every field is settable.

A recipe that set a misspelt field would add a new key that no code reads; comparing
the key sets with the defaults' catches it.
"""

import pathlib

import pytest
from absl import flags
from ml_collections import config_dict, config_flags

import configs.default
import configs.finetune_default

CONFIGS = pathlib.Path(configs.default.__file__).parent
PRETRAIN = ["default.py", "imagenet_r3d18.py", "imagenet_r3d18_bf16.py"]
FINETUNE = ["finetune_default.py", "finetune_default.py:classification", "lidc_r3d18.py", "bcv_unet_r3d18.py", "lits_unet_r3d18.py"]


def load(spec: str, *overrides: str) -> config_dict.ConfigDict:
    argv = ["test", f"--config={CONFIGS / spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", str(CONFIGS / spec), flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def keys(config: config_dict.ConfigDict, prefix: str = "") -> set[str]:
    out = set()
    for name, value in config.items():
        out |= keys(value, f"{prefix}{name}.") if isinstance(value, config_dict.ConfigDict) else {prefix + name}
    return out


@pytest.mark.parametrize("spec", PRETRAIN)
def test_pretraining_configs_have_exactly_the_default_fields(spec):
    assert keys(load(spec)) == keys(configs.default.get_config())


@pytest.mark.parametrize("spec", FINETUNE)
def test_finetuning_configs_have_exactly_the_default_fields(spec):
    config = load(spec)
    assert keys(config) == keys(configs.finetune_default.get_config(config.task))


def test_fields_that_mean_none_are_settable_from_the_command_line():
    config = load(
        "finetune_default.py:classification",
        "--config.data.target_spacing=()",
        "--config.data.hu_window=()",
        "--config.data.normalize=fixed",
        "--config.data.normalize_mean_std=(99,77)",
        '--config.data.class_names=("a","b","c")',
        "--config.data.cache_dir=/tmp/cache",
    )
    assert config.data.target_spacing == () and config.data.hu_window == ()
    assert config.data.normalize == "fixed" and tuple(config.data.normalize_mean_std) == (99, 77)
    assert config.data.class_names == ("a", "b", "c") and config.data.cache_dir == "/tmp/cache"
    assert load("bcv_unet_r3d18.py", "--config.data.target_spacing=(1,1,1)").data.target_spacing == (1, 1, 1)
