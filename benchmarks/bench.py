"""CPU benchmark: coat_ms (GRAPH_MODE) vs timm (torch.inference_mode, fp32 and bf16 autocast) vs mindcv 0.3.0,
and in ONNX Runtime: our ONNX file vs timm's own ONNX export, and our INT8 file vs our float32 file.

    python benchmarks/bench.py                       # coat_lite_tiny and coat_tiny, batch 1 and 8
    python benchmarks/bench.py --models all --reps 7 --out benchmarks/results
    python benchmarks/bench.py --skip mindcv,onnx    # without mindcv and the ONNX Runtime rows

Every (framework, model, task) lives in its own worker process, so peak resident memory is that
framework's alone. The parent drives the workers round-robin, one timed call at a time, so load
changes on the machine hit coat_ms and timm alike; medians are reported. Each timed call follows an
untimed call of the same worker (as in a loop of its own, not right after another framework's call). mindcv runs in rounds of its
own after them (its multi-second calls slowed timm's next calls down). A large fp32 matmul (torch
and MindSpore), timed at the start of the same run in rounds of its own (between the model calls it
slowed them down), gives the practical GFLOP/s limit. FLOPs come from ``coat_ms.flops.count_macs``
(2 FLOPs per MAC). timm-bf16 (``torch.autocast("cpu", dtype=torch.bfloat16)``) runs where the CPU has
bfloat16 instructions. The ONNX files are made before a model's rounds (benchmarks/bench_onnx.py) and
timed in interleaved rounds of their own, after coat_ms and timm (ONNX Runtime's spinning threads slowed
the other frameworks' next calls down).
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's coat_ms

from benchmarks.bench_onnx import ONNX_FRAMEWORKS, OrtWorker, cpu_has_bf16, prepare_files  # noqa: E402

DEFAULT_MODELS = ("coat_lite_tiny", "coat_tiny")
IMAGE = 224
BLOCKING_RUN = "MS_DEV_HOST_BLOCKING_RUN"  # = coat_ms.runtime.BLOCKING_RUN; not imported: timm workers stay MindSpore-free
MATMUL_N = 2048
FRAMEWORKS = ("coat_ms", "timm", "timm-bf16", "onnx-coat_ms", "onnx-timm", "onnx-int8", "mindcv")
# what each row is compared with in the same run ("x anchor" column)
ANCHORS = {"coat_ms": "timm", "timm-bf16": "timm", "onnx-coat_ms": "onnx-timm", "onnx-timm": "timm",
           "onnx-int8": "onnx-coat_ms", "mindcv": "timm"}


# ---------------------------------------------------------------------------------------------
# Workers: one framework + model + task per process; commands arrive as JSON lines on stdin.
# ---------------------------------------------------------------------------------------------

def _peak_rss_mb():
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; ru_maxrss does not (a
    worker's started from the benchmark's own peak, a floor of ~600 MB under every small worker)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _MindSporeWorker:
    def __init__(self, framework, model_name, task):
        if framework == "coat_ms":
            import coat_ms  # noqa: F401  first, as the coat_ms CLIs import it (coat_ms/openmp.py)
        import mindspore as ms
        import numpy as np
        ms.set_context(mode=ms.GRAPH_MODE)
        self.ms, self.np, self.task = ms, np, task
        if framework == "mindcv":
            import mindcv
            self.model = mindcv.create_model(model_name, num_classes=1000)
        else:
            import coat_ms
            from coat_ms.runtime import configure_runtime
            configure_runtime()  # as the coat_ms CLIs run
            self.model = coat_ms.create_model(model_name)
        self.model.set_train(task == "train")
        self.inputs = {}
        if task == "train":
            from mindspore import nn
            from benchmarks.step import compiled_train_step
            self.opt = nn.AdamWeightDecay(self.model.trainable_params(), learning_rate=1e-4, weight_decay=0.05)
            self.step = compiled_train_step(self.model, self.opt)

    def _batch(self, batch):
        if batch not in self.inputs:
            rng = self.np.random.default_rng(batch)
            x = self.ms.Tensor(rng.standard_normal((batch, 3, IMAGE, IMAGE)).astype(self.np.float32))
            y = self.ms.Tensor(rng.integers(0, 1000, batch).astype(self.np.int32))
            self.inputs[batch] = (x, y)
        return self.inputs[batch]

    def call(self, batch):
        x, y = self._batch(batch)
        start = time.perf_counter()
        if self.task == "train":
            self.step(x, y).asnumpy()
        else:
            self.model(x).asnumpy()
        return time.perf_counter() - start


class _TorchWorker:
    def __init__(self, framework, model_name, task):
        import timm
        import torch
        torch.manual_seed(0)
        self.torch, self.task = torch, task
        self.bf16 = framework == "timm-bf16"  # timm's one-line bf16 inference: torch.autocast
        self.model = timm.create_model(model_name)
        self.model.train(task == "train")
        self.inputs = {}
        if task == "train":
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
            self.loss_fn = torch.nn.CrossEntropyLoss()

    def call(self, batch):
        torch = self.torch
        if batch not in self.inputs:
            gen = torch.Generator().manual_seed(batch)
            self.inputs[batch] = (torch.randn(batch, 3, IMAGE, IMAGE, generator=gen),
                                  torch.randint(0, 1000, (batch,), generator=gen))
        x, y = self.inputs[batch]
        start = time.perf_counter()
        if self.task == "train":
            self.opt.zero_grad(set_to_none=True)
            self.loss_fn(self.model(x), y).backward()
            self.opt.step()
        elif self.bf16:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                self.model(x)
        else:
            with torch.inference_mode():
                self.model(x)
        return time.perf_counter() - start


class _MatmulWorker:
    """fp32 N x N matmul in torch and MindSpore: the practical GFLOP/s limit of this CPU."""

    def __init__(self, framework, model_name, task):
        import numpy as np
        self.framework = framework
        a = np.random.default_rng(0).standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
        if framework == "torch-matmul":
            import torch
            self.a = torch.from_numpy(a)
            self.fn = lambda: torch.matmul(self.a, self.a)
        else:
            import mindspore as ms
            from mindspore import ops

            from coat_ms.runtime import configure_runtime
            configure_runtime()  # as coat_ms runs: the waiting thread does not spin on a core
            self.a = ms.Tensor(a)
            self.fn = lambda: ops.matmul(self.a, self.a).asnumpy()

    def call(self, batch):
        start = time.perf_counter()
        self.fn()
        return time.perf_counter() - start


def worker_main(spec):
    framework, model_name, task, folder = (spec.split(":", 3) + [""])[:4]
    os.environ.setdefault("GLOG_v", "3")
    if framework != "coat_ms":  # start as its users' processes do: without the OpenMP spin cap that
        from coat_ms.openmp import uncap_spinning  # main()'s import of coat_ms set in this process

        uncap_spinning()
    if framework in ONNX_FRAMEWORKS:
        worker = OrtWorker(framework, model_name, task, folder)
    else:
        cls = {"coat_ms": _MindSporeWorker, "mindcv": _MindSporeWorker, "timm": _TorchWorker, "timm-bf16": _TorchWorker,
               "torch-matmul": _MatmulWorker, "ms-matmul": _MatmulWorker}[framework]
        worker = cls(framework, model_name, task)
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        reply = {}
        try:
            if cmd["cmd"] == "call":
                reply["seconds"] = worker.call(cmd["batch"])
            reply["peak_rss_mb"] = _peak_rss_mb()
        except Exception as exc:  # reported to the parent, which marks the entry as failed
            reply["error"] = f"{type(exc).__name__}: {exc}"
        out.write("@@" + json.dumps(reply) + "\n")
        out.flush()
    out.flush()
    os._exit(0)  # skip MindSpore's noisy interpreter teardown


def worker_env(framework, mindcv_blocking_run=False):
    """The environment of a worker process: this coat_ms first on the path, quiet logs, and the runtime flag.

    coat_ms workers call ``configure_runtime`` (which keeps a value the user set); mindcv gets MindSpore's
    default runtime, as its users do, unless asked for the same setting as coat_ms.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # so workers import this coat_ms
    env = dict(os.environ, GLOG_v="3", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    if framework == "mindcv":
        env.pop(BLOCKING_RUN, None)
        if mindcv_blocking_run:
            env[BLOCKING_RUN] = "1"
    return env


class Worker:
    """Parent-side handle of one worker process (``onnx_dir``: where the ONNX workers find their files)."""

    def __init__(self, framework, model_name, task, mindcv_blocking_run=False, onnx_dir=""):
        self.key = (framework, model_name, task)
        env = worker_env(framework, mindcv_blocking_run)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                      f"{framework}:{model_name}:{task}:{onnx_dir}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)
        self.failed = None

    def _stderr_tail(self):
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().splitlines() if ln.strip() and "WARNING" not in ln]
        return " | ".join(lines[-3:])

    def ask(self, **cmd):
        if self.failed:
            return {"error": self.failed}
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            for line in self.proc.stdout:
                if line.startswith("@@"):
                    reply = json.loads(line[2:])
                    if "error" in reply:
                        self.failed = reply["error"]
                    return reply
        except (BrokenPipeError, OSError) as exc:
            self.failed = f"worker died: {exc}"
            return {"error": self.failed}
        self.failed = f"worker exited (code {self.proc.wait()}): {self._stderr_tail()}"
        return {"error": self.failed}

    def close(self):
        try:
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()


# ---------------------------------------------------------------------------------------------
# Parent: interleaved rounds, medians, ratios, report.
# ---------------------------------------------------------------------------------------------

def _log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _median(xs):
    return statistics.median(xs) if xs else None


def _measure_group(entry, name, task_kind, batch, frameworks, reps, mindcv_blocking_run, onnx_dir=""):
    """Start one worker per framework (compile + first call), then ``reps`` interleaved rounds; fills ``entry``."""
    workers = {}
    for f in frameworks:  # one process per framework, task and batch: its memory is its own
        _log(f"[{name}] {f} {task_kind} batch {batch}: starting worker, compile + first call ...")
        start = time.perf_counter()
        w = Worker(f, name, task_kind, mindcv_blocking_run, onnx_dir)
        r = w.ask(cmd="call", batch=batch)
        if "error" in r:
            _log(f"[{name}] {f} {task_kind} batch {batch}: FAILED: {r['error']}")
            entry.setdefault("errors", {})[f"{f}/{task_kind}/b{batch}"] = r["error"]
            w.close()
            continue
        entry["compile_first_call_s"][f"{f}/{task_kind}/b{batch}"] = r["seconds"]
        entry["startup_s"][f"{f}/{task_kind}/b{batch}"] = time.perf_counter() - start
        workers[f] = w
        _log(f"[{name}] {f} {task_kind} batch {batch}: compile + first call {r['seconds']:.1f} s")
    times = {f: [] for f in workers}
    # Where frameworks alternate, each timed call follows an untimed call of its own framework, as in a user's
    # loop: right after another framework's call, that framework's OpenMP threads were still spinning
    # (coat_tiny batch 1 took 75-90 ms after timm-bf16's calls, 73-74 ms in runs without them).
    lead_in = len(workers) > 1
    for rep in range(reps):
        for f, w in workers.items():
            if lead_in:
                w.ask(cmd="call", batch=batch)
            r = w.ask(cmd="call", batch=batch)
            if "seconds" in r:
                times[f].append(r["seconds"])
        _log(f"[{name}] {task_kind} batch {batch}: round {rep + 1}/{reps}: " + ", ".join(
            f"{f} {times[f][-1] * 1000:.0f} ms" for f in times if times[f]))
    for f, w in workers.items():
        rss = w.ask(cmd="rss").get("peak_rss_mb")
        w.close()
        med = _median(times[f])
        if med is None:
            continue
        entry[task_kind][f"{f}/b{batch}"] = {"median_s": med, "img_per_s": batch / med,
                                             "reps": len(times[f]), "times_s": times[f]}
        entry["peak_rss_mb"][f"{f}/{task_kind}/b{batch}"] = rss


def run_benchmark(args):
    models = list(DEFAULT_MODELS) if args.models == "default" else (
        ["coat_tiny", "coat_mini", "coat_small", "coat_lite_tiny", "coat_lite_mini", "coat_lite_small",
         "coat_lite_medium"] if args.models == "all" else args.models.split(","))
    frameworks = [f for f in FRAMEWORKS if f not in args.skip and not (f == "timm-bf16" and not cpu_has_bf16())]
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "bf16": cpu_has_bf16(),
                          "load_avg_start": os.getloadavg()},
              "settings": vars(args).copy(), "models": {}, "matmul": {}}
    # The matmul limit, measured first in rounds of its own. Interleaved with the model calls it slowed
    # the next calls down (timm's coat_lite_tiny batch 8: 308-355 ms without the two matmul calls
    # between rounds, 582 ms with them; coat_ms 234 -> 268 ms), so its workers are gone before the models run.
    mm = [Worker(f, "-", "mm") for f in ("torch-matmul", "ms-matmul")]
    mm_times = {w.key[0]: [] for w in mm}
    for w in mm:
        w.ask(cmd="call", batch=0)  # warm-up
    for _ in range(args.reps):
        for w in mm:
            r = w.ask(cmd="call", batch=0)
            if "seconds" in r:
                mm_times[w.key[0]].append(r["seconds"])
    for w in mm:
        w.close()
    phases = [("infer", b) for b in args.batches]
    if not args.no_train:
        phases.append(("train", args.train_batch))
    onnx_dir = tempfile.mkdtemp(prefix="coat_bench_onnx_")
    try:
        for name in models:
            _measure_model(result, name, frameworks, phases, args, onnx_dir)
    finally:
        shutil.rmtree(onnx_dir, ignore_errors=True)
    for f, ts in mm_times.items():
        med = _median(ts)
        if med:
            result["matmul"][f] = {"n": MATMUL_N, "median_s": med, "gflops": 2 * MATMUL_N ** 3 / med / 1e9,
                                   "reps": len(ts)}
    result["machine"]["load_avg_end"] = os.getloadavg()
    return result


def _measure_model(result, name, frameworks, phases, args, onnx_dir):
    """All phases of one model: its ONNX files first (when ONNX rows are on), then the interleaved rounds."""
    from coat_ms.flops import count_macs

    macs = count_macs(name, (IMAGE, IMAGE))
    entry = {"gmacs": macs / 1e9, "infer": {}, "train": {}, "compile_first_call_s": {}, "startup_s": {},
             "peak_rss_mb": {}}
    result["models"][name] = entry
    if any(f in ONNX_FRAMEWORKS for f in frameworks):
        failed = prepare_files(name, onnx_dir, worker_env("coat_ms"), _log)
        for f, error in failed.items():
            entry.setdefault("errors", {})[f"{f}/prepare"] = error
        frameworks = [f for f in frameworks if f not in failed]
    for task_kind, batch in phases:
        names = frameworks if task_kind == "infer" else [f for f in ("coat_ms", "timm") if f in frameworks]
        # coat_ms and timm (fp32, bf16) interleaved; the ONNX Runtime files interleaved among themselves in
        # rounds of their own, after them: ORT's worker threads spin after each run, and between the
        # frameworks' calls they took the cores from the next call (coat_ms's coat_lite_tiny batch 1:
        # 66 ms with them in the same rounds, 32-37 ms without); mindcv last, in rounds of its own: its
        # multi-second calls between timm's slowed timm's next calls (coat_lite_tiny batch 8: 1074, 674 ms
        # in the rounds after a mindcv call, 523, 341 ms once mindcv's repetitions were over)
        groups = [[f for f in names if f not in ONNX_FRAMEWORKS and f != "mindcv"],
                  [f for f in names if f in ONNX_FRAMEWORKS], [f for f in names if f == "mindcv"]]
        for group in filter(None, groups):
            reps = args.mindcv_reps if group == ["mindcv"] else args.reps
            _measure_group(entry, name, task_kind, batch, group, reps, args.mindcv_blocking_run, onnx_dir)


def _ratio(a, b):
    return a / b if a and b else None


def summarize(result):
    """Rows of the ratio table (also what the Markdown shows)."""
    limit = max((v["gflops"] for v in result["matmul"].values()), default=None)
    rows = []
    for name, e in result["models"].items():
        for key, v in sorted(e["infer"].items()):
            fw, b = key.split("/")
            gflops = 2 * e["gmacs"] * v["img_per_s"]
            rows.append({"model": name, "task": "infer", "framework": fw, "batch": int(b[1:]),
                         "img_per_s": v["img_per_s"], "latency_ms": v["median_s"] * 1000,
                         "gflops": gflops, "eff": gflops / limit if limit else None,
                         "first_call_s": e["compile_first_call_s"].get(f"{fw}/infer/{b}"),
                         "peak_rss_mb": e["peak_rss_mb"].get(f"{fw}/infer/{b}")})
        for key, v in sorted(e["train"].items()):
            fw, b = key.split("/")
            rows.append({"model": name, "task": "train", "framework": fw, "batch": int(b[1:]),
                         "img_per_s": v["img_per_s"], "latency_ms": v["median_s"] * 1000, "gflops": None,
                         "eff": None, "first_call_s": e["compile_first_call_s"].get(f"{fw}/train/{b}"),
                         "peak_rss_mb": e["peak_rss_mb"].get(f"{fw}/train/{b}")})
    order = {f: i for i, f in enumerate(FRAMEWORKS)}
    rows.sort(key=lambda r: (list(result["models"]).index(r["model"]), r["task"] != "infer", r["batch"],
                             order.get(r["framework"], 99)))
    for r in rows:
        base = {x["framework"]: x for x in rows
                if x["model"] == r["model"] and x["task"] == r["task"] and x["batch"] == r["batch"]}
        r["vs_timm"] = _ratio(r["img_per_s"], base.get("timm", {}).get("img_per_s"))
        r["vs_mindcv"] = _ratio(r["img_per_s"], base.get("mindcv", {}).get("img_per_s"))
        r["anchor"] = ANCHORS.get(r["framework"]) if ANCHORS.get(r["framework"]) in base else None
        r["vs_anchor"] = _ratio(r["img_per_s"], base[r["anchor"]]["img_per_s"]) if r["anchor"] else None
    return rows, limit


def targets(result, rows):
    """The issue's targets per model: (label, value, goal, met) with values from this run."""
    out = []
    for name in result["models"]:
        def pick(task, fw, batch, field):
            for r in rows:
                if (r["model"], r["task"], r["framework"], r["batch"]) == (name, task, fw, batch):
                    return r[field]
            return None
        def ratio(fw, anchor, batch):
            return _ratio(pick("infer", fw, batch, "img_per_s"), pick("infer", anchor, batch, "img_per_s"))
        e = result["models"][name]
        batches = sorted(result["settings"]["batches"])
        b_big = max(batches)
        checks = []
        for b in batches:  # issue 23: the CPU lead, the ONNX file, INT8, and timm's bf16 autocast as an anchor
            checks += [(f"infer b{b} coat_ms/timm", ratio("coat_ms", "timm", b), ">= 1.3", lambda v: v >= 1.3),
                       (f"infer b{b} coat_ms/timm-bf16", ratio("coat_ms", "timm-bf16", b), "report", lambda v: None),
                       (f"infer b{b} ONNX in ORT: ours/timm's", ratio("onnx-coat_ms", "onnx-timm", b), ">= 1.0",
                        lambda v: v >= 1.0),
                       (f"infer b{b} ORT INT8/ours fp32", ratio("onnx-int8", "onnx-coat_ms", b), "report", lambda v: None),
                       (f"infer b{b} ORT INT8/timm's ONNX", ratio("onnx-int8", "onnx-timm", b), "report",
                        lambda v: None)]
        checks.append((f"infer b{b_big} coat_ms/mindcv", pick("infer", "coat_ms", b_big, "vs_mindcv"), ">= 10",
                       lambda v: v >= 10))
        cm = e["compile_first_call_s"].get(f"coat_ms/infer/b{b_big}")
        cc = e["compile_first_call_s"].get(f"mindcv/infer/b{b_big}")
        checks.append((f"compile+first call b{b_big} coat_ms/mindcv", cm / cc if cm and cc else None, "<= 1.0",
                       lambda v: v <= 1.0))
        tb = result["settings"]["train_batch"]
        checks.append((f"train b{tb} coat_ms/timm", pick("train", "coat_ms", tb, "vs_timm"), ">= 0.8",
                       lambda v: v >= 0.8))
        rm = e["peak_rss_mb"].get(f"coat_ms/infer/b{b_big}")
        rt = e["peak_rss_mb"].get(f"timm/infer/b{b_big}")
        checks.append((f"peak RSS b{b_big} coat_ms/timm", rm / rt if rm and rt else None, "<= 1.2",
                       lambda v: v <= 1.2))
        for label, value, goal, test in checks:
            if value is not None or goal != "report":
                out.append((name, label, value, goal, None if value is None else test(value)))
    return out


def platform_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def to_markdown(result):
    rows, limit = summarize(result)
    m = result["machine"]
    lines = [f"CPU: {m['cpus']} cores ({platform_cpu()}), load average {m['load_avg_start'][0]:.1f} at start, "
             f"{m['load_avg_end'][0]:.1f} at end; fp32 unless named, {IMAGE}x{IMAGE}, medians of interleaved "
             f"repetitions; bf16 instructions: {'yes' if m.get('bf16') else 'no (no timm-bf16 row)'}.",
             "ONNX rows: ONNX Runtime, CPU, all graph optimisations, intra-op threads = CPU count; onnx-coat_ms = "
             "export.py --file_format ONNX --dynamic batch, onnx-timm = timm.utils.onnx.onnx_export (opset 17, "
             "dynamic batch), onnx-int8 = export.py --quantize int8 (32 calibration photos).",
             "Matmul limit ({0}x{0} fp32): ".format(MATMUL_N) + ", ".join(
                 f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in result["matmul"].items()),
             f"coat_ms sets {BLOCKING_RUN}=1 (CPU); mindcv runs with "
             + (f"{BLOCKING_RUN}=1 too." if result["settings"].get("mindcv_blocking_run")
                else "MindSpore's default runtime (as mindcv users get it)."), "",
             "| model | task | framework | batch | img/s | latency ms | x timm | x anchor | x mindcv | GFLOP/s | "
             "% of matmul | compile+first s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        anchor = f"{r['vs_anchor']:.2f} ({r['anchor']})" if r.get("vs_anchor") and r["anchor"] != "timm" else "-"
        lines.append(f"| {r['model']} | {r['task']} | {r['framework']} | {r['batch']} | {r['img_per_s']:.2f} | "
                     f"{r['latency_ms']:.0f} | {_fmt(r['vs_timm'], '.2f')} | {anchor} | {_fmt(r['vs_mindcv'], '.1f')} | "
                     f"{_fmt(r['gflops'], '.1f')} | {_fmt(r['eff'] * 100 if r['eff'] else None, '.1f')} | "
                     f"{_fmt(r['first_call_s'], '.1f')} | {_fmt(r['peak_rss_mb'], '.0f')} |")
    lines += ["", "| model | target | this run | goal | met |", "|---|---|---|---|---|"]
    for name, label, value, goal, met in targets(result, rows):
        lines.append(f"| {name} | {label} | {_fmt(value, '.2f')} | {goal} | "
                     f"{'-' if met is None else ('yes' if met else 'NO')} |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="default",
                   help="'default' (coat_lite_tiny,coat_tiny), 'all', or a comma-separated list")
    p.add_argument("--batches", default="1,8", help="comma-separated inference batch sizes (default 1,8)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per framework (default 5)")
    p.add_argument("--mindcv-reps", type=int, default=2, help="repetitions for mindcv, which is slow (default 2)")
    p.add_argument("--train-batch", type=int, default=8, help="batch of the training-step comparison (default 8)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    p.add_argument("--skip", default="",
                   help="rows to leave out, comma-separated: coat_ms, timm, timm-bf16, mindcv, onnx-coat_ms, onnx-timm, "
                        "onnx-int8, or onnx (all three ONNX rows)")
    p.add_argument("--mindcv-blocking-run", action="store_true",
                   help=f"run mindcv with {BLOCKING_RUN}=1, the MindSpore runtime setting coat_ms applies on CPU "
                        "(default: MindSpore's default, as mindcv runs); separates the runtime's share of the "
                        "speed-up from the model's")
    p.add_argument("--out", default="benchmarks/results", help="directory for bench.json and bench.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    from coat_ms.errors import CoatError
    from coat_ms.fileio import atomic_write_text
    args = build_parser().parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        raise CoatError(f"--batches must be comma-separated integers, got {args.batches!r}") from None
    if not args.batches or min(args.batches) < 1 or args.reps < 1 or args.mindcv_reps < 1 or args.train_batch < 1:
        raise CoatError("--batches, --reps, --mindcv-reps and --train-batch must be positive")
    args.skip = [s for s in args.skip.split(",") if s]
    args.skip += list(ONNX_FRAMEWORKS) if "onnx" in args.skip else []
    unknown = sorted(set(args.skip) - set(FRAMEWORKS) - {"onnx"})
    if unknown:
        raise CoatError(f"--skip: unknown row(s) {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}, onnx")
    import coat_ms
    names = coat_ms.list_models()
    wanted = [] if args.models in ("default", "all") else args.models.split(",")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise CoatError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(names)}")
    result = run_benchmark(args)
    md = to_markdown(result)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "bench.json"), json.dumps(result, indent=2))
    atomic_write_text(os.path.join(args.out, "bench.md"), md)
    print(md)
    print(f"wrote {os.path.join(args.out, 'bench.json')} and {os.path.join(args.out, 'bench.md')}")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        main()
    else:
        from coat_ms.cli import run_cli
        run_cli(main)
