"""Where ONNX Runtime spends its time on an ONNX file: per operator type, from ORT's own profiler.

    python benchmarks/profile_onnx.py --model coat_lite_tiny --batch 8    # our file and timm's, made here
    python benchmarks/profile_onnx.py coat_lite_tiny.onnx other.onnx       # any files

For each file: ``--runs`` profiled runs after one warm-up, on a seeded random input of the file's
shape (dynamic dimensions take --batch and --image_size), with the benchmark's session settings
(coat_ms.onnx_session.session_options). Prints the optimised graph's node count and, per operator type
(the fused kernels ORT actually ran: Gelu, LayerNormalization, FusedMatMul, ...), the time per run,
the share and the number of nodes, largest first.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def profile(path, batch, image_size, runs, threads):
    import numpy as np
    import onnxruntime as ort

    from coat_ms.onnx_session import input_shape_of, session_options

    with tempfile.TemporaryDirectory(prefix="coat_ortprof_") as tmp:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "prof")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(input_shape_of(inp.shape, batch, image_size)).astype(np.float32)
        session.run(None, {inp.name: x})  # warm-up, dropped below
        for _ in range(runs):
            session.run(None, {inp.name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    totals, counts = collections.Counter(), collections.Counter()
    kept = sorted(nodes, key=lambda e: e["ts"])[len(nodes) // (runs + 1):]  # drop the warm-up run
    for e in kept:
        op = e["args"].get("op_name", "?")
        totals[op] += e["dur"] / 1000.0 / runs
        counts[op] += 1
    run_ms = sorted(e["dur"] / 1000.0 for e in per_run[1:]) or [0.0]
    return {"run_ms": run_ms[len(run_ms) // 2], "nodes": sum(counts.values()) // runs,
            "ops": [(op, ms, counts[op] // runs) for op, ms in totals.most_common()]}


def model_files(model_name, folder):
    """Our ONNX file (export.py's, dynamic batch) and timm's own export of ``model_name``, written into ``folder``
    the way the benchmark writes them (benchmarks/bench_onnx.py); INT8 too."""
    from benchmarks.bench import worker_env
    from benchmarks.bench_onnx import ONNX_FRAMEWORKS, onnx_file, prepare_files

    failed = prepare_files(model_name, folder, worker_env("coat_ms"), lambda msg: print(msg, file=sys.stderr))
    if failed:
        sys.exit(f"error: {next(iter(failed.values()))}")
    return [onnx_file(folder, f, model_name) for f in ("onnx-timm",) + tuple(f for f in ONNX_FRAMEWORKS if f != "onnx-timm")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="ONNX files")
    p.add_argument("--model", default=None,
                   help="a CoaT variant: profile timm's ONNX export, ours and our INT8 file of it, made here")
    p.add_argument("--batch", type=int, default=8, help="batch for a dynamic batch dimension (default 8)")
    p.add_argument("--image_size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"),
                   help="H W for dynamic spatial dimensions (default 224 224)")
    p.add_argument("--runs", type=int, default=5, help="profiled runs after one warm-up (default 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="ORT intra-op threads (default: the CPU count, as the benchmark)")
    p.add_argument("--top", type=int, default=15, help="operator types to print per file (default 15)")
    args = p.parse_args(argv)
    if not args.files and not args.model:
        p.error("give ONNX files or --model NAME")
    with tempfile.TemporaryDirectory(prefix="coat_profile_onnx_") as tmp:
        files = list(args.files) + (model_files(args.model, tmp) if args.model else [])
        report(files, args)
    return 0


def report(files, args):
    for path in files:
        r = profile(path, args.batch, tuple(args.image_size), args.runs, args.threads)
        total = sum(ms for _, ms, _ in r["ops"])
        print(f"\n{os.path.basename(path)}: median run {r['run_ms']:.0f} ms, {r['nodes']} nodes run, {total:.0f} ms in kernels")
        print(f"  {'operator':<28} {'ms/run':>8} {'share':>6} {'nodes':>6}")
        for op, ms, n in r["ops"][:args.top]:
            print(f"  {op:<28} {ms:8.1f} {100 * ms / total:5.1f}% {n:6d}")


if __name__ == "__main__":
    sys.exit(main())
