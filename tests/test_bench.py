"""``rllm bench`` and ``rllm.bench``: what they measure, what they refuse, and a model whose
context is shorter than a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rllm
from rllm import _rllm
from rllm.bench import bench, cpu_name
from tiny_models import write_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.gguf"
    write_tiny_llama(path, n_ctx_train=64)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rllm", "bench", *args], capture_output=True, text=True, timeout=300
    )


def test_measures_every_test_and_thread_count(tiny: Path) -> None:
    rows = bench(tiny, n_prompt=[8, 16], n_gen=[4], threads=[1, 2], reps=2, roofline=False)
    assert [(r.threads, r.test) for r in rows] == [
        (t, test) for t in (1, 2) for test in ("pp8", "pp16", "tg4")
    ]
    for r in rows:
        assert r.skipped is None and len(r.samples) == 2
        assert all(s > 0 for s in r.samples) and r.tps > 0


def test_json_output_and_roofline(tiny: Path) -> None:
    done = cli("-m", str(tiny), "-p", "8", "-n", "4", "-t", "1", "-r", "1", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["test"] for r in rows] == ["pp8", "tg4"]
    tg = rows[1]
    # The roofline is bandwidth over the bytes a token reads: positive and finite.
    assert tg["bandwidth_gbs"] > 0 and tg["roofline_tps"] > 0
    # Every row says where it was measured: the CPU and the kernel tier that ran.
    assert all(r["isa"] == _rllm.active_isa() and r["cpu"] == cpu_name() for r in rows)


def test_table_output(tiny: Path) -> None:
    done = cli("-m", str(tiny), "-p", "8", "-n", "0", "-t", "1", "-r", "1", "--no-roofline")
    assert done.returncode == 0, done.stderr
    assert "| tiny.gguf |" in done.stdout and "| pp8 |" in done.stdout
    first = done.stdout.splitlines()[0]
    assert (
        first.startswith(f"CPU: {cpu_name()} (") and f"rllm kernels: {_rllm.active_isa()}" in first
    )
    assert "tg" not in done.stdout.split("| pp8 |")[1]


def test_profile_splits_the_forward_time_by_op(tiny: Path) -> None:
    """--profile: per test, the forward pass's time per run and its share per op; the shares
    of matmul, attention and the rest add up to the whole, and a run without it times nothing."""
    prompt, gen = bench(
        tiny, n_prompt=[16], n_gen=[4], threads=[2], reps=2, profile=True, roofline=False
    )
    for row in (prompt, gen):
        shares = row.op_shares
        assert shares is not None and row.forward_ms is not None
        assert shares["matmul"] > 0 and shares["attention"] > 0
        assert 0 < shares["quantize"] < shares["matmul"]
        assert shares["matmul"] + shares["attention"] + shares["other"] == pytest.approx(1.0)
        # The forward passes are inside the timed runs: at most a run's wall time.
        assert 0 < row.forward_ms <= 1e3 * row.n_tokens / min(row.samples) * 1.001
    plain = bench(tiny, n_prompt=[16], n_gen=[0], threads=[2], reps=1, roofline=False)
    assert plain[0].op_shares is None and _rllm.take_op_times()["forward"] == 0.0
    done = cli(
        "-m", str(tiny), "-p", "8", "-n", "0", "-t", "1", "-r", "1", "--no-roofline", "--profile"
    )
    assert done.returncode == 0, done.stderr
    assert "| forward ms/run | matmul | (quantize) | attention | other |" in done.stdout


def test_a_test_longer_than_the_context_is_skipped_not_fatal(tiny: Path) -> None:
    rows = bench(tiny, n_prompt=[100, 8], n_gen=[0], threads=[1], reps=1, roofline=False)
    assert rows[0].skipped == "100 tokens exceed the model's context of 64"
    assert rows[0].samples == [] and rows[1].skipped is None and rows[1].tps > 0
    done = cli("-m", str(tiny), "-p", "100", "-n", "0", "-t", "1", "-r", "1", "--no-roofline")
    assert done.returncode == 0, done.stderr
    assert "skipped: 100 tokens exceed the model's context of 64" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "abc"], "-p/--n-prompt: 'abc': invalid integer 'abc'"),
        (["-p", "-5"], "-p/--n-prompt"),
        (["-n", "1,,2"], "-n/--n-gen"),
        (["-t", "0"], "-t/--threads"),
        (["-r", "0"], "-r/--repetitions"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_are_usage_errors(tiny: Path, args: list[str], message: str) -> None:
    done = cli("-m", str(tiny), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_model_files(tmp_path: Path) -> None:
    missing = cli("-m", str(tmp_path / "nope.gguf"), "-r", "1")
    assert missing.returncode != 0 and "nope.gguf" in missing.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    done = cli("-m", str(junk), "-r", "1", "--no-roofline")
    assert done.returncode == 1 and "junk.gguf" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(rllm.GGUFError, match="junk.gguf"):
        bench(junk, reps=1, roofline=False)


def test_api_rejects_bad_values(tiny: Path) -> None:
    for kwargs, message in [
        ({"n_prompt": []}, "n_prompt: give at least one value"),
        ({"n_gen": [-1]}, "n_gen must be >= 0"),
        ({"threads": [0]}, "threads must be >= 1"),
        ({"reps": 0}, "reps must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            bench(tiny, roofline=False, **kwargs)
