"""Every example runs: the gate script and each run file and tool config, with the CLI of this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH with a `vramcalc` that runs this worktree's source (python -m vramcalc, PYTHONPATH=src)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "vramcalc"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "src"}" exec "{sys.executable}" -m vramcalc "$@"\n')
    shim.chmod(0o755)
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "VRAMCALC_PRESETS", "GITHUB_STEP_SUMMARY")
    }
    e["PATH"] = f"{bin_dir}{os.pathsep}{e.get('PATH', '')}"
    e["COLUMNS"] = "120"
    return e


def sh(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the gate script is bash")
def test_gate_script_passes_on_the_planned_runs(env: dict[str, str], tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    r = sh(["bash", str(EXAMPLES / "gate-runs.sh")], {**env, "GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == len(list((EXAMPLES / "runs").glob("*.yaml")))
    assert "| mistral-qlora | mistral-7b |" in summary.read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="the gate script is bash")
def test_gate_script_redirected_to_a_file_keeps_all_its_output(env: dict[str, str], tmp_path: Path) -> None:
    # issue 12: `gate-runs.sh > file` overwrote its markdown with its ok lines (two opens of one file)
    out = tmp_path / "gate.out"
    with out.open("w") as f:
        r = subprocess.run(["bash", str(EXAMPLES / "gate-runs.sh")], env=env, cwd=ROOT, stdout=f,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    runs = sorted((EXAMPLES / "runs").glob("*.yaml"))
    for run in runs:  # each run's heading, its markdown and its ok line, none written over another
        assert f"## {run.name}" in lines and f"ok      {run}" in lines, run.name
    assert "| mistral-qlora | mistral-7b |" in "\n".join(lines)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the gate script is bash")
def test_gate_script_fails_a_run_that_does_not_fit(env: dict[str, str], tmp_path: Path) -> None:
    too_big = tmp_path / "too-big.yaml"
    too_big.write_text("model: mistral-7b\ngpu: rtx4090\nmethod: full\n")  # 12 B/param > 24 GiB (seed 001)
    r = sh(["bash", str(EXAMPLES / "gate-runs.sh"), str(too_big)], {**env, "GITHUB_STEP_SUMMARY": os.devnull})
    assert r.returncode == 1
    assert "too big" in r.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="the gate script is bash")
def test_gate_script_passes_bad_input_through(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mistral-7b\nbatchsize: 2\n")
    r = sh(["bash", str(EXAMPLES / "gate-runs.sh"), str(bad)], {**env, "GITHUB_STEP_SUMMARY": os.devnull})
    assert r.returncode == 2 and r.stderr.startswith("error: ")


@pytest.mark.parametrize("config", sorted(p.name for p in (EXAMPLES / "configs").glob("*.yaml")))
def test_tool_configs_estimate(env: dict[str, str], config: str) -> None:
    r = sh(
        [
            "vramcalc",
            "estimate",
            "--config",
            f"examples/configs/{config}",
            "--gpu",
            "h100",
            "--check",
            "--format",
            "json",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr


def test_hf_training_args_with_config_json(env: dict[str, str]) -> None:
    r = sh(
        [
            "vramcalc",
            "estimate",
            "examples/configs/tiny-llama-config.json",
            "--config",
            "examples/configs/hf-training-args.json",
            "--seq-len",
            "2048",
            "--gpu",
            "a100-80gb",
            "--check",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr


def test_custom_presets(env: dict[str, str]) -> None:
    r = sh(
        ["vramcalc", "fit", "my-7b", "--gpu", "our-l4", "--method", "qlora", "--seq-len", "2048"],
        {**env, "VRAMCALC_PRESETS": str(EXAMPLES / "presets")},
    )
    assert r.returncode == 0, r.stderr
    assert "Team NVIDIA L4" in r.stdout


def test_github_workflow_commands_run(env: dict[str, str], tmp_path: Path) -> None:
    """Each `run:` step of the workflow (after install) runs here, from the repository root."""
    workflow = yaml.safe_load((EXAMPLES / "github-actions/vramcalc.yml").read_text())
    # pip install is the CI's business; the gate script has its own tests above.
    steps = [
        s
        for s in workflow["jobs"]["gate"]["steps"]
        if "run" in s and "pip install" not in s["run"] and "gate-runs.sh" not in s["run"]
    ]
    assert steps
    summary = tmp_path / "summary.md"
    for step in steps:
        step_env = {
            **env,
            **{k: str(v) for k, v in step.get("env", {}).items()},
            "GITHUB_STEP_SUMMARY": str(summary),
        }
        r = sh(["bash", "-euo", "pipefail", "-c", step["run"]], step_env)
        assert r.returncode == 0, f"{step['name']}: {r.stderr}"
    assert summary.read_text().count("|") > 10
