"""Reading a model from disk: config.json, a folder, safetensors headers and the shard index."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.errors import PresetFileError
from vramcalc.core.params import count_params
from vramcalc.io.model_files import load_model_path, read_safetensors_header
from vramcalc.io.resolve import resolve_model

HF = Path(__file__).parent / "data" / "hf"
runner = CliRunner()

# A tiny Llama: vocab 64, hidden 16, 2 layers, 4 heads (2 KV heads of 4), MLP 32, untied head.
TINY = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# Its tensors (name -> shape), as modeling_llama.py names them.
TENSORS = {"model.embed_tokens.weight": [64, 16], "lm_head.weight": [64, 16], "model.norm.weight": [16]}
for i in range(2):
    p = f"model.layers.{i}."
    TENSORS |= {
        p + "self_attn.q_proj.weight": [16, 16],
        p + "self_attn.k_proj.weight": [8, 16],
        p + "self_attn.v_proj.weight": [8, 16],
        p + "self_attn.o_proj.weight": [16, 16],
        p + "mlp.gate_proj.weight": [32, 16],
        p + "mlp.up_proj.weight": [32, 16],
        p + "mlp.down_proj.weight": [16, 32],
        p + "input_layernorm.weight": [16],
        p + "post_attention_layernorm.weight": [16],
    }
# 2 x 64 x 16 (embed, head) + 16 (norm) + 2 x (256 + 128 + 128 + 256 + 3 x 512 + 2 x 16)
# = 2,048 + 16 + 2 x 2,336 = 6,736.
TINY_PARAMS = 6_736


def write_safetensors(path: Path, tensors: dict[str, list[int]], dtype: str = "BF16") -> None:
    """A valid safetensors file: 8-byte little-endian header length, JSON header, zeroed data."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "Tiny-Llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    return d


def test_tensor_table_matches_the_architecture(folder: Path) -> None:
    assert sum(1 for _ in TENSORS) == 21
    assert load_model_path(folder).spec.name == "tiny-llama"
    from vramcalc.core.params import count_params

    assert count_params(load_model_path(folder).spec) == TINY_PARAMS


def test_single_file_header(folder: Path) -> None:
    write_safetensors(folder / "model.safetensors", TENSORS)
    loaded = load_model_path(folder)
    assert loaded.checkpoint is not None
    assert loaded.checkpoint.elements_by_dtype == {"BF16": TINY_PARAMS}
    assert loaded.checkpoint.tensors == 21
    assert loaded.notes == (
        "safetensors headers: 6,736 parameters (BF16 6,736), the same as the architecture.",
    )


def test_header_agrees_with_the_safetensors_library(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "t.safetensors"
    st.save_file({"a": np.zeros((3, 5), dtype=np.float16), "b": np.zeros(7, dtype=np.float32)}, str(path))
    header = read_safetensors_header(path)
    assert header["a"]["shape"] == [3, 5] and header["a"]["dtype"] == "F16"
    assert header["b"]["shape"] == [7] and header["b"]["dtype"] == "F32"


def test_sharded_index(folder: Path) -> None:
    names = list(TENSORS)
    write_safetensors(folder / "model-00001-of-00002.safetensors", {n: TENSORS[n] for n in names[:10]})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {n: TENSORS[n] for n in names[10:]}, "F32")
    weight_map = {n: f"model-0000{1 if i < 10 else 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 2 * TINY_PARAMS}, "weight_map": weight_map})
    )
    ckpt = load_model_path(folder).checkpoint
    assert ckpt is not None and ckpt.elements == TINY_PARAMS
    assert set(ckpt.elements_by_dtype) == {"BF16", "F32"}
    assert ckpt.files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def test_index_without_shards_gives_approximate_note(folder: Path) -> None:
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 2 * TINY_PARAMS}, "weight_map": {"x": "model-1.safetensors"}})
    )
    loaded = load_model_path(folder)
    assert loaded.checkpoint is None
    # 13,472 bytes / 2 (torch_dtype bfloat16) = 6,736.
    assert any("about 6,736 parameters" in n for n in loaded.notes)
    assert any("1 of 1 shards" in n for n in loaded.notes)


def test_tied_head_stored_twice_is_a_note(tmp_path: Path) -> None:
    d = tmp_path / "tied"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY | {"tie_word_embeddings": True}))
    write_safetensors(d / "model.safetensors", TENSORS)
    # The architecture counts the tied matrix once: 6,736 - 64 x 16 = 5,712; the file stores both.
    assert any("difference +1,024" in n for n in load_model_path(d).notes)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01", "shorter than its 8-byte header length"),
        (struct.pack("<Q", 10**12) + b"{}", "header length 1000000000000 is impossible"),
        (struct.pack("<Q", 4) + b"nope", "the header is not JSON"),
    ],
)
def test_bad_safetensors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(PresetFileError, match=message):
        read_safetensors_header(path)


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(PresetFileError, match="no config.json in this folder"):
        load_model_path(tmp_path)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with pytest.raises(PresetFileError, match="line 3: invalid JSON"):
        load_model_path(tmp_path / "config.json")


def test_resolve_prefers_existing_paths_then_presets(folder: Path) -> None:
    assert resolve_model(str(folder))[0].name == "tiny-llama"
    assert resolve_model("mistral-7b")[0].name == "mistral-7b"
    with pytest.raises(PresetFileError, match="no such file or folder"):
        resolve_model("missing/config.json")


def test_cli_estimate_on_a_folder(folder: Path) -> None:
    write_safetensors(folder / "model.safetensors", TENSORS)
    result = runner.invoke(app, ["estimate", str(folder), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["model"], doc["parameters"], doc["active_parameters"]) == ("tiny-llama", 6_736, 6_736)
    assert doc["notes"][0].startswith("safetensors headers: 6,736 parameters")


def test_cli_show_config_json_moe() -> None:
    result = runner.invoke(app, ["show", str(HF / "mixtral-8x7b-v0.1.json"), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    # 46,702,792,704 total, 12,879,925,248 active (see test_hf_config.ACTIVE).
    assert (doc["parameters"], doc["active_parameters"]) == (46_702_792_704, 12_879_925_248)


def test_cli_unknown_model_type_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rwkv"}))
    result = runner.invoke(app, ["estimate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"error: {tmp_path / 'config.json'}: unsupported model_type 'rwkv'; supported:"
    )
    assert "Traceback" not in result.output


def test_copied_fixture_folder(tmp_path: Path) -> None:
    d = tmp_path / "DeepSeek-V2-Lite"
    d.mkdir()
    shutil.copy(HF / "deepseek-v2-lite.json", d / "config.json")
    result = runner.invoke(
        app, ["estimate", str(d), "--method", "qlora", "--lora-targets", "all-linear", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"] == 15_706_484_224


# ---- issue 12: adapters, the Hugging Face cache, distills ----------------------------------------------

def _config(folder: Path) -> None:
    src = Path(__file__).parent / "data" / "hf" / "qwen2.5-0.5b.json"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(src.read_text())


def test_peft_adapter_folder_resolves_its_base(tmp_path: Path) -> None:
    from vramcalc.io.resolve import adapter_options, resolve_model

    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        '{"base_model_name_or_path": "qwen2.5-0.5b", "r": 64, "lora_alpha": 128, "lora_dropout": 0.1, '
        '"target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"}')
    spec, notes = resolve_model(str(adapter))
    assert spec.name == "qwen2.5-0.5b"
    assert "PEFT adapter of qwen2.5-0.5b" in notes[0] and "lora_rank 64" in notes[0]
    assert adapter_options(str(adapter)) == {"method": "lora", "lora_rank": 64, "lora_alpha": 128,
                                             "lora_dropout": 0.1, "lora_targets": "q_proj,v_proj"}


def test_hf_cache_folder_and_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vramcalc.core.params import count_params
    from vramcalc.io.resolve import resolve_model

    entry = tmp_path / "hub" / "models--someorg--tiny-qwen"
    _config(entry / "snapshots" / "abc123")
    _config(entry / "snapshots" / "old999")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123")
    spec, notes = resolve_model(str(entry))
    assert count_params(spec) == 494_032_768  # Qwen2.5-0.5B (tests/data/hf/README.md)
    assert "snapshot abc123" in notes[0]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec, notes = resolve_model("someorg/tiny-qwen")
    assert count_params(spec) == 494_032_768 and "Hugging Face cache" in notes[0]


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    from vramcalc.io.resolve import resolve_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(PresetFileError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_distill_resolves_to_its_base_architecture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vramcalc.core.errors import VramcalcError
    from vramcalc.io.resolve import resolve_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: presets only
    # every R1 distill has a preset of its own (presets/models/finetune_2025.yaml), with its base's architecture
    spec, _ = resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert spec.name == "deepseek-r1-distill-qwen-7b" and count_params(spec) == count_params(resolve_model(
        "qwen2.5-7b")[0])
    assert count_params(resolve_model("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")[0]) == count_params(
        resolve_model("llama-3.1-8b")[0])
    # the 1.5B distill has its own preset (untied head, unlike Qwen2.5-1.5B: presets/models/finetune_2025.yaml)
    assert resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")[0].name == "deepseek-r1-distill-qwen-1.5b"
    # a distill with no table entry: no 671B DeepSeek-V3 suggestion for a 3B model; how to pass config.json
    with pytest.raises(VramcalcError) as e:
        resolve_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-3B")
    assert "deepseek-v3" not in str(e.value).lower()
