"""User presets: --presets DIR and VRAMCALC_PRESETS, `presets validate` with lines, `presets new`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vramcalc.cli.app import app

HF = Path(__file__).parent / "data" / "hf"
runner = CliRunner()

# A user model (TinyLlama's architecture under another name) and an override of a built-in GPU.
MODEL_YAML = textwrap.dedent("""\
    - name: my-tiny
      display_name: My Tiny
      source: https://example.org/my-tiny/config.json
      vocab_size: 32000
      hidden_size: 2048
      intermediate_size: 5632
      num_layers: 22
      num_attention_heads: 32
      num_kv_heads: 4
""")
GPU_YAML = textwrap.dedent("""\
    - name: rtx4090
      display_name: RTX 4090 (1 GB test override)
      source: https://example.org/test
      memory_bytes: 1000000000
""")


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.yaml").write_text(MODEL_YAML)
    (tmp_path / "gpus.yaml").write_text(GPU_YAML)
    return tmp_path


def test_presets_option_adds_a_model(user_dir: Path) -> None:
    result = runner.invoke(app, ["estimate", "my-tiny", "--presets", str(user_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    # TinyLlama's architecture: 1,100,048,384 parameters (tests/test_presets_data.py ANCHORS).
    assert json.loads(result.stdout)["parameters"] == 1_100_048_384


def test_env_var_overrides_a_gpu(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMCALC_PRESETS", str(user_dir))
    result = runner.invoke(app, ["estimate", "gpt2", "--gpu", "rtx4090", "--format", "json", "--check"])
    # 1 GB is less than the CUDA context alone (500 MiB) plus GPT-2's full fine-tuning state: exit 1.
    assert result.exit_code == 1
    assert json.loads(result.stdout)["gpu"]["memory_bytes"] == 1_000_000_000


def test_models_and_gpus_list_user_presets(user_dir: Path) -> None:
    models = json.loads(runner.invoke(app, ["models", "--presets", str(user_dir), "--format", "json"]).stdout)
    assert "my-tiny" in {m["name"] for m in models["models"]}
    gpus = json.loads(runner.invoke(app, ["gpus", "--presets", str(user_dir), "--format", "json"]).stdout)
    assert next(g for g in gpus["gpus"] if g["name"] == "rtx4090")["memory_bytes"] == 1_000_000_000


def test_missing_presets_dir_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "--presets", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'nope'}: preset directory not found: pass a directory holding "
        "models/*.yaml or gpus.yaml\n"
    )


def test_validate_ok(user_dir: Path) -> None:
    result = runner.invoke(app, ["presets", "validate", str(user_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"note: {user_dir / 'gpus.yaml'}:1: gpu 'rtx4090' overrides the built-in preset",
        f"ok: {user_dir}: 1 models, 1 GPUs valid in 2 files",
    ]


BAD_YAML = textwrap.dedent("""\
    - name: good
      source: https://example.org/a
      parameters: 1000
    - name: bad
      source: https://example.org/b
      vocab_size: 32000
      hidden_size: -5
      intermediate_size: 5632
      num_layers: 2
      num_attention_heads: 32
      colour: blue
    - name: wrong-total
      source: https://example.org/c
      parameters: 1000
      published_parameters: 999
    - name: good
      source: https://example.org/d
      parameters: 5
""")


def test_validate_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "bad.yaml"
    path.write_text(BAD_YAML)
    result = runner.invoke(app, ["presets", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:7: entry 2 (bad): hidden_size: Input should be greater than 0",  # line of `hidden_size:`
        f"{path}:11: entry 2 (bad): colour: Extra inputs are not permitted",  # line of `colour:`
        f"{path}:15: entry 3 (wrong-total): the architecture gives 1,000 parameters, "
        "published_parameters says 999",
        f"{path}:16: duplicate model name 'good' (first at {path}:1)",  # entry 4 starts on line 16
    ]
    assert result.stderr == (
        f"error: 4 problems in {tmp_path} (2 models, 0 GPUs valid in 1 files); fix them and run again\n"
    )


def test_validate_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("- name: x\n  memory_bytes: [1, 2\n")
    result = runner.invoke(app, ["presets", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{path}:3: invalid YAML")


def test_validate_missing_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["presets", "validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: {tmp_path / 'nope'}: no such file or directory; pass a preset directory\n"
    )


def test_new_from_config_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "mine" / "models" / "v2.yaml"
    result = runner.invoke(
        app,
        [
            "presets",
            "new",
            "--from",
            str(HF / "deepseek-v2-lite.json"),
            "--name",
            "my-v2-lite",
            "--source",
            "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    entry = yaml.safe_load(out.read_text())[0]
    assert (entry["name"], entry["attention_kind"], entry["kv_lora_rank"]) == ("my-v2-lite", "mla", 512)
    assert runner.invoke(app, ["presets", "validate", str(tmp_path / "mine")]).exit_code == 0
    shown = runner.invoke(
        app, ["show", "my-v2-lite", "--presets", str(tmp_path / "mine"), "--format", "json"]
    )
    # Same count as the config.json itself: 15,706,484,224 (tests/test_hf_config.py TOTALS).
    assert json.loads(shown.stdout)["parameters"] == 15_706_484_224
    again = runner.invoke(
        app, ["presets", "new", "--from", str(HF / "deepseek-v2-lite.json"), "-o", str(out)]
    )
    assert again.exit_code == 2
    assert again.stderr == f"error: {out} exists; pass --force to overwrite it or choose another --output\n"


def test_new_to_stdout() -> None:
    result = runner.invoke(app, ["presets", "new", "--from", str(HF / "gemma-3-1b.json")])
    assert result.exit_code == 0
    assert result.stdout.startswith("# Written by `vramcalc presets new --from ")
    entry = yaml.safe_load(result.stdout)[0]
    assert (entry["name"], entry["family"], entry["sliding_window_layers"]) == ("gemma-3-1b", "gemma3", 22)


def test_completion_lists_preset_names() -> None:
    from vramcalc.cli.common import complete_model as _complete_model

    assert "deepseek-v3" in _complete_model("deepseek")
