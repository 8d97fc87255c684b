"""Tests of vdt_jax.weights.files: bit-identical round trips, and weight files that are broken or unsafe."""

from __future__ import annotations

import os
import pickle

import pytest

from tests.weight_fakes import assert_trees_equal, random_variables, shape_template
from vdt_jax.weights import files, keys, load


@pytest.mark.parametrize(
    "extension, style",
    [(".safetensors", "plain"), (".safetensors", "mmcls"), (".pth", "plain"), (".pth", "medicalnet")],
)
def test_round_trip_is_bit_identical(tmp_path, extension, style):
    if extension == ".pth":
        pytest.importorskip("torch")
    variables = random_variables(18, seed=1, num_classes=7)
    path = tmp_path / f"r3d18{extension}"
    state = files.export_torch_weights(variables, path, keys=style)
    loaded, report = load.load_torch_weights(path, shape_template(18, num_classes=7))
    assert_trees_equal(loaded, variables)
    assert len(report.loaded) == len(state) - 20  # 20 BatchNorm counters in ResNet-18
    assert set(report.unused) == {k for k in report.unused if k.endswith("num_batches_tracked")}
    assert not report.adapted and not report.new


def test_safetensors_round_trip_works_without_torch(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is hidden in this test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    variables = random_variables(10, num_classes=2)
    files.export_torch_weights(variables, tmp_path / "w.safetensors")
    loaded, _ = load.load_torch_weights(tmp_path / "w.safetensors", variables)
    assert_trees_equal(loaded, variables)
    with pytest.raises(ImportError, match="needs PyTorch"):
        files.export_torch_weights(variables, tmp_path / "w.pth")


def test_truncated_safetensors_file(tmp_path):
    path = tmp_path / "w.safetensors"
    files.export_torch_weights(random_variables(10, num_classes=2), path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(keys.WeightConversionError, match="not a readable safetensors file .truncated or corrupt"):
        files.read_state_dict(path)


def test_truncated_pth_file(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "w.pth"
    files.export_torch_weights(random_variables(10, num_classes=2), path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(keys.WeightConversionError, match="not a readable PyTorch file .truncated or corrupt"):
        files.read_state_dict(path)


def test_pickle_that_is_not_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save([torch.zeros(2), torch.ones(3)], tmp_path / "list.pth")
    with pytest.raises(keys.WeightConversionError, match="holds a list, not a state dict"):
        files.read_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(keys.WeightConversionError, match="not a state dict.*'epoch': int"):
        files.read_state_dict(tmp_path / "meta.pth")


def test_nested_state_dict_is_found(tmp_path):
    torch = pytest.importorskip("torch")
    variables = random_variables(10, num_classes=2)
    state = keys.to_torch_state_dict(variables, keys="mmcls")
    nested = {"meta": {"epoch": 100}, "state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}
    torch.save(nested, tmp_path / "c.pth")
    loaded, _ = load.load_torch_weights(tmp_path / "c.pth", variables)
    assert_trees_equal(loaded, variables)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_that_would_run_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"conv1.weight": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(keys.WeightConversionError, match="refused to unpickle.*unsupported GLOBAL") as error:
        files.read_state_dict(tmp_path / "evil.pth")
    assert "weights_only` set to `False`" not in str(error.value)
    with open(tmp_path / "evil.pt", "wb") as f:  # a bare pickle, not torch's zip format
        pickle.dump({"a": _RunsCode()}, f, protocol=2)
    with pytest.raises(keys.WeightConversionError, match="refused to unpickle|not a readable PyTorch file"):
        files.read_state_dict(tmp_path / "evil.pt")


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(keys.WeightConversionError, match=r"unknown weight file extension '\.npz'"):
        files.read_state_dict(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="no weight file at .*nowhere.pth"):
        files.read_state_dict(tmp_path / "nowhere.pth")
    with pytest.raises(keys.WeightConversionError, match="unknown weight file extension"):
        files.write_state_dict({}, tmp_path / "w.h5")
