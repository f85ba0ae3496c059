"""Table 5's step beams with a shared prefill (a beam's B2 samples read its prefix once and
decode from copies of its KV cache) against one prefill per sample, on a trained cell.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_search.py [--run-dir DIR]
        [--cell unpaired_step/pipa_m/ds/0] [--problems 30] [--budget 8]

Runs the value beam (scored by g) and the policy beam (by the policy's log-probability) of
``pipa.search_eval`` on ``--problems`` test problems per benchmark of the cell's
``runs/main/.../align`` (a finished run of the study: ``bash scripts/repro.sh``), one
thread, B1 = 2 beams and B2 = budget / 2 next steps, first without and then with the
shared prefill, twice each, alternating, after one untimed warm-up run (the medians are
printed). It
checks that both give the same answers (the samples agree up to float rounding between
batch shapes) and prints ``ratio_unshared_over_shared=X.XX`` last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import _boot  # noqa: F401  (the repo root on sys.path, the offline guards)

from pipa import config as C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=ROOT)
    ap.add_argument("--cell", default="unpaired_step/pipa_m/ds/0",
                    help="SETTING/ALGORITHM/MODEL/SEED of a cell with a value head")
    ap.add_argument("--problems", type=int, default=30, help="test problems per benchmark")
    ap.add_argument("--budget", type=int, default=8, help="N: B1 = 2 beams x N / 2 steps")
    args = ap.parse_args()

    from pipa import search
    from pipa.generation import _row_seed
    from pipa.hardware import machine, setup_runtime
    from pipa.model_io import prompt_formatter
    from pipa.search_eval import SearchSpec, align_dir, final_step_test, load_cell
    from pipa.value_head import PolicyWithValueHead

    run = args.run_dir.resolve()
    cfg = C.load(run / "params.yaml")
    setting, algorithm, model_name, seed = args.cell.split("/")
    setup_runtime(1, cfg.seed)
    tok, model, head, problems = load_cell(
        cfg, model_name, align_dir(run, setting, algorithm, model_name, int(seed)),
        run / "data/world", args.problems)
    format_prompt = prompt_formatter(cfg, model_name, tok)
    questions = [p["question"] for p in problems]
    prompts = [format_prompt(q) for q in questions]
    spec = SearchSpec()
    scorers = {
        "g": search.value_scorer(PolicyWithValueHead(model, head), tok, format_prompt,
                                 questions, batch_size=cfg.eval.batch_size),
        "policy": None,  # the proposals' own log-probabilities
    }

    def beams(share: bool) -> tuple[float, list[str]]:
        started, answers = time.perf_counter(), []
        for scorer in scorers.values():
            propose = search.lm_proposer(
                model, tok, prompts, max_step_tokens=spec.max_step_tokens,
                temperature=spec.temperature, seed=_row_seed(int(seed), 0xBEA0 + args.budget),
                batch_size=cfg.eval.batch_size, is_final=final_step_test("world"),
                share_prefill=share)
            found = search.value_beam(len(problems), propose, scorer,
                                      beam_width=spec.beam_width,
                                      n_samples=args.budget // spec.beam_width,
                                      max_steps=cfg.eval.max_steps,
                                      max_tokens=cfg.eval.max_new_tokens)
            answers += [f.text for f in found]
        return time.perf_counter() - started, answers

    print(f"machine: {machine()}; cell {args.cell}, {len(problems)} problems, N = "
          f"{args.budget}, B1 = {spec.beam_width}", flush=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    answers: dict[bool, list[str]] = {}
    beams(False)  # warm-up (allocator, kernels), not timed
    for share in (True, False, True, False):
        seconds, answers[share] = beams(share)
        times[share].append(seconds)
        print(f"  shared prefill {'on ' if share else 'off'}: {seconds:.1f} s", flush=True)
    same = sum(a == b for a, b in zip(answers[False], answers[True]))
    print(f"same answer from both: {same} of {len(answers[True])} beams")
    unshared, shared = statistics.median(times[False]), statistics.median(times[True])
    print(f"ratio_unshared_over_shared={unshared / shared:.2f}")


if __name__ == "__main__":
    main()
