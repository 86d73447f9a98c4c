"""Run train.py as a crash test needs it: the process SIGKILLs itself in the middle of saving epoch N's
latest.ckpt (temp file written and fsynced, not yet renamed; no cleanup runs, as with a scheduler's kill).

    python tests/crash_during_save.py N <train.py arguments>

A test-only wrapper: it patches coat_ms's run-folder writer in this process, then runs train.py.
"""
import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arm(epoch):
    from coat_ms.train import run_folder

    save, write = run_folder.atomic_save, run_folder.atomic_write
    armed = []

    def atomic_save(entries, path, meta=None, epoch=None, **kwargs):
        armed[:] = [epoch == kill_at]
        try:
            return save(entries, path, meta, epoch, **kwargs)
        finally:
            armed.clear()

    def atomic_write(path, write_fn, **kwargs):
        if not armed or not armed[0]:
            return write(path, write_fn, **kwargs)

        def write_then_die(tmp):
            write_fn(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return write(path, write_then_die, **kwargs)

    kill_at = epoch
    run_folder.atomic_save, run_folder.atomic_write = atomic_save, atomic_write


if __name__ == "__main__":
    arm(int(sys.argv[1]))
    sys.argv = [os.path.join(ROOT, "train.py")] + sys.argv[2:]
    sys.path.insert(0, ROOT)
    runpy.run_path(sys.argv[0], run_name="__main__")
