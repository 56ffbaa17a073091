import pytest

from ratchet.core import params
from ratchet.core.params import ParamsError

from ..conftest import ROOT, tiny_params, write_params


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
    with pytest.raises(ParamsError, match=r"dapt\.steps: expected int, got float 1\.5"):
        params.load(_with(tmp_path, "dapt", steps=1.5), "dapt")
    with pytest.raises(ParamsError, match=r"dapt\.bf16: true, false or auto, got 'yes'"):
        params.load(_with(tmp_path, "dapt", bf16="yes"), "dapt")


def test_a_number_yaml_reads_as_text_gets_the_fix(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("lr: 1.0e-4", "lr: 1e-4"))
    with pytest.raises(ParamsError, match=r"dapt\.lr: expected float, got str '1e-4'.*write 1\.0e-4"):
        params.load(path, "dapt")


def test_a_missing_knob_is_an_error_not_a_silent_default(tmp_path):
    p = tiny_params()
    del p["distill"]["grad_clip"], p["quantize"]["sample_tokens"]
    with pytest.raises(ParamsError) as e:
        params.load_all(write_params(tmp_path / "p.yaml", p))
    assert "distill.grad_clip: missing" in str(e.value) and "quantize.sample_tokens: missing" in str(e.value)
    p = tiny_params()
    del p["fisher"]
    with pytest.raises(ParamsError, match="missing section"):
        params.load(write_params(tmp_path / "p.yaml", p), "run")


def test_a_typo_in_a_gate_rule_is_named_with_a_suggestion(tmp_path):
    p = tiny_params()
    p["gates"]["sft"][0] = {"metric": "domain_ppl", "max_ration": 1.1, "ref": "dapt"}
    with pytest.raises(ParamsError, match=r"gates\.sft\[0\]\.max_ration: unknown key; did you mean "
                                          r"`gates\.sft\[0\]\.max_ratio`"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")


def test_gate_refs_must_be_the_champion_or_an_earlier_model(tmp_path):
    p = tiny_params()
    p["gates"]["dapt"][0]["ref"] = "onnx"
    p["gates"]["sft"][0].pop("ref")
    with pytest.raises(ParamsError) as e:
        params.load(write_params(tmp_path / "p.yaml", p), "gates")
    assert "gates.dapt[0].ref: 'onnx' is not one of champion" in str(e.value)
    assert "gates.sft[0]: `ref` goes with `max_ratio`, `max_worse` or `min_gain`" in str(e.value)


def test_explicit_student_layers_must_agree_with_their_count(tmp_path):
    with pytest.raises(ParamsError, match="distill.keep_layers: lists 3 layers but student_layers is 2"):
        params.load(_with(tmp_path, "distill", student_layers=2, keep_layers=[0, 1, 3]), "distill")


def test_unknown_section_and_empty_gate_are_errors(tmp_path):
    p = tiny_params()
    p["dapts"] = {}
    with pytest.raises(ParamsError, match="unknown section"):
        params.load(write_params(tmp_path / "p.yaml", p), "dapt")
    p = tiny_params()
    p["gates"]["onnx"] = []
    with pytest.raises(ParamsError, match="gates.onnx: empty; give at least 1"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")
    p["gates"]["onnx"] = [{"metric": "domain_acc", "max": 1}]
    from ratchet.eval.rules import load_rules

    with pytest.raises(ParamsError, match=r"gates.onnx\[0\].metric: 'domain_acc' is not one of domain_ppl"):
        load_rules(write_params(tmp_path / "p.yaml", p))


def test_a_range_declared_on_a_field_names_the_bound_and_the_value(tmp_path):
    with pytest.raises(ParamsError) as e:
        params.load(_with(tmp_path, "dapt", lr=1.5, replay_fraction=-0.1, warmup_steps=7), "dapt")
    assert "dapt.lr: must be < 1.0, got 1.5" in str(e.value)
    assert "dapt.replay_fraction: must be >= 0.0, got -0.1" in str(e.value)
    assert "dapt.warmup_steps: must be at most steps (6), got 7" in str(e.value)
    with pytest.raises(ParamsError, match=r"base\.tiny_hidden: must be a multiple of 4, got 30"):
        params.load(_with(tmp_path, "base", tiny_hidden=30), "base")
    with pytest.raises(ParamsError, match=r"quantize\.block_size: must be a power of two, e\.g\. 32 or 64, got 48"):
        params.load(_with(tmp_path, "quantize", block_size=48), "quantize")
    with pytest.raises(ParamsError, match=r"pii\.spacy_model: 'en-core' does not match .*\(the import name of an"):
        params.load(_with(tmp_path, "pii", spacy_model="en-core"), "pii")


def test_a_bad_choice_names_the_choices_and_the_closest_one(tmp_path):
    with pytest.raises(ParamsError, match=r"distill\.layer_choice: 'angluar' is not one of angular, block_influence, "
                                          r"first_last; did you mean angular\?"):
        params.load(_with(tmp_path, "distill", layer_choice="angluar"), "distill")
    with pytest.raises(ParamsError, match=r"sft\.base_bits: 16 is not one of 32, 8, 4"):
        params.load(_with(tmp_path, "sft", base_bits=16), "sft")
    with pytest.raises(ParamsError, match=r"eval\.dtype: 'fp16' is not one of float32, bfloat16, auto"):
        params.load(_with(tmp_path, "eval", dtype="fp16"), "eval")
    with pytest.raises(ParamsError) as e:
        params.load(_with(tmp_path, "pii", policy={"EMAIL": "redact", "PHONE_NUMBER": "redcat"}), "pii")
    assert "pii.policy.EMAIL: 'EMAIL' is not one of PERSON, " in str(e.value)
    assert "pii.policy.PHONE_NUMBER: 'redcat' is not one of redact, drop, fail, allow; did you mean redact?" in str(
        e.value)


def test_a_count_per_role_needs_every_role_and_no_other(tmp_path):
    with pytest.raises(ParamsError) as e:
        params.load(_with(tmp_path, "validate", min_rows={"domian": 20, "sft": 0}), "validate")
    for problem in ("validate.min_rows.domian: unknown key; did you mean `validate.min_rows.domain`?",
                    "validate.min_rows.domain: missing", "validate.min_rows.general: missing",
                    "validate.min_rows.sft: must be >= 1, got 0"):
        assert problem in str(e.value)
    assert params.ROLES == ("domain", "sft", "general")


def test_a_rule_group_is_checked_against_each_of_its_refs_in_order(tmp_path):
    p = tiny_params()
    group = [{"metric": "answer_chrf", "max_worse": 2.0}, {"metric": "canary_leaks", "max": 0}]
    p["gates"]["sft"] = [{"metric": "domain_ppl", "max_ratio": 1.5, "ref": "dapt"},
                         {"refs": ["base", "champion"], "rules": group}]
    gates = params.load(write_params(tmp_path / "p.yaml", p), "gates")[0]
    assert [(r.metric, r.ref) for r in gates.rules("sft")] == [
        ("domain_ppl", "dapt"), ("answer_chrf", "base"), ("answer_chrf", "champion"), ("canary_leaks", None)]
    assert [where for where, _ in gates.located("sft")] == ["gates.sft[0]", "gates.sft[1].rules[0]",
                                                          "gates.sft[1].rules[0]", "gates.sft[1].rules[1]"]


def test_a_rule_group_names_its_own_mistakes(tmp_path):
    p = tiny_params()
    p["gates"]["dapt"] = [{"ref": "champion", "rules": [{"metric": "domain_ppl", "max_ratio": 1.1}]}]
    with pytest.raises(ParamsError, match=r"gates\.dapt\[0\]\.ref: unknown key; did you mean `gates\.dapt\[0\]\.refs`"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")
    p["gates"]["dapt"] = [{"refs": ["sft"], "rules": [{"metric": "domain_ppl", "max_ratio": 1.1, "ref": "base"}]}]
    with pytest.raises(ParamsError) as e:
        params.load(write_params(tmp_path / "p.yaml", p), "gates")
    assert "gates.dapt[0].refs[0]: 'sft' is not one of champion, shipped, base " in str(e.value)
    assert "gates.dapt[0].rules[0].ref: a rule of a group compares with the group's `refs`; remove it" in str(e.value)
    p["gates"]["dapt"] = [{"refs": ["champion"], "rules": [{"metric": "domain_ppl", "max_ration": 1.1}]}]
    with pytest.raises(ParamsError, match=r"gates\.dapt\[0\]\.rules\[0\]\.max_ration: unknown key; did you mean "
                                          r"`gates\.dapt\[0\]\.rules\[0\]\.max_ratio`"):
        params.load(write_params(tmp_path / "p.yaml", p), "gates")


def test_dvc_tracks_each_gate_with_the_rules_it_borrows_from_another(tmp_path):
    """params.yaml says a rule once (a YAML anchor) for every gate that checks it. DVC reads gates.<model> with the
    aliases resolved: the value a gate stage depends on holds every rule it checks, so editing an anchored rule
    reruns exactly the gates that use it."""
    from dvc.utils.serialize import parse_yaml

    text = (ROOT / "params.yaml").read_text()
    tracked = parse_yaml(text, "params.yaml")["gates"]
    assert {m: params.build("gates", tracked).rules(m) for m in params.GatesConfig.models()} == {
        m: params.load(ROOT / "params.yaml", "gates")[0].rules(m) for m in params.GatesConfig.models()}
    rule = "{metric: answer_repetition, max_worse: 0.05}"
    assert text.count(rule) == 1, "the answer rules are said once, under the anchor &answers_as_well"
    edited = parse_yaml(text.replace(rule, rule.replace("0.05", "0.04")), "params.yaml")["gates"]
    assert {m for m in tracked if edited[m] != tracked[m]} == {"sft", "student", "onnx"}


def test_base_source_must_be_known_or_a_model_folder(tmp_path):
    with pytest.raises(ParamsError, match="base.source"):
        params.load(_with(tmp_path, "base", source=str(tmp_path / "nowhere")), "base")


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_the_machine_computes_it_natively(tmp_path, monkeypatch, native):
    from ratchet.core import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    p = tiny_params()
    for section in ("dapt", "sft", "distill", "fisher"):
        p[section]["bf16"] = "auto"
    p["eval"]["dtype"] = "auto"
    p["sft"]["bf16"] = True  # an explicit choice stands on any machine
    path = write_params(tmp_path / "p.yaml", p)
    assert [params.load(path, s)[0].bf16 for s in ("dapt", "distill", "fisher")] == [native] * 3
    assert params.load(path, "sft")[0].bf16 is True
    assert params.load(path, "eval")[0].dtype == ("bfloat16" if native else "float32")


def test_a_bf16_instruction_set_is_read_off_the_cpu_flags():
    from ratchet.core.runtime import cpu_has_bf16

    epyc_zen2 = "flags\t\t: fpu vme sse2 avx avx2 fma bmi2 sha_ni"
    sapphire_rapids = "flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile"
    assert not cpu_has_bf16(epyc_zen2, "x86_64") and cpu_has_bf16(sapphire_rapids, "x86_64")
    assert not cpu_has_bf16("flags\t\t: avx512f avx512bw avx512_vnni", "x86_64")  # AVX-512 without bf16
    assert cpu_has_bf16("Features\t: fp asimd sve bf16 i8mm", "aarch64") and not cpu_has_bf16(
        "Features\t: fp asimd", "aarch64")


def test_every_section_dumps_as_it_was_read_and_builds_back_to_the_same_config():
    """A config's dump is what a lineage records: rule groups dump as groups, with no serializer warning."""
    import warnings

    for name, cfg in params.load_all(ROOT / "params.yaml").items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dumped = params.as_dict(cfg)
        assert params.build(name, dumped) == cfg, name
