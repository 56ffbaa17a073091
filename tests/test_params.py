import pytest
import yaml

from stages.common import params
from stages.common.params import ParamsError

from .conftest import ROOT, tiny_params, write_params


def test_every_section_of_params_yaml_and_of_the_tiny_profile_parses(tmp_path):
    assert set(params.load_all(ROOT / "params.yaml")) == set(params.SECTIONS)
    params.load_all(write_params(tmp_path / "p.yaml", tiny_params()))


def _with(tmp_path, section, **changes):
    p = tiny_params()
    p[section] = {**p.get(section, {}), **changes}
    return write_params(tmp_path / "p.yaml", p)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"sft\.lora_rank: unknown key; did you mean `sft\.lora_r`"):
        params.load(_with(tmp_path, "sft", lora_rank=8), "sft")


def test_bad_values_are_all_reported_at_once(tmp_path):
    with pytest.raises(ParamsError) as e:
        params.load(_with(tmp_path, "dapt", lr=-1.0, steps=0), "dapt")
    assert "dapt.lr" in str(e.value) and "dapt.steps" in str(e.value)


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"distill\.temperature: expected float, got str"):
        params.load(_with(tmp_path, "distill", temperature="hot"), "distill")


def test_unknown_section_and_empty_gate_are_errors(tmp_path):
    p = tiny_params()
    p["dapts"] = {}
    with pytest.raises(ParamsError, match="unknown section"):
        params.load(write_params(tmp_path / "p.yaml", p), "dapt")
    p = tiny_params()
    p["gates"]["onnx"] = []
    with pytest.raises(ParamsError, match="gates.onnx: no rules"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")
    p["gates"]["onnx"] = [{"metric": "domain_acc", "max": 1}]
    with pytest.raises(ParamsError, match=r"gates.onnx\[0\].metric"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")


def test_base_source_must_be_known_or_a_model_folder(tmp_path):
    with pytest.raises(ParamsError, match="base.source"):
        params.load(_with(tmp_path, "base", source=str(tmp_path / "nowhere")), "base")
