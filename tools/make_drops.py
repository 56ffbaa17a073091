"""Write three real weekly drops for the cycle benchmarks, deterministically, from installed packages.

    .venv/bin/python -m tools.make_drops --out /tmp/drops

Each drop is <out>/<name>/{domain,sft}/<file>.jsonl with its provenance in
<out>/<name>/SOURCE.yaml, ready for `ratchet update --drop <out>/<name> --week <week>`:

  numpy      numpy's public API docstrings (numpy, numpy.linalg, numpy.fft, numpy.random.Generator), BSD-3-Clause
  pallets    click, flask, jinja2 and werkzeug API docstrings, BSD-3-Clause
  stdlib     CPython 3.11 modules the seed does not cover (asyncio, concurrent.futures, email,
             http.client, multiprocessing, sqlite3, ...), PSF-2.0

Domain records are an object's qualified name, signature and whole docstring
(cleaned with inspect.cleandoc, cut at MAX_DOMAIN characters on a paragraph
boundary); instruction pairs ask what an object does and answer with the first
paragraph of its docstring, cleaned the way the seed's are
(data/seed/make_seed.py). Every object goes to exactly one of the two, by a
hash of its name, so a drop's questions are not answered word for word by its
own domain text. Nothing is random: the same package versions give the same
bytes (versions are written into SOURCE.yaml and <out>/<name>.provenance.json;
`--sources-yaml` prints data/sources.yaml entries, for a checkout whose ingest
predates SOURCE.yaml).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_seed", ROOT / "data/seed/make_seed.py")
make_seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_seed)

MAX_DOMAIN = 3000       # characters of a domain record
MIN_DOMAIN = 200        # shorter docstrings teach too little to be domain text
PER_DROP = 320          # objects per drop at most (the first by hash), split between domain and sft

DROPS = {
    "numpy": {"week": "2026-W48", "license": "BSD-3-Clause", "packages": ["numpy"],
              "modules": [("numpy", ("numpy.core", "numpy.lib", "numpy._core")), ("numpy.linalg", ()),
                          ("numpy.fft", ()), ("numpy.random", ())]},
    "pallets": {"week": "2026-W49", "license": "BSD-3-Clause", "packages": ["click", "flask", "jinja2", "werkzeug"],
                "modules": [("click", ()), ("flask", ()), ("jinja2", ()), ("werkzeug.wrappers", ()),
                            ("werkzeug.routing", ()), ("werkzeug.utils", ()), ("werkzeug.datastructures", ())]},
    "stdlib": {"week": "2026-W50", "license": "PSF-2.0", "packages": [],
               "modules": [("asyncio", ()), ("concurrent.futures", ()), ("email.message", ()), ("http.client", ()),
                           ("multiprocessing", ()), ("sqlite3", ("_sqlite3",)), ("socket", ("_socket",)),
                           ("threading", ()), ("queue", ()), ("urllib.request", ()), ("xml.etree.ElementTree", ()),
                           ("gzip", ()), ("tarfile", ()), ("pickle", ("_pickle",)), ("sched", ()), ("ssl", ("_ssl",))]},
}


def stable(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def objects(modules):
    """(qualified name, kind, object) of public functions, classes and their methods, in a fixed order."""
    seen = set()
    for modname, aliases in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(modname)
        for name in sorted(vars(mod)):
            obj = vars(mod)[name]
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            if not make_seed.defined_here(obj, modname.split(".")[0], aliases) or id(obj) in seen:
                continue
            seen.add(id(obj))
            q = f"{modname}.{name}"
            yield q, "class" if inspect.isclass(obj) else "function", obj
            if inspect.isclass(obj):
                for mname in sorted(vars(obj)):
                    raw = vars(obj)[mname]
                    raw = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
                    if not mname.startswith("_") and inspect.isroutine(raw):
                        yield f"{q}.{mname}", "method", raw


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def domain_text(q: str, obj) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc or len(doc) < MIN_DOMAIN or make_seed.has_pii(doc):
        return None
    text = f"{q}{signature(obj)}\n\n{doc.strip()}"
    if len(text) > MAX_DOMAIN:
        cut = text.rfind("\n\n", 0, MAX_DOMAIN)
        text = text[:cut] if cut > MIN_DOMAIN else text[:MAX_DOMAIN]
    return text


def answer(obj) -> str | None:
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
    resp = make_seed.clean_docstring(doc)
    return None if resp is None or make_seed.has_pii(resp) else resp


def build(spec: dict) -> tuple[list[dict], list[dict]]:
    found = sorted(objects(spec["modules"]), key=lambda t: stable(t[0]))
    domain, sft, seen = [], [], set()
    for q, kind, obj in found:
        if len(domain) + len(sft) >= PER_DROP:
            break
        if stable("role:" + q) % 2:
            text = domain_text(q, obj)
            if text and text not in seen:
                seen.add(text)
                domain.append({"text": text, "source": q})
        else:
            resp = answer(obj)
            if resp and resp not in seen:
                seen.add(resp)
                templates = {"class": make_seed.CLASS_TEMPLATES, "method": make_seed.METHOD_TEMPLATES}.get(
                    kind, make_seed.FUNC_TEMPLATES)
                sft.append({"prompt": templates[stable(q) % len(templates)].format(q=q), "response": resp,
                            "source": q})
    return sorted(domain, key=lambda r: r["source"]), sorted(sft, key=lambda r: r["source"])


def versions(spec: dict) -> dict:
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    out.update({p: importlib.metadata.version(p) for p in spec["packages"]})
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def source_yaml(name: str, spec: dict) -> str:
    """The drop's SOURCE.yaml (ratchet/data/sources.py): what ingest checks and records, and the datasheets show."""
    v = versions(spec)
    what = ", ".join(f"{p} {v[p]}" for p in spec["packages"]) or f"CPython {v['python']} standard library"
    return yaml.safe_dump({
        "what": f"API reference text and what-does-it-do question/answer pairs from {what} docstrings",
        "origin": f"installed package source ({what}), extracted by tools/make_drops.py",
        "license": spec["license"],
        "personal_data": "none expected; email/phone-like docstrings excluded at generation",
        "collected": "generated by tools/make_drops.py (deterministic)",
        "notes": f"API reference prose of {name}; responses are docstring opening paragraphs",
    }, sort_keys=False, width=1000)


def sources_yaml(name: str, spec: dict) -> str:
    v = versions(spec)
    what = ", ".join(f"{p} {v[p]}" for p in spec["packages"]) or f"CPython {v['python']} standard library"
    return "".join(
        f"  - path: data/drops/{spec['week']}/{role}/{name}.jsonl\n"
        f"    role: {role}\n"
        f"    what: {desc} from {what} docstrings\n"
        f"    origin: installed package source ({what}), extracted by tools/make_drops.py\n"
        f"    license: {spec['license']}\n"
        f"    collected: generated by tools/make_drops.py (deterministic)\n"
        f"    personal_data: none expected; email/phone-like docstrings excluded at generation\n"
        f"    notes: API reference prose of {name}; responses are docstring opening paragraphs\n"
        for role, desc in (("domain", "API reference text"), ("sft", "what-does-it-do question/answer pairs")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the drops")
    ap.add_argument("--sources-yaml", action="store_true", help="print the data/sources.yaml entries and exit")
    args = ap.parse_args(argv)
    if args.sources_yaml:
        print("".join(sources_yaml(n, s) for n, s in DROPS.items()), end="")
        return
    for name, spec in DROPS.items():
        domain, sft = build(spec)
        folder = Path(args.out) / name
        write(folder / "domain" / f"{name}.jsonl", domain)
        write(folder / "sft" / f"{name}.jsonl", sft)
        (folder / "SOURCE.yaml").write_text(source_yaml(name, spec), encoding="utf-8")
        (folder.parent / f"{name}.provenance.json").write_text(json.dumps(
            {"week": spec["week"], "license": spec["license"], "versions": versions(spec),
             "modules": [m for m, _ in spec["modules"]], "domain": len(domain), "sft": len(sft)}, indent=2) + "\n")
        print(f"{name} ({spec['week']}): {len(domain)} domain records, {len(sft)} instruction pairs -> {folder}")


if __name__ == "__main__":
    main()
