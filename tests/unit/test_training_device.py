"""Training on a chosen device: a missing GPU is a one-line error, a GPU run hands back a CPU model,
a node trains its rounds on the device its node.toml names, and the throughput benchmark measures
and writes its table (CPU here; CUDA where there is one)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_node_config
from common.model import ModelConfig, build_model, model_vector
from common.training import train_local, training_device
from common.windows import build_windows, series_stats
from tests.conftest import FAST_RUN, ROOT, model_config, node_round, toy_panel, train_config
from warehouse_node import federated
from warehouse_node.node import Node

NO_GPU = not torch.cuda.is_available()
SCRIPT = ROOT / "scripts" / "benchmark_throughput.py"


def _windows(panel, cfg: ModelConfig):
    return build_windows(panel, series_stats(panel, ()), cfg.lookback, cfg.horizon)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("banana", "unknown training device 'banana': use cpu, cuda or cuda:N"),
        ("mps", "unsupported training device 'mps': use cpu, cuda or cuda:N"),
        ("cuda:99", "training device 'cuda:99': this machine has "),
    ],
)
def test_a_device_this_machine_lacks_is_a_one_line_error(name, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")) as err:
        training_device(name)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_training_on_cuda_without_a_gpu_says_so_before_touching_the_model():
    cfg = model_config(lookback=14, horizon=5, hidden=8, heads=2)
    model = build_model(cfg, 0)
    before = model_vector(model)
    windows = _windows(toy_panel(2, 80), cfg)
    with pytest.raises(ValueError, match="this machine has no CUDA GPU"):
        train_local(model, windows, train_config(epochs=1, max_batches_per_epoch=1), 0, device="cuda")
    assert np.array_equal(model_vector(model), before)


@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")
def test_a_gpu_trained_model_and_optimizer_state_come_back_on_the_cpu_close_to_a_cpu_run():
    cfg = model_config(lookback=14, horizon=5, hidden=16, dropout=0.0)  # no device-dependent masks
    windows = _windows(toy_panel(4, 200), cfg)
    train = train_config(epochs=2, batch_size=32, max_batches_per_epoch=6)
    start = model_vector(build_model(cfg, 1))
    on_cpu, on_gpu = build_model(cfg, 1), build_model(cfg, 1)
    train_local(on_cpu, windows, train, 1)
    state: dict = {}
    train_local(on_gpu, windows, train, 1, optimizer_state=state, device="cuda")
    assert all(p.device.type == "cpu" for p in on_gpu.parameters())
    tensors = [v for s in state["state"].values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    moved = np.linalg.norm(model_vector(on_cpu) - start)
    gap = np.linalg.norm(model_vector(on_gpu) - model_vector(on_cpu))
    assert moved > 0 and gap < 0.05 * moved, (gap, moved)  # float rounding only, not other steps


def _node_with_device(node_dir: Path, device: str):
    toml = node_dir / "node.toml"
    toml.write_text(toml.read_text() + f'\n[training]\ndevice = "{device}"\n')
    cfg = load_node_config(node_dir)
    first = node_round({**FAST_RUN, "server-round": 1})
    return cfg, first, Node(cfg).data(first)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_a_node_whose_node_toml_names_a_missing_gpu_sends_no_update(nodes):
    cfg, first, data = _node_with_device(nodes[0][0], "cuda")
    assert cfg.training_device == "cuda"
    with pytest.raises(ValueError, match="training device 'cuda': this machine has no CUDA GPU"):
        federated.round_update(cfg, data, first, None)
    assert not (cfg.private_dir / federated.OPTIMIZER_FILE).exists()


@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")
def test_a_node_trains_its_round_on_the_gpu_its_node_toml_names(nodes):
    """Dropout masks differ by device, so the update is close to a CPU round's, not equal to it."""
    cfg, first, data = _node_with_device(nodes[0][0], "cuda")
    _, on_gpu, windows, gpu_loss = federated.round_update(cfg, data, first, None)
    saved = torch.load(cfg.private_dir / federated.OPTIMIZER_FILE, weights_only=True)
    moments = [v for s in saved["state"]["state"].values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert moments and all(t.device.type == "cpu" for t in moments)  # a CPU round can continue them
    start = federated.round_start(first, None)
    _, on_cpu, _, cpu_loss = federated.round_update(replace(cfg, training_device="cpu"), data, first, None)
    assert windows > 0 and abs(gpu_loss - cpu_loss) < 0.2 * cpu_loss, (gpu_loss, cpu_loss)
    gap, moved = np.linalg.norm(on_gpu - on_cpu), np.linalg.norm(on_cpu - start)
    assert moved > 0 and gap < moved, (gap, moved)


def _benchmark(walmart_slice: Path, out: Path, *devices: str) -> subprocess.CompletedProcess:
    args = ["--data", str(walmart_slice), "--batch-sizes", "16,32", "--batches", "2", "--repeats", "2"]
    args += ["--output", str(out), *(["--devices", ",".join(devices)] if devices else [])]
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_throughput_benchmark_writes_windows_per_second_for_each_device_and_batch_size(
    walmart_slice, tmp_path
):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    done = _benchmark(walmart_slice, out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "kept text" in text and "<!-- throughput:begin -->" in text
    assert "--batch-sizes 16,32 --batches 2 --repeats 2" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| cpu")]
    assert [r[2].strip() for r in rows] == ["16", "32"]
    rates = [float(r[3].split("(")[0].replace(",", "")) for r in rows]
    assert all(np.isfinite(rates)) and min(rates) > 0
    gpu_line = "GPU: not measured (this machine has no CUDA GPU)."
    assert (gpu_line in text) == NO_GPU
    assert len([line for line in text.splitlines() if line.startswith("| cuda")]) == (0 if NO_GPU else 2)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_throughput_benchmark_asked_for_cuda_without_a_gpu_fails_before_preparing_data(
    walmart_slice, tmp_path
):
    done = _benchmark(walmart_slice, tmp_path / "B.md", "cpu", "cuda")
    assert done.returncode == 2
    assert "Error: training device 'cuda': this machine has no CUDA GPU" in done.stderr
    assert "nodes prepared" not in done.stdout and not (tmp_path / "B.md").exists()


def test_windows_saved_here_are_timed_elsewhere_without_flower_or_tenseal(walmart_slice, tmp_path):
    """A GPU machine may lack Flower and TenSEAL: --save-windows prepares, --windows only times."""
    kit = tmp_path / "windows.npz"
    saved = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(walmart_slice),
         "--save-windows", str(kit)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert kit.is_file() and "windows of 3 stores" in saved.stdout
    out = tmp_path / "B.md"
    args = ["--windows", str(kit), "--devices", "cpu", "--batch-sizes", "16", "--batches", "2"]
    args += ["--repeats", "1", "--output", str(out)]
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['benchmark_throughput.py', *{args!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print('loaded:', sorted({'flwr', 'tenseal', 'coordinator.planner.simulate'} & set(sys.modules)))\n"
    )
    no_git = {"PATH": "", "PYTHONPATH": str(ROOT)}  # like a lent GPU machine: no git there
    timed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=no_git)
    assert timed.returncode == 0, timed.stderr
    assert "loaded: []" in timed.stdout
    text = out.read_text()
    assert "(the windows' own; no git checkout here)" in text
    assert "pooled training windows of 3 stores" in text
    assert len([line for line in text.splitlines() if line.startswith("| cpu | 16 |")]) == 1
    assert "--windows" in text  # the command that made the table


def test_a_file_that_is_not_saved_windows_is_a_one_line_error(tmp_path):
    bogus = tmp_path / "windows.npz"
    bogus.write_bytes(b"not an npz")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--windows", str(bogus), "--devices", "cpu"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"Error: --windows {bogus} is not a file of --save-windows:")
    assert len(done.stderr.strip().splitlines()) == 1
