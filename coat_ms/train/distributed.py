"""Data-parallel start-up for single process, msrun and mpirun (CPU included).

msrun sets MindSpore's dynamic-cluster variables (MS_ROLE, MS_NODE_ID, MS_WORKER_NUM, MS_SCHED_*)
itself.  MindSpore's CPU backend does not understand OpenMPI's launch, so under ``mpirun`` on CPU we
map OMPI_COMM_WORLD_RANK/SIZE onto the same dynamic cluster: every rank becomes a worker and rank 0
also starts the scheduler process (with the OpenMPI/PMIx variables removed, so it is not mistaken for
an MPI rank).
"""
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zlib

from ..errors import CoatError

logger = logging.getLogger("coat_ms")


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    size: int = 1
    launcher: str = "single"

    @property
    def is_main(self):
        return self.rank == 0


_SCHEDULER = None
_MAPPED = None  # (host, port) of the scheduler under mpirun on CPU (map_mpirun_to_dynamic_cluster)


def _mpi_rank_size():
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK"))
    size = os.environ.get("OMPI_COMM_WORLD_SIZE")
    if rank is None or size is None:
        return None
    return int(rank), int(size)


def _sched_port():
    """One port per mpirun job, the same on every rank (derived from the job's PMIx namespace)."""
    if os.environ.get("MS_SCHED_PORT"):
        port = os.environ["MS_SCHED_PORT"].strip()
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise LaunchError(f"MS_SCHED_PORT={port!r} is not a port number (1..65535): fix or unset it")
        return int(port)
    job = os.environ.get("PMIX_NAMESPACE", os.environ.get("OMPI_MCA_ess_base_jobid", "coat"))
    return 20000 + zlib.crc32(job.encode()) % 20000


def _start_scheduler(size, host, port):
    """Rank 0 starts MindSpore's scheduler: a plain process that joins the cluster as MS_SCHED."""
    global _SCHEDULER
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "OPAL_", "PRTE_"))}
    log_path = os.environ.get("COAT_SCHED_LOG")  # where its output goes (node timeouts, lost workers): warnings up
    level = env.get("GLOG_v", "3")
    env.update(MS_ROLE="MS_SCHED", MS_WORKER_NUM=str(size), MS_SCHED_HOST=host, MS_SCHED_PORT=str(port),
               GLOG_v=str(min(int(level) if level.isdigit() else 3, 2)) if log_path else level)
    code = "from mindspore.communication import init; init()"
    log = open(log_path or os.devnull, "ab")
    # Not waited for: rank 0 stops it after the last collective (stop_own_scheduler), or it exits after
    # MindSpore's own timeout when a worker died.
    _SCHEDULER = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)


def map_mpirun_to_dynamic_cluster(device_target):
    """Under mpirun on CPU, set MS_ROLE & co. from OpenMPI's variables; returns True if it did."""
    mpi = _mpi_rank_size()
    if mpi is None or os.environ.get("MS_ROLE") or device_target not in (None, "CPU"):
        return False
    rank, size = mpi
    host = os.environ.get("MS_SCHED_HOST", "127.0.0.1")
    port = _sched_port()
    os.environ.update(MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), MS_WORKER_NUM=str(size),
                      MS_SCHED_HOST=host, MS_SCHED_PORT=str(port))
    if rank == 0:
        _start_scheduler(size, host, port)
    _wait_for_port(host, port)
    global _MAPPED
    _MAPPED = (host, port)
    return True


def stop_own_scheduler():
    """Under mpirun on CPU, after shutdown_distributed: leave without MindSpore's exit handlers (returns True;
    False when another launcher owns the cluster).  Those handlers crashed a finished rank with SIGSEGV once
    float16 (amp) graphs had run on CPU (MindSpore 2.10), and nothing is left for them to do.

    Rank 0 leaves last: it was the root of the last collective, whose final send must be acknowledged before
    the other ranks go, so the others wait until it has stopped the scheduler it started."""
    if not _MAPPED:
        return False
    # The scheduler going makes MindSpore signal the ranks still here; they are done and exit next.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    if _SCHEDULER is not None:
        _SCHEDULER.terminate()
        try:
            _SCHEDULER.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _SCHEDULER.kill()
    else:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(_MAPPED, timeout=1):
                    time.sleep(0.1)
            except OSError:
                break
    return True


def _wait_for_port(host, port, timeout=300):
    """Register only once the scheduler listens: a refused first attempt costs MindSpore ~20-60 s of back-off."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"MindSpore scheduler at {host}:{port} did not start within {timeout} s")


def launcher_present():
    """True when a launcher (mpirun, msrun, an Ascend rank table) started this process."""
    return bool(os.environ.get("MS_ROLE") or _mpi_rank_size() or os.environ.get("RANK_TABLE_FILE")
                or os.environ.get("RANK_ID"))


class LaunchError(CoatError):
    """--distribute without a launcher."""


def init_distributed(distribute, device_target=None):
    """Join the cluster when asked (or when a launcher started us); set data-parallel gradient averaging."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if not distribute:
        return DistInfo()
    if not launcher_present():
        raise LaunchError("--distribute needs a launcher that starts the ranks: mpirun -n N python train.py ... "
                          "or msrun --worker_num N --local_worker_num N train.py ... (or drop --distribute)")
    launcher = "mpirun" if _mpi_rank_size() else ("msrun" if os.environ.get("MS_ROLE") else "rank_table")
    if map_mpirun_to_dynamic_cluster(device_target):
        launcher = "mpirun (mapped onto MindSpore's dynamic cluster)"
    init()
    rank, size = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    # gradients_mean: the reducer averages, so N ranks x B/N samples == one process x B samples.
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=size)
    return DistInfo(rank=rank, size=size, launcher=launcher)


def shutdown_distributed(info):
    """Leave the cluster together: a last collective, so no rank exits while another still needs it.

    Under msrun the process must then exit through the interpreter (coat_ms.cli.run_cli does for cluster
    workers): MindSpore unregisters in its exit handlers.  Under mpirun on CPU rank 0 stops the scheduler
    it started instead (stop_own_scheduler).
    """
    if info.size > 1:
        import numpy as np
        import mindspore as ms
        from mindspore import ops
        ops.AllReduce()(ms.Tensor(np.zeros(1, np.float32))).asnumpy()


def all_reduce_sum(array):
    """Element-wise sum of a float32 numpy array over all ranks (every rank gets the result)."""
    import numpy as np
    import mindspore as ms
    from mindspore import ops
    return ops.AllReduce()(ms.Tensor(np.ascontiguousarray(array, dtype=np.float32))).asnumpy()
