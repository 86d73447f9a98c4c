"""What the CLI tests share: running the repository's scripts as a user does, and small real datasets."""
import os
import subprocess
import sys

from coat_ms.datasets.digits import write_digits_imagefolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# PYTHONPATH: the CLIs run as a user runs them import this checkout (not whichever one is installed)
ENV = dict(os.environ, GLOG_v="3", PATH=BIN + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=ROOT)
TINY_ARCH = '{"embed_dims": [16, 16, 16, 16], "serial_depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}'


def run_script(script, *args, cwd=ROOT, timeout=900, env=None, **kwargs):
    """Run ``python <repo>/<script> args`` (or ``-m module`` when script starts with '-m ')."""
    cmd = [sys.executable, *script.split()] if script.startswith("-m ") else [sys.executable, os.path.join(ROOT, script)]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env or ENV, **kwargs)


def one_error_line(proc, code=2):
    """The single ``error:`` line of a failed CLI run (asserting there is exactly one and no traceback)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def refused(main, *argv):
    """The one-line error a CLI's ``main(argv)`` stops with, in-process: the CoatError that run_cli prints as
    ``error: <message>`` with exit code 2 (each CLI's exit-code contract is checked once as a subprocess).
    Use with the ``in_process_cli`` fixture."""
    import pytest

    from coat_ms.cli import error_message
    from coat_ms.errors import CoatError
    with pytest.raises((CoatError, OSError)) as info:
        main([str(a) for a in argv])
    message = error_message(info.value)
    assert message is not None and "\n" not in message, message
    return message


def small_imagefolder(root, classes=(0, 1), per_class=16, image_size=64, fmt="jpg"):
    """A small real ImageFolder (scikit-learn's digits) with train/ and val/; returns its path."""
    write_digits_imagefolder(str(root), image_size=image_size, classes=classes, per_class=per_class, fmt=fmt)
    return str(root)


def metrics_line(stdout, prefix="validation"):
    """The metrics dict a CLI printed ({'Top_1_Accuracy': ..., ...})."""
    import ast
    for line in stdout.splitlines():
        if "{'Top_1_Accuracy'" in line and line.startswith(prefix):
            return ast.literal_eval(line[line.index("{"):])
    raise AssertionError(f"no metrics line starting with {prefix!r} in:\n{stdout[-2000:]}")


def release_models(cache):
    """Module teardown for a module-level cache of full-size models: their compiled graphs hold gigabytes,
    which the rest of a ``-m slow`` session must not carry."""
    import gc

    from coat_ms.runtime import release_freed_host_memory
    cache.clear()
    gc.collect()
    release_freed_host_memory()
