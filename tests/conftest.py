"""Shared fixtures: MindSpore execution mode and a per-session cache of built models."""
import mindspore as ms
import numpy as np
import pytest


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def pynative_mode():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


@pytest.fixture
def in_process_cli(tmp_path, monkeypatch):
    """For CLIs called in-process (``main(argv)``): they select the device, the graph mode and signal handlers
    and write relative to the working directory, so they run in tmp_path and the rest is put back."""
    import signal
    monkeypatch.chdir(tmp_path)
    mode = ms.get_context("mode")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    ms.set_context(mode=mode)
    for s, h in handlers.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(wakeup)


@pytest.fixture
def run_in_process(capsys, caplog, in_process_cli):
    """A CLI's ``main(argv)`` run to its end in this process: ``run(main, *args)`` returns (exit code, what it
    printed, its stderr and log). Each CLI's exit-code contract is checked once as a subprocess."""
    import logging
    caplog.set_level(logging.INFO, logger="coat_ms")

    def run(main, *args):
        capsys.readouterr()
        caplog.clear()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err + caplog.text
    return run


def random_images(shape, seed=0):
    return ms.Tensor(np.random.RandomState(seed).rand(*shape).astype(np.float32))


def pytest_terminal_summary(terminalreporter):
    """The recipe smoke runs' wall times (README's Recipes table is filled from this output), read from the
    tests' reports (``record_property("recipe_seconds", ...)``), so that pytest-xdist workers' runs count too."""
    times = {report.nodeid.split("[", 1)[-1].rstrip("]"): value
             for report in terminalreporter.stats.get("passed", []) if report.when == "call"
             for name, value in report.user_properties if name == "recipe_seconds"}
    if times:
        terminalreporter.write_sep("-", "recipe smoke runs (one epoch on CPU, train.py wall time)")
        for name, seconds in sorted(times.items()):
            terminalreporter.write_line(f"{name}: {seconds:.0f} s")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One short train.py run shared by the validate / predict / fine-tuning tests: a narrow CoaT-Lite on
    the digits at 32x32 (crop_pct 1.0, bilinear), EMA on, written with --output_dir (the seed docs' alias).

    Returns (data_dir, run_dir, completed process)."""
    from coat_ms.datasets.digits import write_digits_imagefolder
    from helpers import TINY_ARCH, run_script

    root = tmp_path_factory.mktemp("trained_run")
    data = root / "digits"
    write_digits_imagefolder(str(data), image_size=32)
    run = root / "run"
    proc = run_script("train.py", "--data_dir", data, "--model", "coat_lite_tiny", "--model_args", TINY_ARCH,
                      "--num_classes", 10, "--image_resize", 32, "--crop_pct", 1.0, "--interpolation", "bilinear",
                      "--batch_size", 32, "--num_samples", 256, "--epoch_size", 1, "--lr", 0.002, "--ema",
                      "--ema_decay", 0.9, "--device_target", "CPU", "--num_parallel_workers", 1,
                      "--output_dir", run, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, run, proc
