"""Each shared context scored once gives lm-eval's own log-likelihoods, for the PyTorch and the ONNX model."""
import pytest

from ratchet.core import params
from ratchet.eval import evaluate, shared_context

from ..conftest import ROOT, assert_same_scores, with_lineage

LL_TASKS = ("ratchet_domain_ppl", "ratchet_general_ppl", "ratchet_domain_mc", "ratchet_general_mc",
            "ratchet_bbq_gender", "ratchet_stereotype_pairs", "ratchet_canary_rank", "ratchet_canary_control")


def test_plan_shares_the_truncated_context_and_predicts_every_continuation_token():
    requests = [(None, [1, 2, 3], [4, 5]), (None, [1, 2, 3], [6]), (None, [9], [7, 8]), (None, [1, 2, 3, 4, 5], [6, 7])]
    groups = shared_context.plan(requests, max_length=4)
    # the prefix is the context but its last token; that token and the continuation but its last are the input
    assert groups[(1, 2)] == [(0, [3, 4], [4, 5]), (1, [3], [6])]
    assert groups[()] == [(2, [9, 7], [7, 8])]
    # lm-eval's HF rule: the last max_length + 1 tokens, the last one never fed
    assert groups[(3, 4)] == [(3, [5, 6], [6, 7])]
    with pytest.raises(ValueError, match="empty continuation"):
        shared_context.plan([(None, [1], [])], max_length=4)


def ll_tasks(prepared, cfg) -> dict:
    from ratchet.core import params
    from ratchet.models import canaries

    audit = canaries.draw(params.load(ROOT / "params.yaml", "dapt")[0].canaries, 0, "seed")  # dapt's, and controls
    tasks = {t: rows for t, rows in evaluate.task_data(str(prepared), str(ROOT / "data/eval"), cfg, audit).items()
             if t in LL_TASKS}
    assert set(tasks) == set(LL_TASKS)
    return tasks


def same_scores(shared: dict, stock: dict) -> None:
    assert_same_scores(shared["scores"], stock["scores"], LL_TASKS)
    for name, value in stock["metrics"].items():
        assert shared["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.fixture(scope="module")
def fp32_scores(tiny_base, prepared, tiny_params_file):
    cfg = params.load(tiny_params_file, "eval")[0].model_copy(update={"dtype": "float32"})
    return cfg, evaluate.run_suite("hf", str(tiny_base), str(prepared), cfg, tasks=ll_tasks(prepared, cfg))


@pytest.mark.integration  # runs lm-eval or trains
def test_the_pytorch_model_scores_as_lm_eval_does(tiny_base, prepared, fp32_scores, monkeypatch):
    cfg, shared = fp32_scores
    original = evaluate.model_spec
    def stock(*a, **k):  # lm-eval's own HF model, with the arguments it knows
        args = original(*a, **k)[1]
        args.pop("answer_batch", None)
        return "hf", args

    monkeypatch.setattr(evaluate, "model_spec", stock)
    same_scores(shared, evaluate.run_suite("hf", str(tiny_base), str(prepared), cfg, tasks=ll_tasks(prepared, cfg)))


@pytest.mark.integration  # runs lm-eval or trains
def test_the_onnx_file_scores_as_the_pytorch_model_it_was_exported_from(tiny_base, prepared, fp32_scores, tmp_path):
    """lm-eval's own ONNX path truncates long requests differently (the last max_length tokens, where its HF
    path keeps max_length + 1): the ONNX model here follows the HF rule, so its fp32 export scores the same."""
    from ratchet.models.export import export_fp32

    cfg, torch_scores = fp32_scores
    export_fp32(tiny_base, tmp_path / "onnx")
    with_lineage(tmp_path / "onnx", start=tiny_base)
    same_scores(evaluate.run_suite("onnx", str(tmp_path / "onnx"), str(prepared), cfg, tasks=ll_tasks(prepared, cfg)),
                torch_scores)


@pytest.mark.integration  # runs lm-eval or trains
def test_the_onnx_file_answers_as_the_pytorch_model_whatever_the_answer_batch(tiny_base, prepared, tiny_params_file,
                                                                                 tmp_path):
    """Greedy answers of the fp32 export, decoded one at a time and four at a time (left-padded, positions
    per row), are the PyTorch model's answers word for word."""
    from ratchet.models.export import export_fp32

    cfg = params.load(tiny_params_file, "eval")[0].model_copy(update={"dtype": "float32", "answer_tokens": 24})
    tasks = {evaluate.ANSWER_TASK: evaluate.task_data(str(prepared), None, cfg)[evaluate.ANSWER_TASK][:6]}
    assert len({len(r["messages"][-1]["content"]) for r in tasks[evaluate.ANSWER_TASK]}) > 1  # padding is exercised
    export_fp32(tiny_base, tmp_path / "onnx")
    with_lineage(tmp_path / "onnx", start=tiny_base)

    def answers(kind, path, batch):
        out = evaluate.run_suite(kind, path, str(prepared), cfg.model_copy(update={"answer_batch": batch}),
                                 tasks=tasks)
        return [(r["id"], r["answer"]) for r in out["scores"][evaluate.ANSWER_TASK]]

    torch_answers = answers("hf", str(tiny_base), 1)
    assert all(a for _, a in torch_answers)
    assert answers("onnx", str(tmp_path / "onnx"), 1) == torch_answers
    assert answers("onnx", str(tmp_path / "onnx"), 4) == torch_answers


def test_answers_decoded_together_are_each_answer_decoded_alone_and_done_rows_leave_the_batch(tiny_base):
    """generation.greedy_tokens: prompts of different lengths decoded in one batch give each prompt's greedy
    answer decoded alone (which is transformers' own greedy generate), a row stops at a stop token without
    keeping it, and rows that are done leave the batch: later passes run fewer rows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ratchet.models.generation import greedy_tokens, torch_decoder

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, torch_dtype=torch.float32).eval()
    prompts = [tok.encode(t, add_special_tokens=False) for t in
               ("def join(a, b):", "Return the path", "What does os.path.join do in Python? Explain", "x")]
    run, select = torch_decoder(model)
    alone = [greedy_tokens([p], 12, set(), run, select)[0] for p in prompts]
    reference = model.generate(torch.tensor([prompts[2]]), attention_mask=torch.ones(1, len(prompts[2]), dtype=torch.long),
                               max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert alone[2] == reference[0, len(prompts[2]):].tolist()

    stop = {alone[1][3]}  # the second prompt's answer ends by its fourth token
    rows_per_pass = []

    def counting(ids, mask, positions, past):
        rows_per_pass.append(len(ids))
        return run(ids, mask, positions, past)

    together = greedy_tokens(prompts, 12, stop, counting, select)
    expected = [next((a[:i] for i, t in enumerate(a) if t in stop), a) for a in alone]
    assert together == expected
    assert len(together[1]) <= 3 and rows_per_pass[0] == 4 and min(rows_per_pass) < 4
    # grouped key/value heads read in place while decoding (the tiny model: 4 query heads, 2 key/value heads):
    # the same logits at every step, and the model's own attention back afterwards
    from ratchet.models.modeling import GROUPED_SDPA, grouped_decoding

    logits = []
    with grouped_decoding(model) as grouped:
        assert grouped.config._attn_implementation == GROUPED_SDPA
        g_run, g_select = torch_decoder(grouped)
        assert greedy_tokens(prompts, 12, stop, lambda *a: logits.append(g_run(*a)) or logits[-1], g_select) == expected
    assert model.config._attn_implementation == "sdpa"
    stock = []
    greedy_tokens(prompts, 12, stop, lambda *a: stock.append(run(*a)) or stock[-1], select)
    assert len(logits) == len(stock) and all((a[0] == b[0]).all() for a, b in zip(logits, stock))


def test_greedy_replies_come_back_in_prompt_order_with_finished_set_by_end_of_text(tiny_base):
    """generation.greedy (sft's self-distilled rewrites): replies decoded longest prompt first, in batches, come
    back in the prompts' order, each the reply transformers' greedy generate writes for its prompt alone; a reply
    is finished when end-of-text came within the budget."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ratchet.models import generation

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, torch_dtype=torch.float32).eval()
    prompts = ["x", "def join(a, b):", "What does os.path.join do in Python? Explain", "Return the path"]

    def alone(prompt, eos):
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        row = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             eos_token_id=eos, pad_token_id=0)[0, ids.shape[1]:].tolist()
        return row

    rows = [alone(p, None) for p in prompts]
    eos = rows[3][2]  # taken as end-of-text: the last prompt's reply ends at its third token

    class Ending(type(tok)):  # the tokenizer, with that end-of-text
        eos_token_id = eos

    tok.__class__ = Ending
    replies = generation.greedy(model, tok, prompts, max_new_tokens=10, batch=3, bf16=False)  # fp32: no near tie
    for prompt, row, (text, finished) in zip(prompts, rows, replies):
        ended = eos in row
        kept = row[:row.index(eos)] if ended else row
        assert text == tok.decode(kept, skip_special_tokens=True).strip() and finished == ended, prompt
    assert replies[3][1] and not all(f for _, f in replies), "both a finished and an unfinished reply are checked"


@pytest.mark.integration  # runs lm-eval or trains
def test_a_tasks_scores_on_the_int8_file_do_not_depend_on_the_tasks_scored_with_it(tiny_base, prepared,
                                                                                  tiny_params_file, tmp_path,
                                                                                  monkeypatch):
    """Each task is scored in batches of its own: its scores alone are its scores among all the others, to
    the last bit, and the model is handed the same batches either way. Pooled with other tasks' requests and
    batched by length, the real int8 file (int8 activations, MatMulNBits accuracy level 4) scored BBQ's
    near ties differently alone and among all (BENCHMARKS.md#int8-bias); task by task is what lets a gate reuse a
    reference's scores (gate --same-as)."""
    from ratchet.models.export import export_fp32, quantize_weights

    cfg = params.load(tiny_params_file, "eval")[0]
    export_fp32(tiny_base, tmp_path / "fp32")
    (tmp_path / "int8").mkdir()
    quantize_weights(tmp_path / "fp32", tmp_path / "int8", params.load(tiny_params_file, "quantize")[0])
    with_lineage(tmp_path / "int8", start=tiny_base)
    tasks = ll_tasks(prepared, cfg)
    calls = []
    original = shared_context.score

    def score(requests, *args):  # the requests one call of the model scores together
        calls.append(len(requests))
        return original(requests, *args)

    monkeypatch.setattr(shared_context, "score", score)
    together = evaluate.run_suite("onnx", str(tmp_path / "int8"), str(prepared), cfg, tasks=tasks)
    among_all, calls[:] = list(calls), []
    for task in tasks:
        alone = evaluate.run_suite("onnx", str(tmp_path / "int8"), str(prepared), cfg, tasks={task: tasks[task]})
        assert alone["scores"][task] == together["scores"][task], task
    # the model was handed the same batches of requests: no call mixed two tasks' requests (pooled, the five
    # multiple-choice sets arrived in one call of 736 requests here)
    assert sorted(among_all) == sorted(calls)


def test_the_lean_export_gives_the_traced_export_numbers_in_fewer_nodes_and_leaves_transformers_as_it_was(
        tiny_base, tmp_path):
    """quantize.lean_attention: no key/value head copied per query head (Expand), no NaN guard (IsNaN), no
    rotate_half Negs, the same logits on a left-padded batch as transformers' attention traced as it runs,
    and transformers' sdpa and rotate_half back in place afterwards."""
    import collections

    import numpy as np
    import onnx
    import onnxruntime as ort
    import transformers.models.llama.modeling_llama as llama
    from transformers import AttentionInterface

    from ratchet.models.export import export_fp32

    sdpa, rotate_half = AttentionInterface._global_mapping["sdpa"], llama.rotate_half
    ops, logits = {}, {}
    ids = np.array([[0, 0, 0, 510, 2210, 314, 253, 1233], [431, 2001, 288, 3552, 21, 2210, 34, 9]], np.int64)
    for lean in (False, True):
        out = tmp_path / str(lean)
        export_fp32(tiny_base, out, lean=lean)
        assert AttentionInterface._global_mapping["sdpa"] is sdpa and llama.rotate_half is rotate_half
        ops[lean] = collections.Counter(n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node)
        s = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        mask = (ids != 0).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "position_ids": np.clip(mask.cumsum(-1) - 1, 0, None)}
        feeds.update({i.name: np.zeros((2, 2, 0, 16), np.float32) for i in s.get_inputs()
                      if i.name.startswith("past_key_values")})
        logits[lean] = s.run(["logits"], feeds)[0][mask.astype(bool)]
    assert ops[False]["IsNaN"] > 0 and ops[True]["IsNaN"] == 0 and ops[True]["Neg"] == 0
    assert ops[True]["Expand"] < ops[False]["Expand"]
    assert sum(ops[True].values()) < 0.8 * sum(ops[False].values())
    np.testing.assert_allclose(logits[True], logits[False], atol=1e-4)


def test_settled_shape_arithmetic_gives_the_same_numbers_bit_for_bit_for_any_batch_and_cache(tiny_base, tmp_path):
    """quantize.static_shapes: the exported graph with its shape arithmetic folded and its Reshapes given
    constant targets computes exactly what the traced graph computes, on a left-padded prompt batch, a
    decode step of 3 rows over a cache, one token with no cache, and in about half the nodes."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from ratchet.models.export import export_fp32, static_shapes

    export_fp32(tiny_base, tmp_path / "traced", lean=True)
    model = onnx.load(str(tmp_path / "traced" / "model.onnx"))
    before = len(model.graph.node)
    folded, reshaped = static_shapes(model)
    onnx.save(model, str(tmp_path / "static.onnx"))
    assert folded > 0 and reshaped > 0 and len(model.graph.node) < 0.7 * before
    traced, static = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                      for p in (tmp_path / "traced" / "model.onnx", tmp_path / "static.onnx"))
    rng = np.random.default_rng(0)
    for rows, new, past, padding in ((2, 9, 0, 4), (3, 1, 7, 2), (1, 1, 0, 0), (1, 5, 12, 0)):
        mask = np.ones((rows, past + new), np.int64)
        mask[0, :padding] = 0
        feeds = {"input_ids": rng.integers(3, 500, (rows, new)), "attention_mask": mask,
                 "position_ids": np.clip(mask.cumsum(-1) - 1, 0, None)[:, -new:]}
        feeds.update({i.name: rng.standard_normal((rows, 2, past, 16)).astype(np.float32)
                      for i in traced.get_inputs() if i.name.startswith("past_key_values")})
        for a, b in zip(traced.run(None, feeds), static.run(None, feeds)):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)
