"""Parity report: ``python -m parity_tests.report --variants all --out reports/``.

Runs the forward (every tap), gradient, AdamW-step, recipe training-step, mindcv, image -> logits and
mixed-precision studies, writes
  <out>/parity.md              a Markdown table per variant and tap (+ gradients, step, mindcv)
  <out>/<variant>_depth.png    relative error by depth, one line per forward run
  <out>/results.json           every number, machine readable
  <out>/summary.txt            the one-screen summary printed at the end
and exits non-zero if any counted comparison fails.
"""
import argparse
import json
import logging
import os
import sys
import time

from coat_ms.cli import run_cli
from coat_ms.errors import CoatError
from coat_ms.fileio import atomic_write, atomic_write_text
from coat_ms.models.coat import VARIANTS

from .metrics import STEP_RTOL

ORDER = ["coat_lite_tiny", "coat_lite_mini", "coat_lite_small", "coat_lite_medium", "coat_tiny", "coat_mini",
         "coat_small"]
EXTRA_RESOLUTION = {"coat_lite_tiny": 384, "coat_tiny": 384}   # timm accepts them when built with img_size
MINDCV_VARIANTS = ("coat_lite_tiny", "coat_tiny")
# One training step of a shipped recipe (parity_tests.recipe_step): the AdamW recipe (also with clipping
# switched on by flag, which no recipe does) and the Lion + EMA + dynamic loss scale recipe.
RECIPE_STEPS = {"coat_lite_tiny": [{}, dict(clip_grad=True, clip_value=1.0)], "coat_tiny": [{}]}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m parity_tests.report",
                                description="Layer-by-layer parity of coat_ms (MindSpore) against timm's CoaT "
                                            "(PyTorch): forward taps, gradients, one AdamW step, mindcv.")
    p.add_argument("--variants", default="all",
                   help="'all' or a comma-separated list of: " + ", ".join(ORDER))
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--profile", choices=["standard", "full"], default="standard",
                   help="standard: the committed report's plan (~15-20 min on 2 cores); full: every variant x "
                        "batch 1/2 x graph/pynative, gradients at batch 2, AdamW step for all (hours)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, inputs and labels (default 0)")
    p.add_argument("--skip", default="", help="comma-separated studies to skip: grad, step, recipe-step, mindcv, amp, "
                                              "extra-res, pynative, graph, image (real photos -> logits), deploy (the "
                                              "image study's MINDIR and predict rows)")
    return p.parse_args(argv)


def plan(variants, skip, profile="standard"):
    """The list of (study kind, variant, kwargs) to run.

    standard: every variant forward (224, batch 2, PyNative) and gradients (224, batch 1); GRAPH_MODE
      for coat_lite_tiny (batch 2) and coat_tiny (batch 1); 384 for coat_lite_tiny; the AdamW step and
      mindcv for coat_lite_tiny and coat_tiny; one training step of the coat_lite_tiny (AdamW; also with
      clipping on) and coat_tiny (Lion, EMA, dynamic loss scale) recipes.  About 15-20 min on a busy 2-core CPU.
    full: every variant in both modes at batch 1 and 2, gradients at batch 2, the AdamW step for
      every variant, 384 for coat_lite_tiny and coat_tiny (hours on a 2-core CPU).
    """
    full = profile == "full"
    jobs = []
    for v in variants:
        focus = v in MINDCV_VARIANTS
        if "pynative" not in skip:
            jobs.append(("forward", v, dict(img_size=224, batch=2, mode="pynative")))
            if full:
                jobs.append(("forward", v, dict(img_size=224, batch=1, mode="pynative")))
        if "graph" not in skip and (full or focus):
            for batch in ((1, 2) if full else ((2,) if v == "coat_lite_tiny" else (1,))):
                jobs.append(("forward", v, dict(img_size=224, batch=batch, mode="graph")))
        if "extra-res" not in skip and v in EXTRA_RESOLUTION and (full or v == "coat_lite_tiny"):
            jobs.append(("forward", v, dict(img_size=EXTRA_RESOLUTION[v], batch=1, mode="pynative")))
        if "grad" not in skip:
            jobs.append(("grad", v, dict(img_size=224, batch=2 if (full or v == "coat_lite_tiny") else 1,
                                         mode="pynative")))
        if "step" not in skip and (full or focus):
            batch = 2 if (full or v == "coat_lite_tiny") else 1
            jobs.append(("step", v, dict(img_size=224, batch=batch, mode="pynative")))
        if "recipe-step" not in skip:
            for extra in RECIPE_STEPS.get(v, []):
                jobs.append(("recipe_step", v, dict(img_size=224, batch=2, mode="pynative", **extra)))
        if v in MINDCV_VARIANTS and "mindcv" not in skip:
            jobs.append(("mindcv", v, dict(img_size=224, batch=2)))
        if "amp" not in skip:
            jobs.append(("amp", v, dict(batch=4)))
        if "image" not in skip:
            jobs.append(("image", v, dict(deploy="deploy" not in skip)))
    return jobs


def run_jobs(jobs, seed):
    from tqdm import tqdm  # noqa: PLC0415
    from . import studies  # noqa: PLC0415  (heavy imports after argument checks)
    results, last_grads = [], {}
    bar = tqdm(jobs, unit="study", file=sys.stderr)
    for kind, variant, kw in bar:
        bar.set_description(f"{variant} {kind} {' '.join(str(v) for v in kw.values())}")
        if kind == "forward":
            results.append(studies.forward_study(variant, seed=seed, **kw))
        elif kind == "grad":
            s = studies.grad_study(variant, seed=seed, **kw)
            last_grads[(variant, kw["batch"])] = s.extra.pop("grads")
            results.append(s)
        elif kind == "step":
            results.append(studies.step_study(variant, seed=seed, grads=last_grads.pop((variant, kw["batch"]), None), **kw))
        elif kind == "recipe_step":
            from . import recipe_step  # noqa: PLC0415
            results.append(recipe_step.recipe_step_study(variant, seed=seed, **kw))
        elif kind == "mindcv":
            results.extend(studies.mindcv_study(variant, seed=seed, **kw))
        elif kind == "amp":
            from . import amp  # noqa: PLC0415
            results.append(amp.amp_study_in_child(variant, seed=seed, **kw))
        elif kind == "image":
            from .image_path import image_study  # noqa: PLC0415
            results.append(image_study(variant, seed=seed, **kw))
    return results


# ------------------------------------------------------------------------------------------ output

def _fmt(x):
    return f"{x:.2e}"


def forward_table(forward):
    """One row per tap, one rel-error column per forward run."""
    names = [c.name for c in forward[0].comparisons]
    head = "| tap | shape | " + " | ".join(f"rel ({s.label})" for s in forward) + \
           " | max abs (worst) | cosine (min) | pass |"
    lines = [head, "|" + "---|" * (len(forward) + 5)]
    for i, name in enumerate(names):
        comps = [s.comparisons[i] for s in forward if i < len(s.comparisons)]
        ok = all(c.passed for c in comps)
        lines.append(f"| {name} | {comps[0].as_row()['shape']} | " + " | ".join(_fmt(c.rel) for c in comps) +
                     f" | {_fmt(max(c.max_abs for c in comps))} | {min(c.cosine for c in comps):.9f} | "
                     f"{'yes' if ok else '**NO**'} |")
    return lines


def worst_rows(study, n=8):
    rows = sorted(study.comparisons, key=lambda c: -c.rel)[:n]
    lines = ["| tensor | shape | max abs | max abs ref | rel | tol | pass |", "|---|---|---|---|---|---|---|"]
    for c in rows:
        status = "yes" if c.within_tol else ("yes (explained)" if c.explained else "**NO**")
        lines.append(f"| {c.name} | {c.as_row()['shape']} | {_fmt(c.max_abs)} | {_fmt(c.ref_max)} | {_fmt(c.rel)} | "
                     f"{c.tol:g} | {status} |")
    return lines


def step_section(study, n=10):
    flagged = study.extra.get("flagged", [])
    lines = worst_rows(study)
    n_over = sum(1 for c in study.comparisons[1:] if not c.within_tol)
    lines += ["", f"{n_over} of {len(study.comparisons) - 1} tensors exceed 1e-5 on their own; "
                  f"{len(flagged)} elements are over the tolerance, "
                  f"{sum(r['explained'] for r in flagged)} of them within the bound "
                  "lr * |g_ms - g_pt| * eps / (d + eps)^2 + 1e-5 * max|w_pt|, d the distance of [g_ms, g_pt] from 0 "
                  "(0 when the two gradients have opposite signs; Adam's step-1 update lr * g / (|g| + eps) has slope "
                  "lr / eps at g = 0)."]
    if flagged:
        lines += ["", "Largest excess elements (diff / bound):", "",
                  "| tensor | index | w0 | w_pt | w_ms | diff | g_pt | g_ms | bound | explained |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(flagged, key=lambda r: -r["diff"] / max(r["bound"], 1e-30))[:n]:
            lines.append(f"| {r['tensor']} | {r['index']} | {r['w0']:.6g} | {r['w_pt']:.7g} | {r['w_ms']:.7g} | "
                         f"{_fmt(r['diff'])} | {_fmt(r['g_pt'])} | {_fmt(r['g_ms'])} | {_fmt(r['bound'])} | "
                         f"{'yes' if r['explained'] else '**NO**'} |")
    return lines


def recipe_step_section(study, n=6):
    """A recipe's training step: what was run, the scalar comparisons, the worst weight / EMA tensors."""
    k = study.extra["n_scalar"]
    tensors = study.comparisons[k:]
    w = [c for c in tensors if c.name.startswith("w ")]
    e = [c for c in tensors if c.name.startswith("ema ")]
    lines = [f"- {note}" for note in study.notes] + ["", "| compared | shape | max abs | max abs ref | rel | tol | pass |",
                                                      "|---|---|---|---|---|---|---|"]
    for c in study.comparisons[:k] + sorted(tensors, key=lambda c: -c.rel)[:n]:
        lines.append(f"| {c.name} | {c.as_row()['shape'] or 'scalar'} | {_fmt(c.max_abs)} | {_fmt(c.ref_max)} | "
                     f"{_fmt(c.rel)} | {c.tol:g} | {'yes' if c.passed else '**NO**'} |")
    lines += ["", f"{sum(c.passed for c in w)} of {len(w)} weight tensors" +
              (f" and {sum(c.passed for c in e)} of {len(e)} EMA weight tensors" if e else "") +
              f" within {STEP_RTOL:g} of their max |w| (worst {_fmt(max(c.rel for c in tensors))})."]
    return lines


IMAGE_COLUMNS = (("input", "input max abs (<= 1e-6)"), ("logits", "logits rel (<= 2e-5)"),
                 ("MINDIR logits", "MINDIR logits rel"), ("predict --mindir", "predict --mindir excess"),
                 ("predict --ckpt_path", "predict --ckpt_path excess"))


def image_table(study):
    """One row per photo: input tensor, logits, and (when run) the MINDIR's logits and predict's
    probabilities (excess over the derived bound: 0 means within it)."""
    rows = {}
    for c in study.comparisons:
        kind, photo = next((k, c.name[len(k) + 1:]) for k, _ in sorted(IMAGE_COLUMNS, key=lambda x: -len(x[0]))
                           if c.name.startswith(k + " "))
        rows.setdefault(photo, {})[kind] = c
    kinds = [(k, title) for k, title in IMAGE_COLUMNS if any(k in r for r in rows.values())]
    files = study.extra.get("photos", {})
    lines = ["| photo | file | " + " | ".join(t for _, t in kinds) + " | pass |",
             "|---|---|" + "---|" * (len(kinds) + 1)]
    for photo, r in rows.items():
        ok = all(c.passed for c in r.values())
        cells = " | ".join(_fmt(r[k].rel) if k in r else "-" for k, _ in kinds)
        lines.append(f"| {photo} | {files.get(photo, '')} | {cells}" +
                     f" | {'yes' if ok else '**NO**'} |")
    return lines


def markdown(results, variants, elapsed, header):
    lines = ["# coat_ms parity report", "", *header, "",
             f"Tolerances: forward rel <= 2e-5 at every tap; gradients rel <= 1e-4 per tensor; AdamW step rel <= 1e-5 "
             f"per tensor; a recipe's training step: weights and EMA weights rel <= 1e-5 per tensor, loss rel <= 1e-5, "
             f"mixed inputs, soft targets and lr <= 1e-6, loss scale exact (rel = max|ms - ref| / max|ref|); image -> "
             f"logits: input tensors max abs <= 1e-6, logits rel <= 2e-5 per photo; mixed precision: O2 logits cosine "
             f">= 0.999 to float32, O2 gradients (loss-scaled) cosine >= 0.99 per tensor. Total time {elapsed:.0f} s.", ""]
    for v in variants:
        mine = [s for s in results if s.variant == v]
        lines += [f"## {v}", ""]
        forward = [s for s in mine if s.kind == "forward"]
        if forward:
            lines += [f"![relative error by depth]({v}_depth.png)", ""]
            base = [s for s in forward if s.label.startswith("224")]
            lines += forward_table(base or forward) + [""]
            for s in forward:
                if s not in base:
                    lines += [f"Other resolution ({s.label}): worst rel {_fmt(max(c.rel for c in s.comparisons))} at "
                              f"{max(s.comparisons, key=lambda c: c.rel).name}, "
                              f"{'pass' if s.passed else '**FAIL** at ' + ', '.join(s.failed_names)}.", ""]
            lines += [f"Weights: {forward[0].notes[0]}.", ""]
        for s in mine:
            if s.kind == "grad":
                lines += [f"### Gradients ({s.label})", "", s.notes[0] + ".", ""] + worst_rows(s) + [""]
            elif s.kind == "step":
                lines += [f"### One optimizer step ({s.label})", "", s.notes[0] + ".", ""] + step_section(s) + [""]
            elif s.kind == "amp":
                from . import amp  # noqa: PLC0415
                lines += amp.markdown_lines(s) + [""]
            elif s.kind == "recipe_step":
                lines += [f"### One training step of the recipe ({s.label})", ""] + recipe_step_section(s) + [""]
            elif s.kind == "image":
                lines += [f"### image -> logits ({s.label})", "", *s.notes, ""] + image_table(s) + [""]
            elif s.kind == "mindcv":
                lines += [f"### {s.label}", "", *(n + "" for n in s.notes), ""]
                w = max(s.comparisons, key=lambda c: c.rel)
                first_fail = s.failed_names[0] if s.failed_names else None
                lines += [f"Worst rel {_fmt(w.rel)} at {w.name}; "
                          + (f"first tap over tolerance: {first_fail}" if first_fail else "every tap within 2e-5")
                          + ("" if s.counted else " (informational)") + ".", ""]
    return "\n".join(lines) + "\n"


def summary(results, variants, elapsed):
    lines = [f"{'variant':18s} {'forward worst rel (tap)':42s} {'grad worst':>10s} {'step':>14s} {'recipe':>8s} "
             f"{'mindcv':>8s} {'image->logits':>13s} {'O2 cosine':>9s}  status"]
    for v in variants:
        mine = [s for s in results if s.variant == v]
        fw = [c for s in mine if s.kind == "forward" for c in s.comparisons]
        w = max(fw, key=lambda c: c.rel) if fw else None
        g = [s for s in mine if s.kind == "grad"]
        st = [s for s in mine if s.kind == "step"]
        mc = [s for s in mine if s.kind == "mindcv" and s.counted]
        am = [s for s in mine if s.kind == "amp"]
        atxt = f"{min(r.cosine for r in am[0].rows if r.bar):.6f}" if am else "-"
        rs = [s for s in mine if s.kind == "recipe_step"]
        rtxt = ("ok" if all(s.passed for s in rs) else "FAIL") + (f" ({len(rs)})" if len(rs) > 1 else "") if rs else "-"
        ok = all(s.passed for s in mine if s.counted)
        gtxt = _fmt(max(c.rel for c in g[0].comparisons)) if g else "-"
        stxt = "-"
        if st:
            n_exp = sum(c.explained and not c.within_tol for c in st[0].comparisons)
            stxt = ("ok" if st[0].passed else "FAIL") + (f" ({n_exp} expl)" if n_exp else "")
        mtxt = ("ok" if mc[0].passed else "FAIL") if mc else "-"
        ftxt = f"{_fmt(w.rel)} ({w.name})" if w else "-"
        im = [s for s in mine if s.kind == "image"]
        itxt = "-"
        if im:   # the worst logits rel of the photos (MINDIR included), or FAIL
            logit_rows = [c.rel for c in im[0].comparisons if "logits" in c.name]
            itxt = _fmt(max(logit_rows)) if im[0].passed else "FAIL"
        lines.append(f"{v:18s} {ftxt:42s} {gtxt:>10s} {stxt:>14s} {rtxt:>8s} {mtxt:>8s} {itxt:>13s} {atxt:>9s}  "
                     f"{'PASS' if ok else 'FAIL'}")
    failed = [f"{s.variant} {s.kind} {s.label}: {', '.join(s.failed_names[:4])}"
              for s in results if s.counted and not s.passed]
    lines.append(f"{len([s for s in results if s.counted])} studies, {len(failed)} failed, {elapsed:.0f} s")
    lines += ["FAILED: " + f for f in failed]
    return "\n".join(lines) + "\n"


def plot(forward, path):
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    fig, ax = plt.subplots(figsize=(max(6, len(forward[0].comparisons) * 0.22), 4))
    for s in forward:
        ax.semilogy(range(len(s.comparisons)), [max(c.rel, 1e-12) for c in s.comparisons], marker="o", ms=3,
                    label=s.label)
    names = [c.name for c in forward[0].comparisons]
    ax.axhline(2e-5, color="red", ls="--", lw=1, label="tolerance 2e-5")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("max|ms - timm| / max|timm|")
    ax.set_title(f"{forward[0].variant}: relative error by depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def to_json(results):
    import dataclasses  # noqa: PLC0415
    out = []
    for s in results:
        row = dict(kind=s.kind, variant=s.variant, label=s.label, passed=s.passed, counted=s.counted,
                   seconds=round(s.seconds, 2))
        if s.kind == "amp":
            row.update(logits=[dataclasses.asdict(r) for r in s.rows], grad_cosines=s.grad_cosines,
                       grad_ref_cosines=s.grad_ref_cosines)
        else:
            row.update(notes=s.notes, comparisons=[c.as_row() for c in s.comparisons],
                       flagged=s.extra.get("flagged", []))
        out.append(row)
    return out


def source_revision():
    """The commit the code under test comes from (git, or a SNAPSHOT file left by an export)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    snap = os.path.join(root, "SNAPSHOT")
    if os.path.isfile(snap):
        return open(snap).read().strip() + " (clean export)"
    try:
        import subprocess  # noqa: PLC0415
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "coat_ms", "convert"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return rev.stdout.strip() + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None):
    args = parse_args(argv)
    if args.variants == "all":
        variants = list(ORDER)
    else:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise CoatError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(ORDER)} or 'all'")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = skip - {"grad", "step", "recipe-step", "mindcv", "amp", "extra-res", "pynative", "graph", "image", "deploy"}
    if bad:
        raise CoatError(f"unknown --skip value(s) {', '.join(sorted(bad))}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CoatError(f"--out {args.out} exists and is not a folder")
    os.makedirs(args.out, exist_ok=True)

    import mindspore as ms  # noqa: PLC0415
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415
    logging.getLogger("coat_ms").setLevel(logging.WARNING)  # keep the progress bar readable
    t0 = time.time()
    results = run_jobs(plan(variants, skip, args.profile), args.seed)
    elapsed = time.time() - t0
    header = [f"Reference: timm {timm.__version__} (torch {torch.__version__}); "
              f"coat_ms on MindSpore {ms.__version__}, CPU, fp32; seed {args.seed}; "
              f"code at {source_revision()}; profile {args.profile}.",
              "Command: `python -m parity_tests.report " + " ".join(argv if argv is not None else sys.argv[1:]) + "`"]
    for v in variants:
        forward = [s for s in results if s.variant == v and s.kind == "forward"]
        if forward:
            plot(forward, os.path.join(args.out, f"{v}_depth.png"))
    text = summary(results, variants, elapsed)
    atomic_write_text(os.path.join(args.out, "parity.md"), markdown(results, variants, elapsed, header))
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(to_json(results), indent=1, default=float))
    atomic_write_text(os.path.join(args.out, "summary.txt"), text)
    print(text, end="")
    print(f"report: {os.path.join(args.out, 'parity.md')}")
    return 0 if all(s.passed for s in results if s.counted) else 1


if __name__ == "__main__":
    run_cli(main)
