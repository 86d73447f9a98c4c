"""pretrained=True, offline: a temporary Hugging Face cache holding files timm wrote (random weights).

Each test gets its own hub cache (HF_HUB_CACHE) and coat_ms cache (COAT_MS_HOME) in tmp_path and
HF_HUB_OFFLINE=1 unless it says otherwise; nothing reads or writes the user's real caches.
"""
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import mindspore as ms
import numpy as np
import pytest
import timm  # noqa: F401  (the reference side is part of the dev install: fail, never skip)
import torch
from safetensors.torch import save_file, save_model
from timm.models import save_for_hf

import coat_ms
from coat_ms import pretrained
from coat_ms.errors import CoatError

# MindSpore's default mode, the one a user's fresh process has (a graph mode left behind by an earlier test in
# the same worker made the verification forwards compile: 10 s -> 44 s)
pytestmark = pytest.mark.usefixtures("pynative_mode")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "pretrained.md")


@pytest.fixture
def caches(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    home = tmp_path / "coat_ms_home" / "pretrained"   # where the converted weights go
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("COAT_MS_HOME", str(home.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub, home


def timm_model(variant, seed):
    """timm's model with seeded random weights, every one moved off its initial value (biases are 0, norms 1)."""
    torch.manual_seed(seed)
    model = timm.create_model(variant).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def write_full_safetensors(model, path):
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, path)  # every key, aliases too


def write_one_name_per_tie(model, path):
    save_model(model, path)


def write_timm_bin(model, path):
    """pytorch_model.bin as timm writes it for the hub (timm.models.save_for_hf)."""
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(model, folder, safe_serialization=False)
        os.replace(os.path.join(folder, "pytorch_model.bin"), path)


def place_in_hub(hub, variant, filename, writer, model, revision):
    """Write a file into the hub cache as huggingface_hub lays it out: blob by sha256, snapshot symlink, refs/main."""
    repo = hub / f"models--timm--{variant}.in1k"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    staging = repo / "blobs" / "incoming"
    writer(model, str(staging))
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    os.replace(staging, repo / "blobs" / digest)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).symlink_to(os.path.join("..", "..", "blobs", digest))
    (repo / "refs" / "main").write_text(revision)
    return snapshot / filename


def logits_rel(coat_model, torch_model, size=224, seed=0):
    x = np.random.RandomState(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    coat_model.set_train(False)
    ours = coat_model(ms.Tensor(x)).asnumpy()
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    return float(np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture
def convert_spy(monkeypatch):
    """Records every call of the real conversion (pretrained._convert), which still runs."""
    calls = []
    real = pretrained._convert

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrained, "_convert", spy)
    return calls


def converts_and_reproduces(hub, convert_spy, variant, filename, writer, reference, revision):
    """Place timm's file in the hub cache; pretrained=True converts it once and reproduces timm's logits."""
    place_in_hub(hub, variant, filename, writer, reference, revision)
    model = coat_ms.create_model(variant, pretrained=True)
    assert convert_spy == [variant]
    assert logits_rel(model, reference) <= 2e-5
    return model


def test_first_use_converts_then_the_cache_is_reused_until_the_source_changes(caches, convert_spy, caplog):
    hub, home = caches
    first = timm_model("coat_lite_tiny", seed=0)
    model = converts_and_reproduces(hub, convert_spy, "coat_lite_tiny", "model.safetensors", write_one_name_per_tie,
                                    first, "rev1")
    ckpt, sidecar = home / "coat_lite_tiny.in1k.ckpt", home / "coat_lite_tiny.in1k.ckpt.json"
    meta = json.loads(sidecar.read_text())
    source = hub / "models--timm--coat_lite_tiny.in1k" / "snapshots" / "rev1" / "model.safetensors"
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["ckpt_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["verify_rel_error"] <= 2e-5
    stamp = (ckpt.stat().st_mtime_ns, sidecar.stat().st_mtime_ns)

    again = coat_ms.create_model(model_name="coat_lite_tiny", pretrained=True)   # mindcv's keyword
    assert convert_spy == ["coat_lite_tiny"]                                   # not converted again
    assert (ckpt.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == stamp
    for name, p in model.parameters_dict().items():
        np.testing.assert_array_equal(again.parameters_dict()[name].asnumpy(), p.asnumpy())

    from coat_ms import mindcv_compat  # noqa: F401  (registers coat_ms_* with mindcv: the same path)
    from mindcv.models import create_model as mindcv_create_model
    via_mindcv = mindcv_create_model("coat_ms_lite_tiny", pretrained=True)
    assert convert_spy == ["coat_lite_tiny"]
    np.testing.assert_array_equal(via_mindcv.parameters_dict()["head.weight"].asnumpy(),
                                  model.parameters_dict()["head.weight"].asnumpy())

    caplog.set_level(logging.INFO, logger="coat_ms")
    six = coat_ms.create_model("coat_lite_tiny", pretrained=True, num_classes=6)
    assert convert_spy == ["coat_lite_tiny"]
    assert "the classifier for num_classes=6 is freshly initialised" in caplog.text
    assert tuple(six.head.weight.shape) == (6, 320)
    for name, p in six.parameters_dict().items():
        if not name.startswith("head."):
            np.testing.assert_array_equal(p.asnumpy(), model.parameters_dict()[name].asnumpy())

    second = timm_model("coat_lite_tiny", seed=1)  # the hub's main revision moves on: other weights, timm's .bin
    place_in_hub(hub, "coat_lite_tiny", "pytorch_model.bin", write_timm_bin, second, "rev2")
    updated = coat_ms.create_model("coat_lite_tiny", pretrained=True)
    assert convert_spy == ["coat_lite_tiny"] * 2
    assert "the source file changed since it was converted" in caplog.text
    assert logits_rel(updated, second) <= 2e-5

    data = bytearray(ckpt.read_bytes())      # a damaged cache file is converted again, never loaded
    data[-100] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    repaired = coat_ms.create_model("coat_lite_tiny", pretrained=True)
    assert convert_spy == ["coat_lite_tiny"] * 3
    assert "does not match the sha256 in its sidecar" in caplog.text
    assert json.loads(sidecar.read_text())["ckpt_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    for name, p in updated.parameters_dict().items():
        np.testing.assert_array_equal(repaired.parameters_dict()[name].asnumpy(), p.asnumpy())

    shutil.rmtree(hub / "models--timm--coat_lite_tiny.in1k")  # source gone: the intact cache still serves, offline
    kept = coat_ms.create_model("coat_lite_tiny", pretrained=True)
    assert convert_spy == ["coat_lite_tiny"] * 3
    np.testing.assert_array_equal(kept.parameters_dict()["head.weight"].asnumpy(),
                                  updated.parameters_dict()["head.weight"].asnumpy())
    ckpt.write_bytes(bytes(data))                             # ... but a damaged one is not loaded
    with pytest.raises(CoatError, match="no pretrained weights for coat_lite_tiny"):
        coat_ms.create_model("coat_lite_tiny", pretrained=True)


@pytest.mark.studies
def test_timm_bin_of_coat_tiny_reproduces_timm(caches, convert_spy):
    hub, _ = caches
    converts_and_reproduces(hub, convert_spy, "coat_tiny", "pytorch_model.bin", write_timm_bin,
                            timm_model("coat_tiny", seed=2), "abc")


def test_files_the_tool_did_not_write_are_left_alone(caches, convert_spy):
    hub, home = caches
    place_in_hub(hub, "coat_lite_tiny", "model.safetensors", write_full_safetensors,
                 timm_model("coat_lite_tiny", seed=4), "r")
    home.mkdir(parents=True)
    theirs = home / "coat_lite_tiny.in1k.ckpt"
    theirs.write_bytes(b"someone else's file")
    with pytest.raises(CoatError, match="was not written by coat_ms") as info:
        coat_ms.create_model("coat_lite_tiny", pretrained=True)
    assert "\n" not in str(info.value)
    assert theirs.read_bytes() == b"someone else's file"
    assert sorted(os.listdir(home)) == ["coat_lite_tiny.in1k.ckpt"]
    assert convert_spy == []


def test_offline_and_not_cached_is_one_line_naming_repo_file_and_place(caches):
    hub, home = caches
    start = time.perf_counter()
    with pytest.raises(CoatError) as info:
        coat_ms.create_model("coat_lite_mini", pretrained=True)
    message = str(info.value)
    assert time.perf_counter() - start < 5
    assert "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "https://huggingface.co/timm/coat_lite_mini.in1k" in message
    assert str(hub / "models--timm--coat_lite_mini.in1k" / "snapshots" / "main" / "model.safetensors") in message
    assert "python -m convert --src X.pth --out X.ckpt" in message
    assert not home.exists() or os.listdir(home) == []


def test_no_network_without_offline_flag_fails_within_the_timeout(caches, monkeypatch):
    """The hub address answers nothing: a listening socket that never accepts (its backlog full)."""
    import socket
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    try:
        start = time.perf_counter()
        with pytest.raises(CoatError, match=r"no pretrained weights for coat_lite_mini: .*within 1 s") as info:
            coat_ms.create_model("coat_lite_mini", pretrained=True)
        assert time.perf_counter() - start < 10
        assert "\n" not in str(info.value)
        monkeypatch.setenv("HF_ENDPOINT", "http://no-such-host.invalid")  # and a name that does not resolve
        with pytest.raises(CoatError, match="not reachable"):
            coat_ms.create_model("coat_lite_mini", pretrained=True)
        assert time.perf_counter() - start < 15
    finally:
        silent.close()


def test_unsupported_requests_are_clear_errors(caches):
    with pytest.raises(CoatError, match="take 3 input channels, not in_channels=1"):
        coat_ms.create_model("coat_lite_tiny", pretrained=True, in_channels=1)
    with pytest.raises(CoatError, match="not both"):
        coat_ms.create_model("coat_lite_tiny", pretrained=True, checkpoint_path="x.ckpt")
    with pytest.raises(CoatError, match="pretrained must be True or False"):
        coat_ms.create_model("coat_lite_tiny", pretrained="yes")
    assert coat_ms.get_pretrained_cfg("coat_lite_mini")["hf_hub_id"] == "timm/coat_lite_mini.in1k"


def python_blocks(markdown):
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


@pytest.mark.artefacts
def test_the_documented_examples_run(caches, tmp_path, convert_spy):
    """Every Python block of docs/pretrained.md, as written, but for the marked data size.

    Then, in this process, the cache the documented code left is reused and matches timm's logits.
    """
    hub, home = caches
    reference = timm_model("coat_lite_mini", seed=5)
    place_in_hub(hub, "coat_lite_mini", "model.safetensors", write_full_safetensors, reference, "r")
    blocks = python_blocks(open(DOC, encoding="utf-8").read())
    assert len(blocks) >= 2
    data_size = re.compile(r"^IMAGE_SIZE, BATCH_SIZE, STEPS = .*# data size$", re.M)
    assert sum(len(data_size.findall(b)) for b in blocks) == 1
    blocks = [data_size.sub("IMAGE_SIZE, BATCH_SIZE, STEPS = 32, 2, 2  # data size", b) for b in blocks]
    runner = ("import sys, json\n"
              "for i, code in enumerate(json.load(open(sys.argv[1]))):\n"
              "    exec(compile(code, f'docs/pretrained.md block {i}', 'exec'), {'__name__': '__main__'})\n"
              "    print(f'block {i} ok', flush=True)\n")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    proc = subprocess.run([sys.executable, "-c", runner, str(tmp_path / "blocks.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for i in range(len(blocks)):
        assert f"block {i} ok" in proc.stdout
    assert "reloaded: same logits" in proc.stdout
    assert re.search(r"step 1: loss \d", proc.stdout)
    assert (tmp_path / "coat_lite_mini_6cls.ckpt").is_file()
    assert sorted(os.listdir(home)) == ["coat_lite_mini.in1k.ckpt", "coat_lite_mini.in1k.ckpt.json"]
    model = coat_ms.create_model("coat_lite_mini", pretrained=True)
    assert convert_spy == []      # converted once, by the documented code in the other process
    assert logits_rel(model, reference) <= 2e-5


@pytest.mark.artefacts
def test_two_processes_converting_at_once_leave_a_valid_cache(caches):
    """Both first calls convert and write; atomic replaces leave a pair that loads, and no temp files."""
    hub, home = caches
    reference = timm_model("coat_lite_tiny", seed=6)
    place_in_hub(hub, "coat_lite_tiny", "model.safetensors", write_full_safetensors, reference, "r")
    code = "import coat_ms; coat_ms.create_model('coat_lite_tiny', pretrained=True); print('loaded')"
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(os.listdir(home)) == ["coat_lite_tiny.in1k.ckpt", "coat_lite_tiny.in1k.ckpt.json"]
    model = coat_ms.create_model("coat_lite_tiny", pretrained=True)
    assert logits_rel(model, reference) <= 2e-5


def test_download_lands_in_the_hub_cache_layout(caches, monkeypatch):
    """Online path through the real huggingface_hub client, against a local server speaking the hub's file protocol.

    The repository has only pytorch_model.bin: model.safetensors is asked first (404), then the .bin
    is fetched into the hub cache, where the next lookup finds it without network.
    """
    import http.server
    import threading
    hub, _ = caches
    payload = os.urandom(4096)
    digest = hashlib.sha256(payload).hexdigest()
    requested = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _headers(self):
            requested.append((self.command, self.path))
            if not self.path.endswith("/timm/coat_lite_tiny.in1k/resolve/main/pytorch_model.bin"):
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            self.send_response(200)
            for key, value in (("X-Repo-Commit", "c" * 40), ("ETag", f'"{digest}"'), ("X-Linked-Etag", f'"{digest}"'),
                               ("X-Linked-Size", str(len(payload))), ("Content-Length", str(len(payload)))):
                self.send_header(key, value)
            self.end_headers()
            return True

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            if self._headers():
                self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert pretrained.find_source("coat_lite_tiny") is None
        path, reason = pretrained.download(pretrained.hub_id("coat_lite_tiny"), pretrained.SOURCE_FILES)
        assert reason is None
        assert ("HEAD", "/timm/coat_lite_tiny.in1k/resolve/main/model.safetensors") in requested
        expected = hub / "models--timm--coat_lite_tiny.in1k" / "snapshots" / ("c" * 40) / "pytorch_model.bin"
        assert os.path.realpath(path) == os.path.realpath(expected)
        assert (hub / "models--timm--coat_lite_tiny.in1k" / "refs" / "main").read_text() == "c" * 40
        assert open(pretrained.find_source("coat_lite_tiny"), "rb").read() == payload
        path, reason = pretrained.download("timm/coat_mini.in1k", pretrained.SOURCE_FILES)
        assert path is None and "has none of model.safetensors, pytorch_model.bin" in reason
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.artefacts
def test_train_py_fine_tunes_from_the_hub_weights(caches, tmp_path):
    """train.py --pretrained True: timm's weights (from the hub cache) under a fresh 2-class head."""
    from helpers import run_script, small_imagefolder
    hub, home = caches
    place_in_hub(hub, "coat_lite_tiny", "model.safetensors", write_full_safetensors, timm_model("coat_lite_tiny", 8), "r")
    data = small_imagefolder(tmp_path / "d", classes=(0, 1), per_class=4, image_size=32, fmt="png")
    proc = run_script("train.py", "--pretrained", "True", "--model", "coat_lite_tiny", "--data_dir", data,
                      "--image_resize", 32, "--batch_size", 8, "--epoch_size", 1, "--val_while_train", "False",
                      "--device_target", "CPU", "--num_parallel_workers", 1, "--ckpt_save_dir", tmp_path / "run",
                      cwd=tmp_path, env=dict(os.environ, GLOG_v="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backbone loaded" in proc.stderr and "num_classes=2 is freshly initialised" in proc.stderr
    assert sorted(os.listdir(home)) == ["coat_lite_tiny.in1k.ckpt", "coat_lite_tiny.in1k.ckpt.json"]
    # timm's weights are fine-tuned with PIL's kernel and validated as timm evaluates; the run records it
    assert "preprocessing: timm style (the starting weights are timm's" in proc.stderr
    from coat_ms.checkpoint import read_checkpoint_and_meta
    assert read_checkpoint_and_meta(str(tmp_path / "run" / "latest.ckpt"))[1]["preprocessing"]["style"] == "timm"
