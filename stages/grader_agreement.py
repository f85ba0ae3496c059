"""Measure our grader against published verdicts, and gold answers against themselves.

    python stages/grader_agreement.py --data-dir data/benchmarks \
        --out reports/grader_agreement.json --disagreements reports/grader_disagreements.md

* GSM8K GPT-3 example solutions (4 models x 1319) vs their ``is_correct``;
* Qwen2.5-Math CoT outputs (8 responses x 100 MATH problems) vs their ``score``;
* gold self-grading: each benchmark's reference solution graded against its gold answer.

Reads, under ``--data-dir`` (default: the repository's ``data/benchmarks``, see its
README): ``graded_outputs/{gsm8k_gpt3_solutions,math_qwen25_cot100}.jsonl``,
``gsm8k/test.jsonl``, ``math/test.jsonl`` and ``math/test500.jsonl`` (dvc.yaml declares
exactly these as the stage's deps). Writes a metrics JSON (agreement percentages per source
and per model, self-grading percentages, timing) and a Markdown list of every disagreement
with a reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipa.benchmarks import (
    gsm8k_final_answer,
    load_corrections,
    load_gsm8k,
    load_math,
    load_math500,
    math500_answer_mismatches,
    math_gold,
)
from pipa.grading import MathVerifyGrader, Verdict
from pipa.io import atomic_path, read_jsonl, remove_stale_temporaries, write_json

GPT3_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")

# Disagreements studied by hand: (source, question id, model or response index) -> reason.
# Filled in after reading each case; anything not listed gets an automatic reason.
EXPLAINED: dict[tuple[str, str, str], str] = {
    ("qwen25_math", "idx-72", "7"): (
        "published verdict is wrong: 49994/7 + 20006/7 = 70000/7 = 10000 exactly, and the "
        "response boxes 10000; the gold is written `10{,}000` (LaTeX thousands separator), "
        "which the published grader failed to equate with 10000 (its own `pred` is 10000)"
    ),
}


def _pct(k: int, n: int) -> float:
    return round(100.0 * k / n, 3) if n else float("nan")


def _auto_reason(v: Verdict, published: bool) -> str:
    if v.malformed:
        return f"ours: {v.reason}"
    if published and not v.correct:
        return "published says correct, our extracted answer is not equivalent to gold"
    return "published says wrong, our extracted answer is equivalent to gold"


def agree_gsm8k_gpt3(path: Path, limit: int | None = None) -> tuple[dict, list[dict]]:
    rows = read_jsonl(path)[:limit]
    grader = MathVerifyGrader(numeric=True)
    per_model = {m: [0, 0] for m in GPT3_MODELS}
    disagreements = []
    for i, row in enumerate(rows):
        qid = f"gsm8k-{i:04d}"
        gold = _gpt3_gold(row["ground_truth"])
        for model in GPT3_MODELS:
            sol = row[model]
            published = bool(sol["is_correct"])
            v = grader.grade(gold, sol["solution"])
            per_model[model][1] += 1
            if v.correct == published:
                per_model[model][0] += 1
                continue
            key = ("gsm8k_gpt3", qid, model)
            disagreements.append(
                {
                    "source": "gsm8k_gpt3",
                    "id": qid,
                    "which": model,
                    "gold": gold,
                    "extracted": v.extracted,
                    "published": published,
                    "ours": v.correct,
                    "reason": EXPLAINED.get(key, _auto_reason(v, published)),
                    "tail": sol["solution"][-160:],
                }
            )
    return _summary(per_model), disagreements


def _gpt3_gold(ground_truth: str) -> str:
    """The GPT-3 file's ground truth ends in ``A: N`` (the ``####`` line rewritten)."""
    if "####" in ground_truth:
        return gsm8k_final_answer(ground_truth)
    last = ground_truth.strip().splitlines()[-1]
    if not last.startswith("A:"):
        raise ValueError(f"GPT-3 ground truth without an 'A:' line: {ground_truth[-80:]!r}")
    return last[2:].strip().replace(",", "")


def agree_qwen_math(path: Path, limit: int | None = None) -> tuple[dict, list[dict]]:
    rows = read_jsonl(path)[:limit]
    grader = MathVerifyGrader()
    counts = {"qwen25_math": [0, 0]}
    disagreements = []
    for row in rows:
        qid = f"idx-{row['idx']}"
        gold = str(row["gt"])
        for j, (resp, score) in enumerate(zip(row["code"], row["score"], strict=True)):
            published = score is True or str(score) == "True"
            v = grader.grade(gold, resp)
            counts["qwen25_math"][1] += 1
            if v.correct == published:
                counts["qwen25_math"][0] += 1
                continue
            key = ("qwen25_math", qid, str(j))
            disagreements.append(
                {
                    "source": "qwen25_math",
                    "id": qid,
                    "which": f"response {j}",
                    "gold": gold,
                    "extracted": v.extracted,
                    "published_pred": row["pred"][j],
                    "published": published,
                    "ours": v.correct,
                    "reason": EXPLAINED.get(key, _auto_reason(v, published)),
                    "tail": resp[-160:],
                }
            )
    return _summary(counts), disagreements


def _summary(per: dict[str, list[int]]) -> dict:
    agree = sum(a for a, _ in per.values())
    n = sum(b for _, b in per.values())
    return {
        "agreement_pct": _pct(agree, n),
        "n": n,
        "n_disagree": n - agree,
        "per_model": {m: {"agreement_pct": _pct(a, b), "n": b} for m, (a, b) in per.items()},
    }


def self_grade(data_dir: Path, limit: int | None = None,
               golds: dict | None = None) -> tuple[dict, list[dict]]:
    """Each benchmark's own reference solution graded against its gold final answer.

    MATH: the solution's answer is what the loader's rule reads from its boxes
    (``math_gold``: the last box, or the parts of one answer boxed side by side), graded
    against the gold after the correction table. A corrected gold that the solution's boxes
    do not state (a set boxed across a derivation, an intermediate boxed last) cannot come
    out of the solution: those rows are left out of the percentage and listed. ``golds``
    receives what the MATH loader reports (``load_math``'s ``report``)."""
    out, failures = {}, []
    corrections = load_corrections(data_dir / "math" / "corrections.json")
    specs = [
        ("gsm8k", load_gsm8k, data_dir / "gsm8k" / "test.jsonl", "answer", True),
        ("math", partial(load_math, report=golds), data_dir / "math" / "test.jsonl", "solution",
         False),
        ("math500", load_math500, data_dir / "math" / "test500.jsonl", "solution", False),
    ]
    for name, loader, path, field, numeric in specs:
        problems = loader(path)[:limit]
        raw = read_jsonl(path)[:limit]
        grader = MathVerifyGrader(numeric=numeric)
        ok = n = 0
        excluded = []
        for prob, row in zip(problems, raw, strict=True):
            text = row[field]
            if name == "math":
                text = "\\boxed{" + math_gold(text) + "}"
            v = grader.grade(prob.get("answers") or prob["answer"], text)
            if not v.correct and "answers" in prob:
                excluded.append(prob["id"])
                failures.append({"source": f"self_{name}", "id": prob["id"],
                                 "gold": " | ".join(prob["answers"]), "extracted": v.extracted,
                                 "reason": "left out: a corrected gold the solution's boxes "
                                           "do not give (corrections.json: "
                                           f"{corrections[prob['id']]['reason']})"})
                continue
            n += 1
            ok += v.correct
            if not v.correct:
                failures.append(
                    {
                        "source": f"self_{name}",
                        "id": prob["id"],
                        "gold": prob["answer"],
                        "extracted": v.extracted,
                        "reason": v.reason,
                    }
                )
        out[name] = {"correct_pct": _pct(ok, n), "n": n}
        if excluded:
            out[name]["excluded_corrected"] = excluded
    return out, failures


def write_markdown(
    path: Path, metrics: dict, disagreements: list[dict], failures: list[dict], m500: list[dict]
) -> None:
    lines = ["# Grader agreement with published verdicts", ""]
    for src in ("gsm8k_gpt3", "qwen25_math"):
        s = metrics[src]
        lines.append(
            f"- **{src}**: {s['agreement_pct']}% agreement over {s['n']} "
            f"({s['n_disagree']} disagreements)"
        )
    for name, s in metrics["self_grading"].items():
        left = (f" ({len(s['excluded_corrected'])} corrected golds left out, listed below)"
                if s.get("excluded_corrected") else "")
        lines.append(f"- gold self-grading **{name}**: {s['correct_pct']}% of {s['n']}{left}")
    g = metrics["math_golds"]
    lines.append(f"- MATH golds: {g['multi_box_sets']} read as the set of the answers boxed side "
                 f"by side (`pipa.benchmarks.math_gold`), {g['corrected']} from our correction "
                 "table (`data/benchmarks/math/corrections.json`, each with its reason)")
    lines.append(
        f"- MATH500 `answer` field vs last `\\boxed{{}}` of its solution: {len(m500)} mismatches"
    )
    lines += ["", "## Disagreements", ""]
    if not disagreements:
        lines.append("None.")
    for d in disagreements:
        pub = "correct" if d["published"] else "wrong"
        ours = "correct" if d["ours"] else "wrong"
        extra = f", published pred `{d['published_pred']}`" if "published_pred" in d else ""
        tail = d["tail"].replace("\n", " ").replace("`", "'")
        lines += [
            f"### {d['source']} {d['id']} ({d['which']})",
            "",
            f"- gold `{d['gold']}`, extracted `{d['extracted']}`{extra}",
            f"- published: {pub}; ours: {ours}",
            f"- reason: {d['reason']}",
            f"- output tail: `...{tail}`",
            "",
        ]
    lines += ["## Gold self-grading failures", ""]
    lines += [
        f"- {f['source']} {f['id']}: gold `{f['gold']}`, extracted `{f['extracted']}`, "
        f"{f['reason']}"
        for f in failures
    ] or ["None."]
    lines += ["", "## MATH500 answer-field mismatches", ""]
    lines += [f"- {m['id']}: answer `{m['answer']}`, boxed `{m['boxed']}`" for m in m500] or [
        "None."
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def run(data_dir: Path, out: Path, disagreements_md: Path, limit: int | None = None) -> dict:
    t0 = time.perf_counter()
    gsm, d1 = agree_gsm8k_gpt3(data_dir / "graded_outputs" / "gsm8k_gpt3_solutions.jsonl", limit)
    qwen, d2 = agree_qwen_math(data_dir / "graded_outputs" / "math_qwen25_cot100.jsonl", limit)
    golds: dict = {}
    selfg, failures = self_grade(data_dir, limit, golds)
    m500 = math500_answer_mismatches(data_dir / "math" / "test500.jsonl")
    metrics = {
        "math_golds": golds,  # how many golds the set rule and the correction table changed
        "gsm8k_gpt3": gsm,
        "qwen25_math": qwen,
        "self_grading": selfg,
        "math500_answer_field_mismatches": len(m500),
        "limit": limit,
    }
    write_json(out, metrics)  # no wall time in it: same inputs, same bytes
    write_markdown(disagreements_md, metrics, d1 + d2, failures, m500)
    return {**metrics, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/benchmarks"))
    ap.add_argument("--out", type=Path, default=Path("reports/grader_agreement.json"))
    ap.add_argument("--disagreements", type=Path, default=Path("reports/grader_disagreements.md"))
    ap.add_argument("--limit", type=int, default=None, help="first N rows of each file")
    args = ap.parse_args(argv)
    remove_stale_temporaries(args.out, args.disagreements)  # what a killed run left
    m = run(args.data_dir, args.out, args.disagreements, args.limit)
    selfs = ", ".join(f"{k}={v['correct_pct']}%" for k, v in m["self_grading"].items())
    print(
        f"gsm8k_gpt3 {m['gsm8k_gpt3']['agreement_pct']}%  "
        f"qwen25_math {m['qwen25_math']['agreement_pct']}%  "
        f"self {selfs}  "
        f"({m['seconds']} s)"
    )


if __name__ == "__main__":
    main()
