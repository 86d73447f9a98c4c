"""The C++ kernels' OpenMP runtime (the system libgomp): how long its idle worker spins, which calls use it.

libgomp lets an idle worker thread spin 300,000 rounds (milliseconds) before it sleeps. Between the
kernels of a graph that spinning takes a core from MindSpore's own operators. coat_ms therefore

* caps the spin at 1,000 rounds (``GOMP_SPINCOUNT=1000``) when the package is imported, if libgomp
  is not loaded yet (``import mindspore`` loads it; libgomp reads the setting once, when it loads) and
  the user has not chosen a spin count or wait policy; and
* runs small kernel calls on the calling thread (waking the sleeping worker costs more than a small
  call's work on the 2-core VMs measured here), but only where the spin is capped: with libgomp's default spin,
  that mix made coat_tiny's batch-1 forward 2x slower (166-200 ms against 92 with every call split),
  so there every call is split across threads as before. The choice is handed to the kernels as
  ``COAT_MS_KERNEL_PARALLEL_WORK`` (the work above which a call is split; 0 = always), read once by
  each kernel library (fastmath.h); a value the user set is kept.

Importing coat_ms therefore changes one thing in the process and its children: any library that loads
an OpenMP runtime reading GOMP_SPINCOUNT afterwards (PyTorch's bundled libgomp included) gets the cap
too. Set GOMP_SPINCOUNT yourself to choose otherwise. ``python benchmarks/openmp_spin.py`` measures the
spin settings.
"""
import os

SPIN_ENV, SPIN_CAP = "GOMP_SPINCOUNT", 1000
WAIT_ENV = "OMP_WAIT_POLICY"
PARALLEL_WORK_ENV = "COAT_MS_KERNEL_PARALLEL_WORK"

MARK_ENV = "COAT_MS_CAPPED_GOMP_SPINCOUNT"  # set with the cap: the value is coat_ms's, not the user's

capped_here = False  # whether GOMP_SPINCOUNT in this process is coat_ms's cap (set here or by a coat_ms parent)


def libgomp_loaded():
    """Whether this process has loaded libgomp (unknown outside Linux: assumed loaded)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return True


def cap_spinning():
    """Set GOMP_SPINCOUNT=1000 if libgomp has not loaded and the user chose no spin count or wait policy.

    A child process inherits the cap with its mark, so it still knows the value is coat_ms's."""
    global capped_here
    if os.environ.get(MARK_ENV) == "1" and os.environ.get(SPIN_ENV) == str(SPIN_CAP):
        capped_here = True
    elif SPIN_ENV not in os.environ and WAIT_ENV not in os.environ and not libgomp_loaded():
        os.environ[SPIN_ENV] = str(SPIN_CAP)
        os.environ[MARK_ENV] = "1"
        capped_here = True


def uncap_spinning():
    """Undo ``cap_spinning`` in this process, before libgomp loads: for a process that should start as the
    user's shell would (the benchmark's timm, ONNX Runtime and mindcv workers: PyTorch's bundled libgomp
    reads GOMP_SPINCOUNT too, and its operators slowed down with the cap)."""
    global capped_here
    if capped_here:
        os.environ.pop(SPIN_ENV, None)
        os.environ.pop(MARK_ENV, None)
        capped_here = False


def spinning_is_capped():
    """Whether the idle worker sleeps soon: a passive wait policy or a spin count of at most 10x the cap
    (10000 measured as fast as 1000 with small calls on the calling thread: benchmarks/openmp_spin.py)."""
    if os.environ.get(WAIT_ENV, "").strip().lower() == "passive":
        return True
    try:
        return int(os.environ.get(SPIN_ENV, "")) <= 10 * SPIN_CAP
    except ValueError:
        return False


def choose_kernel_threading():
    """Before the first kernel call: every call split across threads unless the spin is capped."""
    if PARALLEL_WORK_ENV not in os.environ and not spinning_is_capped():
        os.environ[PARALLEL_WORK_ENV] = "0"
