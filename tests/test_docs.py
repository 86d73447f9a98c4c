"""What the README and docs/ show must work as shown.

* Every ```python block runs as written, each in a fresh process (docs/pretrained.md's blocks run in
  tests/test_pretrained.py, with a hub cache of timm-written files; the README's pretrained block gets
  the same here).
* Every command in a ```bash block is known to tests/test_doc_commands.py, which runs each of them as
  shipped (placeholders such as X.ckpt or /path/to/imagenet replaced by real files, overrides only for
  data size and device): a command added to the docs without a runner fails here.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import ENV, ROOT

DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                              if f.endswith(".md"))


def blocks(path, language):
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def documented_commands():
    """(file, command) for every command line of every bash block (continuations joined, comments dropped)."""
    out = []
    for path in DOCS:
        for block in blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    out.append((path, re.sub(r"\s+", " ", command)))
    return out


# The README's first snippet in every run, the other documented snippets in the artefacts tier.
SNIPPETS = [pytest.param(path, i, code, id=f"{path}[{i}]",
                         marks=() if (path, i) == ("README.md", 0) else pytest.mark.artefacts)
            for path in DOCS if path != os.path.join("docs", "pretrained.md")
            for i, code in enumerate(blocks(path, "python"))]


@pytest.fixture
def hub_with_coat_lite_mini(tmp_path):
    """A Hugging Face cache holding timm's coat_lite_mini file (random weights written by timm)."""
    from test_pretrained import place_in_hub, timm_model, write_full_safetensors
    hub = tmp_path / "hub"
    hub.mkdir()
    place_in_hub(hub, "coat_lite_mini", "model.safetensors", write_full_safetensors, timm_model("coat_lite_mini", 1), "r")
    return hub


@pytest.mark.parametrize("path,index,code", SNIPPETS)
def test_python_snippet_runs_as_written(path, index, code, tmp_path, request):
    env = dict(ENV, PYTHONPATH=ROOT, COAT_MS_HOME=str(tmp_path / "coat_ms_home"), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"))
    if "pretrained=True" in code:
        env["HF_HUB_CACHE"] = str(request.getfixturevalue("hub_with_coat_lite_mini"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, f"{path} block {index}:\n{code}\n{proc.stderr[-3000:]}"


def test_every_documented_command_has_a_runner():
    from test_doc_commands import RUNNERS
    missing = [(path, cmd) for path, cmd in documented_commands() if not any(re.search(p, cmd) for p in RUNNERS)]
    assert not missing, "documented commands no test runs:\n" + json.dumps(missing, indent=1)
    assert len(documented_commands()) > 20
