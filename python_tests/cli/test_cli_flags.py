"""Every flag acts or is refused with the reason, the same way in every command; numbers in
exponent form; inputs that used to crash (a huge seed, a non-UTF-8 config, an ASCII terminal,
probes that cannot fit, a closed pipe, a closed Dask client) give one clear line; Dask's logs
stay Dask's; explain_backend and sweep agree; every grid has chunks enough to resume.

Command-line cases run ``python -m genni_ext.cli`` in a subprocess on tiny problems.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from genni_ext import _validate, run_sweep
from genni_ext.cli.configure import raw_config
from genni_ext.cli.output import log_to_stderr
from genni_ext.cli.parser import build_parser
from genni_ext.cli.presets import DEMO_TWO_NEURON, demo_preset
from genni_ext.core.chunking import ChunkPlan
from genni_ext.core.functional import VMAP_UNSUPPORTED
from genni_ext.core.grid import Grid
from genni_ext.core.models import LeNet5, TwoNeuronNet
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine.front_door import explain_backend, sweep
from genni_ext.engine.lowering import lower
from genni_ext.errors import InputError
from genni_ext.run.plan import (
    FLOPS_PER_CHUNK,
    MAX_CHUNK_POINTS,
    MIN_CHUNK_POINTS,
    MIN_CHUNKS,
    auto_chunk_points,
)
from genni_ext.store import Experiment
from genni_ext.store.config import CONFIG_SCHEMA, build_problem, load_config_file, validate_config

TINY = {
    "experiment": "flags",
    "model": {"name": "two_neuron"},
    "seed": 10,
    "probes": {"num_probes": 256, "seed": 10},
    "search": {"starts": 6, "steps": 60, "lr": 0.05, "batch_size": 64, "seed": 11},
    "subspace": {"eps": 0.05, "m": 2},
    "grids": [{"name": "plane", "bound": [-1, 1], "n": 5}],
}


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "GENNI_HOME"}
    return {**env, **extra}


def _genni(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genni_ext.cli", *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _config(tmp_path: Path, text: str | None = None, **changes: object) -> Path:
    path = tmp_path / "run.yml"
    if text is not None:
        path.write_text(text)
    else:
        path.write_text(yaml.safe_dump({**TINY, **changes}, sort_keys=False))
    return path


def _one_line_error(done: subprocess.CompletedProcess[str], command: str, *parts: str) -> None:
    """Exit status 1 and one line on stderr, "genni COMMAND: error: ...", holding ``parts``."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"genni {command}: error: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with run.yml and a home in which its search has run."""
    folder = tmp_path_factory.mktemp("searched")
    _config(folder)
    done = _genni(folder, "search", "--config", "run.yml", "--home", "home", "--no-progress")
    assert done.returncode == 0, done.stderr
    return folder


# --- ε: --eps and --eps-relative ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["search", "sweep", "demo", "analyse"])
def test_eps_and_eps_relative_together_are_refused_in_every_command(
    command: str, tmp_path: Path
) -> None:
    args = [command, "--eps", "0.01", "--eps-relative", "0.05"]
    if command == "analyse":
        args.insert(1, "some_experiment")
    done = _genni(tmp_path, *args, "--home", "home")
    assert done.returncode == 2
    assert "argument --eps-relative: not allowed with argument --eps" in done.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_eps_given_twice_through_set_is_refused(tmp_path: Path) -> None:
    _config(tmp_path)
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home",
        "--set", "subspace.eps=0.01", "--eps-relative", "0.05",
    )  # fmt: skip
    _one_line_error(done, "search", "ε is given twice", "give one of them")
    assert not (tmp_path / "home").exists()


def _raw(*argv: str, base: dict | None = None) -> dict:
    return validate_config(raw_config(build_parser().parse_args(list(argv)), base))


def test_a_flag_for_eps_replaces_the_presets_relative_eps() -> None:
    """genni demo --eps: the flag wins over the preset's eps_relative (and the other way)."""
    preset, _title = demo_preset(None, paper=False, quick=False)
    assert preset["subspace"]["eps_relative"] is not None
    config = _raw("demo", "--eps", "0.01", base=preset)
    assert config["subspace"]["eps"] == 0.01 and config["subspace"]["eps_relative"] is None
    config = _raw("demo", "--set", "subspace.eps=2e-2", base=preset)
    assert config["subspace"]["eps"] == 0.02 and config["subspace"]["eps_relative"] is None
    absolute = {**DEMO_TWO_NEURON, "subspace": {"eps": 0.3, "m": 2}}
    config = _raw("demo", "--eps-relative", "0.1", base=absolute)
    assert config["subspace"]["eps_relative"] == 0.1 and config["subspace"]["eps"] == 0.0025


def test_a_config_file_eps_replaces_the_presets_relative_eps(tmp_path: Path) -> None:
    preset, _title = demo_preset(None, paper=False, quick=False)
    path = tmp_path / "mine.yml"
    path.write_text("subspace: {eps: 0.004}\n")
    config = _raw("demo", "--config", str(path), base=preset)
    assert config["subspace"]["eps"] == 0.004 and config["subspace"]["eps_relative"] is None
    path.write_text("subspace: {eps: 0.004, eps_relative: 0.2}\n")  # one file: relative wins
    config = _raw("demo", "--config", str(path), base=preset)
    assert config["subspace"]["eps_relative"] == 0.2


@pytest.mark.slow
def test_eps_flag_over_a_relative_eps_in_the_config_acts_in_search(tmp_path: Path) -> None:
    _config(tmp_path, subspace={"eps_relative": 0.05, "m": 2})
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home", "--no-progress",
        "--eps", "0.0123", "--steps", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(J < 0.0123)" in done.stdout
    saved = yaml.safe_load((tmp_path / "home/experiments/flags/config.yml").read_text())
    assert saved["subspace"]["eps"] == 0.0123 and saved["subspace"]["eps_relative"] is None


# --- --center -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_negative_center_is_refused(searched: Path) -> None:
    done = _genni(
        searched, "sweep", "--config", "run.yml", "--home", "home", "--center", "-1",
        "--no-progress",
    )  # fmt: skip
    _one_line_error(done, "sweep", "subspace.center", "index of a start", "got -1")
    assert not (searched / "home/experiments/flags/grids/plane").exists()


@pytest.mark.slow
def test_a_center_that_did_not_converge_is_refused(searched: Path) -> None:
    losses = Experiment("flags", searched / "home").load_search("search").losses
    worst = int(losses.argmax())
    eps = float(losses.sort().values[-2])  # the worst start's J is above ε
    assert float(losses[worst]) > eps
    done = _genni(
        searched, "sweep", "--config", "run.yml", "--home", "home", "--no-progress",
        "--center", str(worst), "--eps", repr(eps),
    )  # fmt: skip
    _one_line_error(done, "sweep", "subspace.center", f"start {worst} did not converge")
    assert not (searched / "home/experiments/flags/grids/plane").exists()
    saved = yaml.safe_load((searched / "home/experiments/flags/config.yml").read_text())
    assert saved["subspace"]["center"] is None  # config.yml is not rewritten


@pytest.mark.slow
def test_a_center_past_the_starts_is_refused(tmp_path: Path) -> None:
    _config(tmp_path)
    done = _genni(tmp_path, "search", "--config", "run.yml", "--home", "home", "--center", "6")
    _one_line_error(done, "search", "subspace.center", "the search has 6 starts")


# --- numbers --------------------------------------------------------------------------------

EXPONENT_FORM = """\
experiment: numbers
model: {name: mlp, sizes: [2, 8e0, 1]}
seed: 1e1
probes: {num_probes: 2.56e2, seed: 2e0}
search: {starts: 4e0, steps: 1e1, lr: 1e-3, batch_size: 6.4e1, momentum: 9e-1, tol: 1e-9,
         seed: 1e2, record_every: 5e0}
subspace: {eps: 5E-2, m: 2e0, center: 0e0}
grids: [{name: g, bound: [-1e0, +1e0], n: 3e0, dim: 2e0}]
num_threads: 1e0
chunk_points: 1e2
"""


def test_every_numeric_key_takes_exponent_form(tmp_path: Path) -> None:
    config = validate_config(load_config_file(_config(tmp_path, EXPONENT_FORM)))
    assert config["search"]["momentum"] == 0.9 and config["search"]["lr"] == 0.001
    assert (config["probes"]["num_probes"], config["probes"]["seed"]) == (256, 2)
    assert config["model"]["sizes"] == [2, 8, 1] and config["seed"] == 10
    assert config["grids"] == [{"name": "g", "bound": [-1.0, 1.0], "n": 3, "dim": 2}]
    assert (config["num_threads"], config["chunk_points"]) == (1, 100)
    assert config["subspace"] == {"eps": 0.05, "eps_relative": None, "m": 2, "center": 0}
    # A mapping read by a YAML 1.1 reader (strings "9e-1") gives the same config.
    assert validate_config(yaml.safe_load(EXPONENT_FORM)) == config


@pytest.mark.slow
def test_exponent_form_in_set_and_flags_is_a_number(tmp_path: Path) -> None:
    _config(tmp_path)
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home", "--no-progress",
        "--set", "search.momentum=9e-1", "--set", "search.lr=1e-3", "--steps", "2e1",
        "--num-probes", "1.28e2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "home/experiments/flags/config.yml").read_text())
    assert saved["search"]["momentum"] == 0.9 and saved["search"]["lr"] == 0.001
    assert saved["search"]["steps"] == 20 and saved["probes"]["num_probes"] == 128


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-probes", "1.5"], "argument --num-probes: expected an int (a whole number)"),
        (["--starts", "many"], "argument --starts: expected an int, got 'many'"),
    ],
)
def test_int_flags_refuse_what_is_not_a_whole_number(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = _genni(tmp_path, "search", "--experiment", "x", "--model", "two_neuron", *args)
    assert done.returncode == 2 and message in done.stderr


def test_whole_numbers_only_where_ints_are_expected() -> None:
    for key, value in (("starts", 2.5), ("steps", "1e-1"), ("seed", 1e300)):
        with pytest.raises(InputError, match=f"search.{key}': expected an int"):
            validate_config({**TINY, "search": {key: value}})


def test_the_schema_is_a_valid_config() -> None:
    validate_config(yaml.safe_load(CONFIG_SCHEMA))


# --- restart_collapsed ----------------------------------------------------------------------


def test_restart_keys_are_checked() -> None:
    search = validate_config(TINY)["search"]
    assert search["restart_collapsed"] is False and search["max_restarts"] == 3
    on = validate_config({**TINY, "search": {"restart_collapsed": True, "max_restarts": 0}})
    assert on["search"]["restart_collapsed"] is True and on["search"]["max_restarts"] == 0
    with pytest.raises(InputError, match=r"config key 'search\.restart_collapsed': expected"):
        validate_config({**TINY, "search": {"restart_collapsed": "yes"}})
    with pytest.raises(InputError, match=r"config key 'search\.max_restarts'"):
        validate_config({**TINY, "search": {"max_restarts": -1}})
    # The restarts' seeds (seed + 1 + k + starts (r + 1)) must not include θ's.
    clash = {**TINY, "seed": 20, "search": {"starts": 4, "seed": 11, "restart_collapsed": True}}
    with pytest.raises(InputError, match="starts and their restarts are initialised with seeds"):
        validate_config(clash)
    validate_config({**clash, "search": {**clash["search"], "restart_collapsed": False}})
    # ... nor pass torch's largest seed: 8 starts with 3 restarts each take 32 seeds.
    high = {"starts": 8, "seed": 2**64 - 20, "restart_collapsed": True}
    with pytest.raises(InputError, match=r"with 32 seeds search\.seed must be at most"):
        validate_config({**TINY, "seed": 0, "search": high})
    validate_config({**TINY, "seed": 0, "search": {**high, "restart_collapsed": False}})
    # The default demo restarts collapsed starts (at most 5 each); --paper runs Algorithm 1.
    demo = validate_config(demo_preset(None, paper=False, quick=False)[0])["search"]
    assert demo["restart_collapsed"] is True and demo["max_restarts"] == 5
    paper = validate_config(demo_preset(None, paper=True, quick=False)[0])["search"]
    assert paper["restart_collapsed"] is False


@pytest.mark.slow
def test_restart_flags_act_in_search(tmp_path: Path) -> None:
    """--restart-collapsed --max-restarts 2: in the saved config and search, and the summary
    says how many restarts were made; without the flags, none."""
    _config(tmp_path, seed=5, search={**TINY["search"], "steps": 120, "record_every": 20})
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home", "--no-progress",
        "--restart-collapsed", "--max-restarts", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "home/experiments/flags/config.yml").read_text())
    assert saved["search"]["restart_collapsed"] is True and saved["search"]["max_restarts"] == 2
    result = Experiment("flags", tmp_path / "home").load_search()
    assert result.config["restart_collapsed"] is True and int(result.restarts.max()) <= 2
    total = int(result.restarts.sum())
    assert total > 0, "no start was restarted: pick a case with collapsed starts"
    assert f"restarts of collapsed starts: {total} (" in done.stdout
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "restarts of collapsed starts" not in done.stdout
    assert Experiment("flags", tmp_path / "home").load_search().restarts.sum() == 0


@pytest.mark.slow
def test_max_restarts_must_be_a_whole_number(tmp_path: Path) -> None:
    done = _genni(
        tmp_path, "search", "--experiment", "x", "--model", "two_neuron", "--max-restarts", "1.5"
    )
    assert done.returncode == 2
    assert "argument --max-restarts: expected an int (a whole number)" in done.stderr


# --- one clear line -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--seed", "99999999999999999999", "'seed'"),
        ("--probe-seed", str(2**64), "'probes.seed'"),
        ("--search-seed", str(2**64 - 3), "'search.seed'"),
    ],
)
def test_seeds_beyond_torchs_range_are_one_line(
    flag: str, value: str, key: str, tmp_path: Path
) -> None:
    _config(tmp_path)
    done = _genni(tmp_path, "search", "--config", "run.yml", "--home", "home", flag, value)
    _one_line_error(done, "search", f"config key {key}", "2**64 - 1")
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yml"
    path.write_bytes(b"experiment: caf\xe9\nmodel: {name: two_neuron}\n")
    done = _genni(tmp_path, "search", "--config", "run.yml", "--home", "home")
    _one_line_error(done, "search", "is not UTF-8 text", "byte 0xe9 on line 1", "save the file")


@pytest.mark.slow
def test_a_genni_yml_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "genni.yml").write_bytes(b"genni_home: caf\xe9\n")
    done = _genni(tmp_path, "ls")
    _one_line_error(done, "ls", "genni.yml is not UTF-8 text", "byte 0xe9 on line 1")


@pytest.mark.slow
def test_an_ascii_terminal_gets_the_greek_spelled_out(tmp_path: Path) -> None:
    # ε = 0.05 reaches the trivial functions' J, so the run prints its warning (ε, θ, ×).
    _config(tmp_path)
    env = _env(PYTHONIOENCODING="ascii")
    done = _genni(
        tmp_path, "search", "--config", "run.yml", "--home", "home", "--no-progress",
        "--steps", "5", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "warning: epsilon = 0.05 is" in done.stdout and "theta's function" in done.stdout
    done.stdout.encode("ascii")
    helped = _genni(tmp_path, "search", "--help", env=env)
    assert helped.returncode == 0 and "theta0: index of a converged start" in helped.stdout


@pytest.mark.slow
def test_probes_that_cannot_fit_are_refused_with_the_estimate(tmp_path: Path) -> None:
    """10⁸ probes under an address-space limit: refused before they are drawn, naming the
    estimate and the limit."""
    _config(tmp_path)
    script = textwrap.dedent(
        """
        import resource, sys
        from genni_ext import cli
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = size + 300 * 2**20  # 300 MB more than the process holds now
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "search", "--config", "run.yml", "--home", "home",
         "--num-probes", "1e8", "--no-progress"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    _one_line_error(
        done, "search", "100000000 probes of shape (1,) and their targets",
        "need about 800.0 MB", "RLIMIT_AS (ulimit -v)", "use fewer probes",
    )  # fmt: skip
    assert not (tmp_path / "home/experiments/flags/searches").exists()


def test_the_memory_estimate_covers_drawn_probes_and_given_inputs_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    monkeypatch.setattr(_validate, "_host_limits", lambda: [(6000, "a test limit of 6.0 kB")])
    # 1000 drawn probes of one value and their targets of one value: 8 kB in float32.
    with pytest.raises(InputError, match=r"need about 8\.0 kB, more than the 6\.0 kB"):
        Problem(TwoNeuronNet(), num_probes=1000)
    # Given inputs are not counted again; their targets (4 kB) fit, 2000 probes' do not.
    assert Problem(TwoNeuronNet(), torch.randn(1000, 1)).num_probes == 1000
    with pytest.raises(InputError, match=r"the targets of 2000 probes .* need about 8\.0 kB"):
        Problem(TwoNeuronNet(), torch.randn(2000, 1))


def test_an_allocation_that_fails_later_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What the estimate cannot foresee (a search's own buffers, say) still ends as one line;
    any other RuntimeError is a bug and keeps its traceback."""
    from genni_ext.cli import entry

    def allocate(_args: object) -> int:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 800000000 bytes.\nmore detail"
        )

    monkeypatch.setitem(entry.COMMANDS, "ls", allocate)
    assert entry.main(["ls", "--home", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("genni ls: error: out of memory ([enforce")
    assert "800000000 bytes.); use fewer probes" in lines[0]

    def bug(_args: object) -> int:
        raise RuntimeError("an index out of range")

    monkeypatch.setitem(entry.COMMANDS, "ls", bug)
    with pytest.raises(RuntimeError, match="an index out of range"):
        entry.main(["ls", "--home", str(tmp_path)])


@pytest.mark.slow
def test_a_reader_that_closes_the_pipe_ends_ls_quietly(searched: Path) -> None:
    """genni ls | head -1: no traceback and no message, status 141 (as SIGPIPE gives)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "genni_ext.cli", "ls", "--home", "home"],
            cwd=searched, env=_env(), stdout=write, stderr=subprocess.PIPE, text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == ""


def test_a_closed_dask_client_is_refused() -> None:
    distributed = pytest.importorskip("distributed", reason="dask is in the test extra")
    from genni_ext.run.grid_sweep import sweep_grid

    client = distributed.Client(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client.close()
    problem = Problem(TwoNeuronNet(), num_probes=16, seed=1)
    subspace = Subspace.from_points(problem.theta, problem.theta + torch.eye(4)[:2])
    with pytest.raises(InputError, match=r"the Dask client is closed.*pass an open one"):
        sweep_grid(problem, subspace, Grid.uniform((-1.0, 1.0), 3, 2), client=client)


# --- Dask's logs ----------------------------------------------------------------------------


def test_only_genni_ext_records_are_shown_as_genni_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    log_to_stderr()
    log_to_stderr()  # once per process, however often main runs
    logging.getLogger("distributed.scheduler").warning("State start")
    logging.getLogger("distributed.scheduler").info("  Scheduler at: tcp://127.0.0.1:1")
    logging.getLogger("genni_ext").warning("a warning of ours")
    assert stderr.getvalue().splitlines().count("genni: a warning of ours") == 1
    assert "genni: State start" not in stderr.getvalue()
    assert "Scheduler at" not in stderr.getvalue()


@pytest.mark.slow
def test_dask_sweep_prints_no_scheduler_log(searched: Path) -> None:
    pytest.importorskip("distributed", reason="dask is in the test extra")
    done = _genni(
        searched, "sweep", "--config", "run.yml", "--home", "home", "--no-progress",
        "--dask", "local:1", "--set", "grids=[{name: dask_plane, bound: [-1, 1], n: 5}]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dask: 1 worker(s) at local:1" in done.stdout
    output = done.stdout + done.stderr
    for noise in ("Scheduler at", "Start Nanny", "Register worker", "Receive client"):
        assert noise not in output
    assert not [line for line in output.splitlines() if line.startswith("genni: ")]


# --- explain_backend and sweep agree --------------------------------------------------------


class _Recurrent(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.rnn = layer
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)
        out = out[0] if isinstance(out, tuple) else out
        return self.head(out.reshape(x.shape[0], -1, 4)[:, -1])


def _refused_by_sweep(model: nn.Module, inputs: torch.Tensor) -> str:
    center = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    with pytest.raises(InputError) as refused:
        sweep(
            model, center, torch.zeros(1, center.numel()), torch.zeros(2, 1), inputs,
            torch.zeros(inputs.shape[0], 1),
        )  # fmt: skip
    return str(refused.value)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
def test_a_recurrent_model_is_refused_by_both(kind: type[nn.Module]) -> None:
    model = _Recurrent(kind(3, 4, batch_first=True)).eval()
    inputs = torch.randn(6, 5, 3)
    refusal = _refused_by_sweep(model, inputs)
    assert "torch.func.vmap cannot run" in refusal and f"'rnn' ({kind.__name__})" in refusal
    assert explain_backend(model, inputs) == f"refused: {refusal}"
    assert explain_backend(model) == f"refused: {refusal}"  # without inputs, from the type


def test_vmap_still_cannot_run_the_layers_refused_by_type() -> None:
    """The list VMAP_UNSUPPORTED is what torch does: each fails under vmap."""
    from torch.func import functional_call, vmap

    for kind in (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell):
        assert issubclass(kind, VMAP_UNSUPPORTED)
        layer = kind(3, 4)
        params = {name: value[None] for name, value in layer.named_parameters()}
        shape = (1, 2, 3) if kind is nn.LSTMCell else (1, 2, 5, 3)
        with pytest.raises(RuntimeError, match="Batching rule not implemented"):
            vmap(lambda p, x, layer=layer: functional_call(layer, p, (x,))[0])(
                params, torch.randn(*shape)
            )


def test_lenet_on_inputs_it_cannot_take_is_refused_by_both() -> None:
    model = LeNet5().eval()  # 28×28 inputs
    inputs = torch.randn(4, 1, 14, 14)
    refusal = _refused_by_sweep(model, inputs)
    assert "cannot run on inputs of shape [4, 1, 14, 14]" in refusal
    assert explain_backend(model, inputs) == f"refused: {refusal}"


def test_what_explain_backend_promises_sweep_runs() -> None:
    small = LeNet5(input_size=14).eval()
    torch_only = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).eval()
    for model, inputs, backend in (
        (small, torch.randn(4, 1, 14, 14), "fused (cpu)"),
        (torch_only, torch.randn(4, 3), "torch: layer '1'"),
    ):
        assert explain_backend(model, inputs).startswith(backend)
        center = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        targets = model(inputs).detach().reshape(inputs.shape[0], -1)
        values = sweep(model, center, torch.zeros(1, center.numel()), torch.zeros(2, 1), inputs,
                       targets)  # fmt: skip
        assert values.shape == (2,) and float(values.max()) < 1e-10


# --- chunks ---------------------------------------------------------------------------------


def _problem(model: str, num_probes: int) -> Problem:
    config = {"experiment": "x", "model": {"name": model}, "probes": {"num_probes": num_probes}}
    return build_problem(validate_config(config))


def _work_points(problem: Problem) -> float:
    flops = lower(problem.model, tuple(problem.inputs.shape[1:])).flops_per_sample
    return FLOPS_PER_CHUNK / (flops * problem.num_probes)


@pytest.mark.parametrize(
    ("model", "probes", "shape"),
    [
        ("two_neuron", 1024, (3000, 3000)),  # 9·10⁶ points: one chunk before
        ("two_neuron", 16384, (101, 101)),
        ("two_neuron", 16384, (51, 51, 51)),
        ("two_neuron", 64, (17, 1000)),
        ("lenet5", 64, (40, 40)),
        ("lenet5", 1024, (35, 35, 35)),
    ],
)
def test_auto_chunks_follow_the_rule(model: str, probes: int, shape: tuple[int, ...]) -> None:
    problem = _problem(model, probes)
    plan = ChunkPlan.for_grid(shape, auto_chunk_points(problem, shape))
    assert plan.chunk_points % plan.row_points == 0
    bound = min(MAX_CHUNK_POINTS, _work_points(problem))
    # Within the bounds, unless one slab is over them (then a chunk is one slab).
    assert plan.chunk_points <= max(bound, plan.row_points)
    if plan.num_points >= MIN_CHUNKS * MIN_CHUNK_POINTS and shape[0] >= MIN_CHUNKS:
        assert plan.num_chunks >= MIN_CHUNKS
    elif plan.num_points > MIN_CHUNK_POINTS:
        assert (
            plan.chunk_points >= min(MIN_CHUNK_POINTS, bound)
            or plan.chunk_points == plan.row_points
        )


def test_a_small_grid_is_one_chunk() -> None:
    problem = _problem("two_neuron", 256)
    assert ChunkPlan.for_grid((21, 21), auto_chunk_points(problem, (21, 21))).num_chunks == 1


def test_a_short_first_axis_gives_one_slab_a_chunk_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problem = _problem("two_neuron", 1024)
    with caplog.at_level(logging.WARNING, logger="genni_ext"):
        points = auto_chunk_points(problem, (2, 3000, 3000))
    assert points == 9_000_000
    assert ChunkPlan.for_grid((2, 3000, 3000), points).num_chunks == 2
    assert "put the longest axis first" in caplog.text and "only 2 chunk(s)" in caplog.text


def test_a_grid_begun_with_other_chunks_resumes_with_the_default(tmp_path: Path) -> None:
    """The default chunk size of a grid on disk is its own (a grid begun under an earlier
    default resumes instead of being refused)."""
    problem = Problem(TwoNeuronNet(), num_probes=32, seed=1)
    subspace = Subspace.from_points(problem.theta, problem.theta + torch.eye(4)[:2])
    grid = Grid.uniform((-1.0, 1.0), 6, 2)
    experiment = Experiment("chunks", tmp_path)
    first = run_sweep(experiment, problem, subspace, grid, "g", chunk_points=12, progress=False)
    assert experiment.sweep_status("g").num_chunks == 3
    again = run_sweep(experiment, problem, subspace, grid, "g", progress=False)
    assert torch.equal(first.values, again.values) and experiment.chunks_computed == 0
