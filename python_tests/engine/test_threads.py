"""The CPU engine's threads: J bitwise the same for any thread count, the documented
default (``genni_ext.engine.fused.cpu_threads``), one reused pool of workers, concurrent calls
from several Python threads, and a child process made by fork().

The engine's workers are named ``genni-cpu`` (csrc/cpu/thread_pool.h); on Linux the tests
count them and read their CPU time in /proc to see that they exist and did work.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext.core.models import TwoNeuronNet, mlp
from genni_ext.engine.fused import FirstLayer, cpu_threads, fused_sweep
from genni_ext.engine.lowering import lower

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]

WORKER_NAME = "genni-cpu"
THREAD_COUNTS = (1, 2, 3, 5, 8)
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="reads the engine's threads from /proc (Linux)"
)


def _workers() -> list[Path]:
    """The /proc task folders of this process's engine workers."""
    tasks = Path("/proc/self/task").iterdir()
    return [task for task in tasks if (task / "comm").read_text().strip() == WORKER_NAME]


def _worker_cpu_ns() -> int:
    """CPU time (ns) the engine's workers have run so far, from the scheduler's own count
    (/proc/.../schedstat); the clock-tick counts in /proc/.../stat miss short runs."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in _workers())


def _engine(case: Case, num_threads: int | None, first_layer: FirstLayer = "auto") -> torch.Tensor:
    model, center, directions, coeffs, inputs, targets = case
    return fused_sweep(
        lower(model, inputs.shape[1:]), center, directions, coeffs, inputs, targets,
        num_threads=num_threads, batch_points=None, progress=False, first_layer=first_layer,
    )  # fmt: skip


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)
    )


# (model, input shape, probes, grid points, first layer): the three steps of the driver
# (transposing the probes, the affine first layer, the grid points) with many items each,
# grid points on both sides of 64 (below it the probes are split into groups), and enough
# work that the workers join (a step shorter than the pool's wake delay runs on the caller).
CASES = {
    "two-neuron, 120 points": (TwoNeuronNet, (1,), 16384, 120, "auto"),
    "two-neuron, 5 points": (TwoNeuronNet, (1,), 65536, 5, "auto"),
    "mlp affine, 80 points": (lambda: mlp([64, 48, 3]), (64,), 2000, 80, "affine"),
    "mlp direct, 9 points": (lambda: mlp([64, 48, 3]), (64,), 3000, 9, "direct"),
    "conv, 70 points": (_conv_net, (1, 8, 8), 3000, 70, "direct"),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CASES))
def test_bitwise_equal_for_any_thread_count(
    name: str, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    build, shape, probes, points, first_layer = CASES[name]
    torch.manual_seed(3)
    case = make_case(build(), shape, dtype=dtype, num_samples=probes, num_points=points)
    one, *others = (_engine(case, n, first_layer) for n in THREAD_COUNTS)
    for count, other in zip(THREAD_COUNTS[1:], others, strict=True):
        assert torch.equal(one, other), f"J with {count} threads differs from 1 thread's"
    check_j(one, genni_ext.sweep(*case, backend="torch"), case)


@linux_only
def test_workers_do_part_of_the_work(make_case: MakeCase) -> None:
    # Whether a worker is scheduled before the caller has taken every item is up to the
    # operating system, so the sweep is repeated (at most 20 times) until one has run.
    torch.manual_seed(3)
    case = make_case(TwoNeuronNet(), (1,), num_samples=16384, num_points=120)
    before = _worker_cpu_ns() if _workers() else 0
    for _ in range(20):
        _engine(case, 2)
        if _worker_cpu_ns() > before:
            return
    pytest.fail("in 20 sweeps with 2 threads the engine's workers ran for no time at all")


def test_cpu_threads_default_is_torchs_thread_count() -> None:
    previous = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            assert cpu_threads(None) == count
            assert cpu_threads(2) == 2
    finally:
        torch.set_num_threads(previous)


_POOL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    import genni_ext
    from genni_ext.core.models import TwoNeuronNet
    from genni_ext.testing import benchmark_problem


    def workers():
        tasks = Path("/proc/self/task").iterdir()
        return sum((task / "comm").read_text().strip() == "genni-cpu" for task in tasks)


    data = benchmark_problem(TwoNeuronNet, (1,), m=2, points_per_axis=2, bound=1.0, probes=600)
    tensors = (data.model, data.center, data.directions, data.coeffs, data.inputs, data.targets)
    counts = [workers()]
    for torch_threads, threads in ((3, None), (3, 1), (1, None), (1, 5), (3, None), (3, 2)):
        torch.set_num_threads(torch_threads)
        genni_ext.sweep(*tensors, backend="fused", num_threads=threads)
        counts.append(workers())
    print(" ".join(map(str, counts)))
    """
)


@pytest.mark.slow
@linux_only
def test_default_threads_and_one_pool_of_workers(tmp_path: Path) -> None:
    """In a fresh process: no worker before the first sweep; the default with torch's 3
    threads starts 2; num_threads=1, and the default with torch's 1 thread, add none;
    num_threads=5 starts 2 more; later calls reuse them."""
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # The last line: an editable install's rebuild check may print before it.
    assert done.stdout.splitlines()[-1].split() == ["0", "2", "2", "2", "4", "4", "4"]


def test_concurrent_calls_from_python_threads(make_case: MakeCase) -> None:
    """Sweeps from several Python threads at once (the engine releases the GIL): one runs
    on the pool, the others on their own thread, and every J is the single-thread one."""
    torch.manual_seed(4)
    case = make_case(TwoNeuronNet(), (1,), num_samples=8192, num_points=70)
    expected = _engine(case, 1)
    start = threading.Barrier(3)
    results: list[torch.Tensor] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.extend(_engine(case, 2) for _ in range(4))
        except BaseException as error:  # collected: an assert in a thread would be lost
            failures.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert len(results) == 12
    assert all(torch.equal(result, expected) for result in results)


@linux_only
def test_sweep_in_a_forked_child(make_case: MakeCase) -> None:
    """After the parent's workers exist, a child made by fork() (which has none of them)
    starts its own and computes the same J."""
    torch.manual_seed(5)
    case = make_case(TwoNeuronNet(), (1,), num_samples=16384, num_points=100)
    expected = _engine(case, 2)
    assert _workers(), "the parent has no engine workers to leave behind"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report J and its worker count, then leave at once
        status = 1
        try:
            os.close(read)
            values = _engine(case, 2)
            message = f"{len(_workers())} ".encode() + values.numpy().tobytes()
            os.write(write, len(message).to_bytes(8, "little") + message)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    try:
        received = _read_until_closed(read, timeout=120)
    finally:
        os.close(read)
    if received is None:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert received is not None, "the forked child did not finish its sweep in 120 s"
    assert os.waitstatus_to_exitcode(status) == 0
    length = int.from_bytes(received[:8], "little")
    workers, _, data = received[8 : 8 + length].partition(b" ")
    assert workers == b"1", f"the child has {workers.decode()} engine workers, not its own 1"
    assert torch.equal(torch.frombuffer(bytearray(data), dtype=torch.float64), expected)


def _read_until_closed(fd: int, timeout: float) -> bytes | None:
    """Everything written to the pipe ``fd`` until its writer closes it; None on timeout."""
    received = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return received
        received += chunk
