"""The convert CLI and its bad inputs: each a one-line error, non-zero exit, no output file left."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # convert/ lives at the repo root

import convert  # noqa: E402
from convert import cli  # noqa: E402
from convert import ConversionError  # noqa: E402
from coat_ms.errors import CoatError  # noqa: E402

import torch  # noqa: E402  (the reference side is part of the dev install: fail, never skip)
import timm  # noqa: E402


@pytest.fixture(scope="session")
def lite_tiny_sd():
    torch.manual_seed(0)
    model = timm.create_model("coat_lite_tiny", img_size=64)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def lite_tiny_pth(lite_tiny_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "coat_lite_tiny.pth"
    torch.save(lite_tiny_sd, path)
    return str(path)


def no_outputs(folder):
    return [p for p in os.listdir(folder) if p.startswith(("out", ".out"))] == []


def run_main(args, tmp_path, match):
    out = str(tmp_path / "out.ckpt")
    with pytest.raises(CoatError, match=match) as info:  # what run_cli prints as one line
        cli.main(args + ["--out", out])
    assert "\n" not in str(info.value)
    assert no_outputs(tmp_path)
    return str(info.value)


def save(obj, tmp_path, name="src.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_truncated_pth(lite_tiny_pth, tmp_path):
    data = open(lite_tiny_pth, "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    run_main(["--src", str(tmp_path / "cut.pth")], tmp_path, "truncated or not a PyTorch checkpoint")


def test_corrupt_safetensors_and_ckpt_and_empty(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1" + b"x" * 40)
    run_main(["--src", str(tmp_path / "bad.safetensors")], tmp_path, "not a valid .safetensors")
    (tmp_path / "bad.ckpt").write_bytes(os.urandom(256))
    run_main(["--src", str(tmp_path / "bad.ckpt")], tmp_path, "truncated or not a MindSpore")
    (tmp_path / "noise.pth").write_bytes(b"garbage!" * 8)
    run_main(["--src", str(tmp_path / "noise.pth")], tmp_path, "neither a zip nor a pickle")
    (tmp_path / "empty.pth").write_bytes(b"")
    run_main(["--src", str(tmp_path / "empty.pth")], tmp_path, "empty or truncated")
    run_main(["--src", str(tmp_path / "missing.pth")], tmp_path, "not found")


def test_other_architecture(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    run_main(["--src", save(net.state_dict(), tmp_path)], tmp_path, "not a CoaT checkpoint")


def test_other_variant_names_mismatched_shapes(lite_tiny_pth, tmp_path):
    msg = run_main(["--src", lite_tiny_pth, "--model", "coat_lite_mini"], tmp_path, "coat_lite_tiny checkpoint")
    assert "patch_embed3.proj.weight (256, 128, 2, 2) vs model (320, 128, 2, 2)" in msg


def test_unknown_and_missing_keys(lite_tiny_sd, tmp_path):
    extra = dict(lite_tiny_sd, **{"extra.weight": torch.zeros(3)})
    run_main(["--src", save(extra, tmp_path)], tmp_path, r"1 unknown keys \(extra.weight\)")
    lacking = {k: v for k, v in lite_tiny_sd.items() if k != "head.bias"}
    run_main(["--src", save(lacking, tmp_path)], tmp_path, r"1 missing keys \(head.bias\)")
    no_embed = {k: v for k, v in lite_tiny_sd.items() if not k.startswith("patch_embed4.")}
    run_main(["--src", save(no_embed, tmp_path)], tmp_path, "CoaT checkpoint without patch_embed4.proj.weight")
    run_main(["--src", save(no_embed, tmp_path), "--model", "coat_lite_tiny"], tmp_path,
             r"4 missing keys \(patch_embed4.proj.weight, patch_embed4.proj.bias, patch_embed4.norm.weight")


def test_tied_copies_must_be_equal(lite_tiny_sd, tmp_path):
    edited = dict(lite_tiny_sd)
    edited["serial_blocks1.1.cpe.proj.weight"] = edited["cpe1.proj.weight"] + 1e-3
    run_main(["--src", save(edited, tmp_path)], tmp_path, "tied weights differ: serial_blocks1.1.cpe.proj.weight")


def test_unwritable_output_and_bad_flags(lite_tiny_pth, lite_tiny_sd, tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        cli.main(["--src", lite_tiny_pth, "--out", str(tmp_path / "no" / "such" / "out.ckpt")])
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConversionError, match="is a directory"):
        cli.main(["--src", lite_tiny_pth, "--out", str(tmp_path / "adir")])
    run_main(["--src", lite_tiny_pth, "--ema"], tmp_path, "no EMA weights")
    run_main(["--src", lite_tiny_pth, "--format", "pth"], tmp_path, "not an output of --to ms")
    run_main(["--src", lite_tiny_pth, "--model", "resnet50"], tmp_path, "unknown model 'resnet50'")


def test_ema_container(lite_tiny_sd, tmp_path):
    ema = {k: v + 1.0 for k, v in lite_tiny_sd.items()}
    src = save({"model": lite_tiny_sd, "model_ema": ema, "epoch": 3}, tmp_path)
    cli.main(["--src", src, "--out", str(tmp_path / "ema.ckpt"), "--ema"])
    meta = json.loads((tmp_path / "ema.ckpt.json").read_text())
    assert meta["source_container"] == "model_ema"
    from coat_ms.checkpoint import read_checkpoint
    got = read_checkpoint(str(tmp_path / "ema.ckpt"))["head.bias"].asnumpy()
    np.testing.assert_array_equal(got, ema["head.bias"].numpy())


def cli_run(args, block_torch=False, timeout=300):
    """python -m convert in a fresh interpreter (optionally with torch made unimportable)."""
    code = ("import sys, runpy\n"
            + ("sys.modules['torch'] = None\n" if block_torch else "")
            + f"sys.argv = ['convert'] + {args!r}\nrunpy.run_module('convert', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_success_with_verify_and_metadata(lite_tiny_pth, tmp_path):
    out = tmp_path / "w.ckpt"
    proc = cli_run(["--src", lite_tiny_pth, "--out", str(out), "--verify", "--image-size", "64"])
    assert proc.returncode == 0, proc.stderr
    assert "model: coat_lite_tiny (inferred" in proc.stdout
    assert "tied groups collapsed: 32 (64 duplicate keys" in proc.stdout
    assert "-> OK" in proc.stdout
    meta = json.loads((tmp_path / "w.ckpt.json").read_text())
    assert meta["source_sha256"] == hashlib.sha256(open(lite_tiny_pth, "rb").read()).hexdigest()
    assert meta["variant"] == "coat_lite_tiny" and meta["converter_version"] == convert.__version__
    assert meta["verify_rel_error"] <= 2e-5


def test_cli_bad_input_is_one_line(lite_tiny_pth, tmp_path):
    out = tmp_path / "out.ckpt"
    proc = cli_run(["--src", lite_tiny_pth, "--out", str(out), "--model", "coat_lite_small"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model coat_lite_small does not match"), proc.stderr
    assert no_outputs(tmp_path)


def test_safetensors_converts_without_torch_and_pth_says_what_to_install(lite_tiny_sd, lite_tiny_pth, tmp_path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in lite_tiny_sd.items() if ".cpe." not in k and ".crpe." not in k},
              str(tmp_path / "w.safetensors"))
    proc = cli_run(["--src", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "w.ckpt")], block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "w.ckpt").is_file()
    proc = cli_run(["--src", lite_tiny_pth, "--out", str(tmp_path / "out.ckpt")], block_torch=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: reading a .pth file needs PyTorch: install it with 'pip install torch' "
                                   "(the CPU build is enough), or convert a .safetensors file instead")
    assert no_outputs(tmp_path)


def test_mindspore_safetensors_output_and_reverse(lite_tiny_pth, lite_tiny_sd, tmp_path):
    import mindspore as ms
    import coat_ms
    from coat_ms.checkpoint import load_state
    out = tmp_path / "w.safetensors"
    cli.main(["--src", lite_tiny_pth, "--out", str(out)])  # format from the extension
    params = ms.load_checkpoint(str(out), format="safetensors")
    model = coat_ms.create_model("coat_lite_tiny")
    load_state(model, params)  # strict: every name and shape
    np.testing.assert_array_equal(params["cpe2.proj.weight"].asnumpy(), lite_tiny_sd["cpe2.proj.weight"].numpy())
    back = tmp_path / "back.pth"
    cli.main(["--to", "torch", "--src", str(out), "--out", str(back), "--model", "coat_lite_tiny"])
    restored = torch.load(back, weights_only=True)
    assert list(restored) == list(lite_tiny_sd)
    assert all(torch.equal(restored[k], v) for k, v in lite_tiny_sd.items())


def test_half_precision_source_is_reported_and_widened(lite_tiny_sd):
    half = {k: v.half() for k, v in lite_tiny_sd.items()}
    result = convert.torch_to_ms(half)
    assert len(result.report.retyped) == len(result.params)
    assert result.report.retyped[0][1] == "float16"
    assert all(v.dtype == np.float32 for v in result.params.values())
    np.testing.assert_array_equal(result.params["head.weight"], half["head.weight"].float().numpy())


def test_reverse_sets_training_state_aside_and_rejects_foreign_names(lite_tiny_sd):
    params = convert.torch_to_ms(lite_tiny_sd).params
    with_state = dict(params, **{"moments.head.weight": np.zeros((1000, 320), np.float32),
                                 "global_step": np.zeros((1,), np.int32)})
    assert list(convert.ms_to_torch(with_state, "coat_lite_tiny")) == list(lite_tiny_sd)
    with pytest.raises(ConversionError, match=r"1 unknown \(extra.bias\)"):
        convert.ms_to_torch(dict(params, **{"extra.bias": np.zeros(3, np.float32)}), "coat_lite_tiny")


def test_output_that_is_the_source_through_a_link_is_refused(lite_tiny_pth, tmp_path):
    """--out naming the source through a symlink or hard link: refused, the source untouched."""
    same = tmp_path / "same.pth"
    same.write_bytes(open(lite_tiny_pth, "rb").read())
    before = same.read_bytes()
    (tmp_path / "link.pth").symlink_to(same)
    os.link(same, tmp_path / "hard.pth")
    for src in ("link.pth", "hard.pth"):
        with pytest.raises(CoatError, match="is the input file .* refusing to overwrite it") as info:
            cli.main(["--src", str(tmp_path / src), "--out", str(same)])
        assert "\n" not in str(info.value)
        assert same.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["hard.pth", "link.pth", "same.pth"]  # no temp file left either


def test_output_extension_sets_the_direction_or_is_refused(lite_tiny_pth, lite_tiny_sd, tmp_path):
    """A .pth output is a PyTorch file: without --to it converts back to timm; with --to ms it is refused."""
    ckpt = str(tmp_path / "w.ckpt")
    assert cli.main(["--src", lite_tiny_pth, "--out", ckpt]) == 0
    back = tmp_path / "back.pth"
    assert cli.main(["--src", ckpt, "--out", str(back)]) == 0   # no --to: from the extension
    restored = torch.load(back, weights_only=True)
    assert list(restored) == list(lite_tiny_sd)
    assert all(torch.equal(restored[k], v) for k, v in lite_tiny_sd.items())
    for args, match in ((["--src", lite_tiny_pth, "--to", "ms"], "names a PyTorch checkpoint but --to ms writes "
                                                                  "a MindSpore checkpoint: use --to torch"),
                        (["--src", lite_tiny_pth], "is already a PyTorch file")):
        with pytest.raises(ConversionError, match=match) as info:
            cli.main(args + ["--out", str(tmp_path / "out.pth")])
        assert "\n" not in str(info.value)
    with pytest.raises(ConversionError, match="names a MindSpore checkpoint but --to torch"):
        cli.main(["--src", ckpt, "--to", "torch", "--out", str(tmp_path / "out.ckpt")])
    assert no_outputs(tmp_path)


def test_safetensors_saved_with_one_name_per_tie_converts_and_verifies(tmp_path):
    """safetensors.torch.save_model keeps one key per tied tensor; --verify must load it into timm anyway."""
    from safetensors import safe_open
    from safetensors.torch import save_model
    torch.manual_seed(1)
    model = timm.create_model("coat_lite_tiny", img_size=64)
    path = str(tmp_path / "model.safetensors")
    save_model(model, path)
    with safe_open(path, "np") as f:
        assert len(list(f.keys())) < len(model.state_dict())  # the alias form, not the full state dict
    out = tmp_path / "w.ckpt"
    assert cli.main(["--src", path, "--out", str(out), "--verify", "--image-size", "64"]) == 0
    meta = json.loads((tmp_path / "w.ckpt.json").read_text())
    assert meta["verify_rel_error"] <= 2e-5
    assert meta["source_format"] == "safetensors"  # its header length begins with 0x80, a pickle's first byte
    from coat_ms.checkpoint import read_checkpoint
    got = read_checkpoint(str(out))
    np.testing.assert_array_equal(got["cpe3.proj.weight"].asnumpy(), model.state_dict()["cpe3.proj.weight"].numpy())


@pytest.mark.parametrize("prefix", [b"\x80", b"PK"])
def test_safetensors_whose_header_length_looks_like_a_pickle_or_zip(prefix, tmp_path):
    """The 8-byte header length of a .safetensors file may begin with a pickle's or zip's magic bytes."""
    from safetensors.numpy import save
    from coat_ms.conversion import readers
    arrays = {"a": np.zeros(2, np.float32)}
    pad = next(n for n in range(70000) if save(arrays, metadata={"pad": "x" * n})[:len(prefix)] == prefix)
    path = tmp_path / "w.safetensors"
    path.write_bytes(save(arrays, metadata={"pad": "x" * pad}))
    assert readers.detect_format(str(path)) == "safetensors"
    np.testing.assert_array_equal(readers.read_source(str(path)).state_dict["a"], arrays["a"])
