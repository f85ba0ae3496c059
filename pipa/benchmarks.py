"""Benchmark loaders: GSM8K, MATH, MATH500 and the built-in world's tiers, in one schema.

Every loader returns a list of ``{"id": str, "question": str, "answer": str, "benchmark": str}``
where ``answer`` is the gold *final* answer string (what a grader compares against).
Ids are stable and sort in file order (zero-padded line or problem index), so predictions
sorted by (benchmark, id) join across cells.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from pipa import registry
from pipa.io import DataError, listed, read_jsonl

# The real benchmark files, tracked in git inside the repository (data/benchmarks/README.md
# gives their sources, licences and checksums).
BENCHMARK_DATA = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
GSM8K_TEST = BENCHMARK_DATA / "gsm8k" / "test.jsonl"
MATH_TEST = BENCHMARK_DATA / "math" / "test.jsonl"
MATH500_TEST = BENCHMARK_DATA / "math" / "test500.jsonl"
MATH_CORRECTIONS = BENCHMARK_DATA / "math" / "corrections.json"

REAL_BENCHMARKS = tuple(registry.BENCHMARKS[registry.REAL])
WORLD_BENCHMARKS = tuple(registry.BENCHMARKS[registry.WORLD])

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _read(path: str | os.PathLike, what: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file not found: {path}. Point the loader at a benchmark folder laid "
            f"out like the repository's {BENCHMARK_DATA} (see data/benchmarks/README.md). "
            "This loader never downloads."
        )
    return read_jsonl(path)


def _require(row: dict, keys: Iterable[str], path: str | os.PathLike, lineno: int) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{path}: record {lineno} lacks field(s) {missing}; every record "
                        "holds them (data/benchmarks/README.md)")


def strip_thousands_commas(text: str) -> str:
    """``70,000`` -> ``70000``; commas that are not thousands separators are kept."""
    prev = None
    while prev != text:
        prev = text
        text = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", text)
    return text


def gsm8k_final_answer(solution: str) -> str:
    """The text after the last ``####`` of a GSM8K answer, commas removed."""
    if "####" not in solution:
        raise ValueError(f"GSM8K answer has no '####' marker: {solution[-80:]!r}")
    ans = solution.rsplit("####", 1)[1].strip()
    return strip_thousands_commas(ans).replace(",", "")


def _brace_matches(text: str) -> dict[int, int]:
    """Index of each ``{`` -> index of its matching ``}`` (escaped ``\\{``/``\\}`` skipped),
    in one linear pass; unclosed braces are absent. Scanning from every ``\\boxed{`` to the
    end instead was quadratic on hostile outputs (thousands of unclosed boxes)."""
    stack: list[int] = []
    matches: dict[int, int] = {}
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            matches[stack.pop()] = i
        i += 1
    return matches


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order (balanced braces).

    Also accepts the brace-less form ``\\boxed 5`` (one token up to whitespace or ``$``).
    Unbalanced boxes (truncated output) are skipped.
    """
    return [content for _, _, content in boxes(text)]


def boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every box of ``text`` in order (``boxed_contents``)."""
    found: list[tuple[int, int, str]] = []
    closing = _brace_matches(text)  # one pass: each box then costs O(1) to close
    for cmd in _BOX_COMMANDS:
        for m in re.finditer(re.escape(cmd) + r"(?![A-Za-z])", text):
            j = m.end()
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                end = closing.get(j)
                if end is not None:
                    found.append((m.start(), end + 1, text[j + 1 : end]))
            elif j > m.end():
                tok = re.match(r"[^\s$]+", text[j:])
                if tok:
                    found.append((m.start(), j + tok.end(), tok.group(0)))
    return sorted(found)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` or ``\\fbox{}`` (balanced braces), else None."""
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


def load_gsm8k(path: str | os.PathLike = GSM8K_TEST) -> list[dict]:
    """GSM8K's test file: one record per problem, the gold after its answer's ``####``.
    Every bad record is reported at once (``pipa.io.DataError``)."""
    rows = _read(path, "GSM8K")
    out, problems = [], []
    for i, row in enumerate(rows):
        missing = [k for k in ("question", "answer") if k not in row]
        if missing:
            problems.append(f"{path}: record {i + 1} lacks field(s) {missing}")
        elif "####" not in str(row["answer"]):
            problems.append(f"{path}: record {i + 1}: the answer has no '#### <number>' line "
                            f"(ends {str(row['answer'])[-60:]!r}); GSM8K's gold follows it")
        else:
            out.append({"id": f"gsm8k-{i:04d}", "question": row["question"],
                        "answer": gsm8k_final_answer(row["answer"]), "benchmark": "gsm8k"})
    if problems:
        raise DataError(problems[0] if len(problems) == 1
                        else listed(path, problems, len(rows), "records"))
    return out


# Between two boxes that are parts of one answer: only "and", "or" or a comma, and perhaps
# the next "x =" (``x = \\boxed{-2}$ and $x = \\boxed{1}``), once math delimiters, \\text{}
# wrappers and spaces are gone.
_DELIMITERS = re.compile(r"\$|\\[()\[\]]|\\text\s*\{|\}|\\q?quad|\\,|\\;|\s")
_CONNECTIVE = re.compile(r"[,;]?(?:and|or)?(?:[a-z](?:_\{?\w+\}?)?=)?")


def math_gold(solution: str) -> str | None:
    """The gold answer of a MATH solution; None without a box.

    The rule: the last ``\\boxed{}``, unless the boxes before it stand beside it in the
    same statement, joined only by "and", "or" or a comma (``x = \\boxed{-2}$ and $x =
    \\boxed{1}``): then they are the parts of one answer and the gold is all of them, a set
    ``-2, 1`` that math-verify compares order-free. Parts that are the same answer written
    twice (``15\\frac{39}{40}$ or $\\frac{639}{40}``) are one answer: the last is kept.
    Boxes separated by prose or an equals sign (an intermediate result, a rewrite) are not
    parts; the golds this rule cannot see are in the correction table (``load_math``).
    """
    found = boxes(solution)
    if not found:
        return None
    group = [found[-1]]
    for prev in reversed(found[:-1]):
        gap = _DELIMITERS.sub("", solution[prev[1] : group[0][0]]).lower()
        if not _CONNECTIVE.fullmatch(gap):
            break
        group.insert(0, prev)
    parts: list[str] = []
    for _, _, content in group:
        content = content.strip()
        if not any(_same_answer(content, kept) for kept in parts):
            parts.append(content)
    return ", ".join(parts) if len(parts) > 1 else group[-1][2].strip()


def _same_answer(a: str, b: str) -> bool:
    """math-verify's equivalence of two gold strings (the loader's rule only)."""
    from math_verify import parse, verify

    if a.replace(" ", "") == b.replace(" ", ""):
        return True
    pa, pb = parse("\\boxed{" + a + "}"), parse("\\boxed{" + b + "}")
    return bool(pa and pb and verify(pa, pb))


def load_corrections(path: str | os.PathLike) -> dict[str, dict]:
    """Our correction table of a benchmark (``id`` -> entry with ``answers``: the corrected
    gold, or alternatives any of which is correct; ``reason``; ``source``; ``last_box``)."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    table = {}
    for k, e in enumerate(entries):
        missing = [f for f in ("id", "answers", "reason", "source", "last_box") if f not in e]
        if missing or not isinstance(e.get("answers"), list) or not e["answers"]:
            raise ValueError(f"{path}: entry {k + 1} lacks {missing or ['a non-empty answers list']}")
        table[e["id"]] = e
    return table


def load_math(path: str | os.PathLike = MATH_TEST,
              corrections: str | os.PathLike | None = "beside",
              report: dict | None = None) -> list[dict]:
    """The MATH test problems with their golds (``math_gold``), corrected by ``corrections``
    (a row gets ``answers``, the alternatives, and ``answer``, the first): by default the
    ``corrections.json`` beside ``path`` when there is one (``data/benchmarks/math``'s),
    None for none. ``report`` (a dict) receives how many golds the set rule and the table
    changed."""
    if corrections == "beside":
        beside = Path(path).parent / "corrections.json"
        corrections = beside if beside.is_file() else None
    rows = _read(path, "MATH")
    table = load_corrections(corrections) if corrections else {}
    n_corrected = len(table)
    out = []
    n_sets = 0
    for i, row in enumerate(rows):
        _require(row, ("problem", "solution"), path, i + 1)
        ans = math_gold(row["solution"])
        if ans is None:
            raise ValueError(f"{path}: record {i + 1} has no \\boxed{{}} answer in its solution")
        idx = row.get("idx", i)
        item = {"id": f"math-{int(idx):04d}", "question": row["problem"], "answer": ans,
                "benchmark": "math"}
        last = last_boxed(row["solution"]).strip()
        n_sets += ans != last
        fix = table.pop(item["id"], None)
        if fix is not None:
            if fix["last_box"] != last:
                raise ValueError(
                    f"{corrections}: the entry for {item['id']} was written for the last box "
                    f"{fix['last_box']!r}, but {path} record {i + 1} now boxes "
                    f"{last!r}: re-check the entry")
            item["answers"] = list(fix["answers"])
            item["answer"] = fix["answers"][0]
        out.append(item)
    if table:
        raise ValueError(f"{corrections}: ids not in {path}: {sorted(table)}")
    if report is not None:
        report.update({"multi_box_sets": n_sets, "corrected": n_corrected})
    return out


def load_math500(path: str | os.PathLike = MATH500_TEST) -> list[dict]:
    rows = _read(path, "MATH500")
    out = []
    for i, row in enumerate(rows):
        _require(row, ("problem", "answer"), path, i + 1)
        out.append(
            {
                "id": str(row.get("unique_id") or f"math500-{i:03d}"),
                "question": row["problem"],
                "answer": str(row["answer"]).strip(),
                "benchmark": "math500",
            }
        )
    return out


def math500_answer_mismatches(path: str | os.PathLike = MATH500_TEST) -> list[dict]:
    """Rows whose ``answer`` field differs (whitespace ignored) from the solution's last box."""
    bad = []
    for i, row in enumerate(_read(path, "MATH500")):
        boxed = last_boxed(row.get("solution", ""))
        norm = re.sub(r"\s+", "", str(row["answer"]))
        if boxed is None or re.sub(r"\s+", "", boxed) != norm:
            bad.append(
                {"id": row.get("unique_id", str(i)), "answer": row["answer"], "boxed": boxed}
            )
    return bad


def load_world_tier(problems: Iterable[dict], benchmark: str | None = None) -> list[dict]:
    """World problems (dicts with id, question, answer, optionally tier) in the one schema.

    ``benchmark`` defaults to each problem's ``tier`` (``gsm`` or ``math``).
    """
    out = []
    for p in problems:
        bench = benchmark or p.get("tier")
        if not bench:
            raise ValueError(f"world problem {p.get('id')!r} has no tier; pass benchmark=")
        out.append(
            {
                "id": str(p["id"]),
                "question": p["question"],
                "answer": str(p["answer"]),
                "benchmark": bench,
            }
        )
    return sorted(out, key=lambda r: r["id"])


def load_benchmark(name: str, data_dir: str | os.PathLike = BENCHMARK_DATA) -> list[dict]:
    """Load a real benchmark by name from ``data_dir`` (laid out like ``data/benchmarks``)."""
    bench = registry.benchmark(name, registry.REAL)
    if name == "math":
        return load_math(Path(data_dir) / bench.file, Path(data_dir) / bench.corrections)
    loader = {"gsm8k": load_gsm8k, "math500": load_math500}[name]
    return loader(Path(data_dir) / bench.file)
