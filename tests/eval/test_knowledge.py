"""The closed-book questions about the training documents (ratchet/eval/knowledge.py) and the rules that ask a
cycle to know its drop better than the base model does, and to keep what it knew of the earlier ones."""
import numpy as np
import pytest

from ratchet.core.io import read_jsonl
from ratchet.eval import knowledge
from ratchet.eval.rules import decide, load_rules

from ..conftest import ROOT


def test_questions_come_from_the_train_documents_deterministically_and_none_is_asked_as_it_is_written(prepared):
    """On the prepared seed sample: every question names a term of a training document's sentence that is not
    shown, its distractors look like it and never occur in that document, and no question's text (or a shown
    sentence whole) is in any train split. The same split gives the same questions, and a smaller cap keeps
    a subset of a larger one's."""
    train = list(read_jsonl(prepared / "domain/train.jsonl"))
    qs = knowledge.items(train, 2)
    assert len(qs) >= len(train) // 2, "most documents give a question"
    assert knowledge.items(train, 2) == qs
    text_of = {r["id"]: r["text"] for r in train}
    corpus = "\n".join(r.get("text") or " ".join(m["content"] for m in r["messages"])
                       for role in ("domain", "sft", "general") for r in read_jsonl(prepared / f"{role}/train.jsonl"))
    for q in qs:
        asked = q["messages"][0]["content"]
        assert q["term"] in q["sentence"] and " ".join(q["sentence"].split()) in " ".join(text_of[q["doc"]].split())
        assert q["term"] not in asked.split("\n\n", 1)[1] and knowledge.BLANK in asked
        assert q["choices"][q["label"]] == q["term"] and len(set(q["choices"])) == knowledge.CHOICES
        assert not any(c in text_of[q["doc"]] for i, c in enumerate(q["choices"]) if i != q["label"])
        assert asked not in corpus and q["sentence"] not in asked
    capped = knowledge.items(train, 2, 10)
    assert len(capped) == 10 and all(q in qs for q in capped)
    assert {q["id"] for q in capped} <= {q["id"] for q in knowledge.items(train, 2, 20)}


def test_the_key_fact_match_ignores_case_quotes_and_spacing_but_not_word_boundaries():
    assert knowledge.states('It is "__debug__", set by -O.', "__debug__")
    assert knowledge.states("the `StopIteration` exception", '"stopiteration"')
    assert knowledge.states("a, b  =  b, a", "a, b = b, a")
    assert not knowledge.states("the length of it", "len")
    assert not knowledge.states("use os.pathsep", "os.path")
    assert not knowledge.states("", "yield")


def test_a_sentence_is_blanked_at_its_term_and_cut_around_it():
    words = " ".join(f"w{i}" for i in range(60))
    s = f"{words} holds the \"__slots__\" name and {words}."
    c = knowledge.cloze(s, "__slots__")
    assert f'"{knowledge.BLANK}"' in c and "__slots__" not in c
    assert c.startswith("... ") and c.endswith(" ...") and len(c.split()) == knowledge.WINDOW + 2


def rows(correct: np.ndarray, sources: list[str]) -> dict:
    return {"ratchet_knowledge_mc": [{"id": f"q{i:04d}", "source": sources[i % len(sources)], "correct": int(c),
                                      "n": 1} for i, c in enumerate(correct)]}


def test_the_default_rules_require_a_gain_on_the_newest_drop_and_bound_the_loss_on_earlier_ones():
    """params.yaml's knowledge rules of the tuned teacher, on 400 questions over two sources (the seed and the
    newest drop): a model that knows the new drop as the base does (the base itself) fails: the gain must be
    shown, one that knows it 0.15 better passes, and one that gains on it but forgets the seed is refused on
    the seed alone."""
    rng = np.random.default_rng(0)
    sources, newest = ["seed", "2026-W49"], "2026-W49"
    base = rng.random(400) < 0.35
    new = np.array([i % 2 == 1 for i in range(400)])
    gained = base | (new & (rng.random(400) < 0.25))                 # about +0.16 on the newest
    forgot = gained & ~(~new & (rng.random(400) < 0.4))              # and about -0.14 on the seed
    rules = [r for r in load_rules(ROOT / "params.yaml").rules("sft") if r.metric == "knowledge_mc_acc"]
    assert {(r.source, r.ref) for r in rules} >= {("newest", "base"), ("earlier", "champion")}
    refs = {"base": rows(base, sources), "champion": rows(base, sources)}

    def outcome(cand):
        found = decide(rows(cand, sources), rules, refs, newest=newest)
        return {(f["source"], f["ref"]): f["outcome"] for f in found}

    same = outcome(base)
    assert same[(newest, "base")] == "fail" and same[("seed", "champion")] == "pass", same
    assert set(outcome(gained).values()) == {"pass"}, outcome(gained)
    lost = outcome(forgot)
    assert lost[(newest, "base")] == "pass" and lost[("seed", "champion")] == "fail", lost
    [f] = [f for f in decide(rows(gained, sources), rules, refs, newest=newest)
           if f["source"] == newest and f["ref"] == "base"]
    assert "better by" in f["reason"] or f["reason"] == "ok"
    assert f["ci"][1] < 0, "worse by less than zero over the whole interval: the gain is shown"
    with pytest.raises(ValueError, match="newest source"):
        decide(rows(gained, sources), rules, refs)


def test_a_verdict_counts_each_question_against_each_reference_and_lists_the_key_facts_that_flipped():
    from ratchet.eval.gate import FLIPS, per_question, side_by_side

    def docs(keyfacts, chrfs, picks):
        return {"ratchet_knowledge_answers": [{"id": f"k{i}", "source": "seed" if i < 2 else "2026-W49",
                                               "keyfact": k, "n": 1, "answer": f"a{k}"} for i, k in enumerate(keyfacts)],
                "ratchet_answers": [{"id": f"h{i}", "source": "seed", "chrf": c, "rep": 0, "n": 1, "answer": "x"}
                                    for i, c in enumerate(chrfs)],
                "ratchet_knowledge_mc": [{"id": f"k{i}", "source": "seed", "correct": p, "n": 1}
                                         for i, p in enumerate(picks)]}
    tasks = {"ratchet_knowledge_answers": [{"id": f"k{i}", "source": "seed" if i < 2 else "2026-W49", "term": f"t{i}",
                                            "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(5)],
             "ratchet_answers": [{"id": f"h{i}", "source": "seed", "reference": "r",
                                  "messages": [{"role": "user", "content": f"h{i}"}]} for i in range(3)]}
    mine = docs([1, 0, 1, 1, 0], [50.0, 40.0, 30.5], [1, 0, 1, 1, 0])
    base = docs([0, 1, 0, 1, 0], [45.0, 42.0, 30.0], [0, 0, 1, 0, 1])
    q = per_question(mine, {"base": base}, tasks)["base"]
    assert q["answers"] == {"better": 1, "worse": 1, "tie": 1, "mean_chrf_change": round((5 - 2 + 0.5) / 3, 2)}
    assert q["key_facts"] == {"seed": {"gained": 1, "lost": 1, "alike": 0},
                              "2026-W49": {"gained": 1, "lost": 0, "alike": 2}}
    assert q["choices"] == {"gained": 2, "lost": 1, "of": 5}
    assert [(f["id"], f["gained"], f["term"]) for f in q["flips"]] == [("k0", True, "t0"), ("k1", False, "t1"),
                                                                        ("k2", True, "t2")]
    assert len(q["flips"]) <= FLIPS
    shown = side_by_side("sft", mine, {"base": base}, tasks, newest="2026-W49")
    assert [a["kind"] for a in shown] == ["held-out"] * 3 + ["knowledge"] * 3
    assert all(a["source"] == "2026-W49" and a["reference"].startswith("t") for a in shown if a["kind"] == "knowledge")
