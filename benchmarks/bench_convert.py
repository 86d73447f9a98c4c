"""Conversion speed for coat_lite_medium (44.6M parameters), framework imports excluded.

    .venv/bin/python benchmarks/bench_convert.py [--model coat_lite_medium] [--repeat 1]

Builds timm's model with random weights, writes it as .pth and .safetensors in a temp folder, then
times each step of the converter: read source, torch_to_ms (incl. building the layout), write .ckpt,
and the reverse (.ckpt -> .pth).  Target: .pth -> .ckpt under 10 s on the 2-core dev machine.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindspore  # noqa: E402,F401  (imports first: they are not part of the conversion time)
import timm  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import convert  # noqa: E402
from coat_ms.conversion import readers, rules, writers  # noqa: E402


def timed(label, fn, times):
    start = time.perf_counter()
    value = fn()
    times[label] = time.perf_counter() - start
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="coat_lite_medium")
    args = parser.parse_args()
    torch.manual_seed(0)
    sd = timm.create_model(args.model).state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        pth, st = os.path.join(tmp, "m.pth"), os.path.join(tmp, "m.safetensors")
        torch.save(sd, pth)
        groups = {}
        for k, v in sd.items():
            groups.setdefault(v.data_ptr(), k)
        save_file({k: sd[k].contiguous() for k in groups.values()}, st)
        rules.layout.cache_clear()
        t = {}
        src = timed("read .pth (+sha256)", lambda: readers.read_source(pth), t)
        res = timed("torch_to_ms (layout build + checks)", lambda: convert.torch_to_ms(src.state_dict), t)
        timed("write .ckpt + .json", lambda: writers.write_mindspore(res.params, os.path.join(tmp, "m.ckpt"), "ckpt",
                                                                   {"variant": res.variant}), t)
        total = sum(t.values())
        t2 = {}
        src2 = timed("read .safetensors (+sha256)", lambda: readers.read_source(st), t2)
        res2 = timed("torch_to_ms", lambda: convert.torch_to_ms(src2.state_dict), t2)
        timed("write .ckpt + .json", lambda: writers.write_mindspore(res2.params, os.path.join(tmp, "s.ckpt")), t2)
        t3 = {}
        back = timed("read .ckpt", lambda: readers.read_mindspore(os.path.join(tmp, "m.ckpt")), t3)
        sd_back = timed("ms_to_torch", lambda: convert.ms_to_torch(back, res.variant), t3)
        timed("write .pth", lambda: writers.write_torch(sd_back, os.path.join(tmp, "back.pth")), t3)
    print(f"{args.model}: {res.report.numel / 1e6:.2f}M parameters ({len(sd)} PyTorch keys, "
          f"{len(res.params)} MindSpore parameters)")
    for title, steps in ((".pth -> .ckpt", t), (".safetensors -> .ckpt", t2), (".ckpt -> .pth", t3)):
        print(f"{title}: {sum(steps.values()):.2f} s")
        for label, sec in steps.items():
            print(f"    {label:<40s} {sec:6.2f} s")
    print(f"target .pth -> .ckpt < 10 s: {'met' if total < 10 else 'NOT met'} ({total:.2f} s)")
    sys.stdout.flush()
    os._exit(0)  # skip MindSpore's noisy interpreter shutdown


if __name__ == "__main__":
    main()
