"""What a MODEL reference names, the same in every command: a file or folder on disk, else a preset.

Light: the config.json reader (io/model_files.py) is imported only when the reference is a path.
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable
from pathlib import Path

from vramcalc.core.errors import PresetFileError
from vramcalc.core.specs import ModelSpec
from vramcalc.io.files import path_kind


def looks_like_path(model: str, exists: bool = True) -> bool:
    """MODEL is read from disk when it names an existing file or folder (with `exists`), ends in .json or
    starts like a path (./ ../ / ~)."""
    return (model.endswith(".json") or model.startswith(("./", "../", "/", "~", ".\\"))
            or (exists and path_kind(model, "MODEL") != "missing"))


# Distilled / fine-tuned hub ids whose base architecture their name states, with the preset of that
# architecture and what differs (none at present: the DeepSeek-R1 distills, once listed here, have presets of their
# own in presets/models/finetune_2025.yaml).
DERIVED_IDS: dict[str, tuple[str, str]] = {}


def _size_token(text: str) -> str | None:
    """The parameter size a name states ('7b', '1.5b', '671b'), lower-case; None when it states none."""
    import re

    found = re.findall(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)b(?![a-z])", text.lower().replace("_", "-"))
    return found[-1] if found else None


def hub_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
    (huggingface_hub constants.py)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return [Path(home).expanduser() / "hub"]


def cache_snapshot(repo_folder: Path) -> Path | None:
    """The snapshot folder of a hub cache entry `models--org--name`: refs/main's revision when present, else
    the only or newest snapshot; None when it has none."""
    snapshots = repo_folder / "snapshots"
    if path_kind(snapshots, "snapshots") != "dir":
        return None
    ref = repo_folder / "refs" / "main"
    if path_kind(ref, "refs/main") == "file":
        from vramcalc.io.files import read_bounded

        rev = read_bounded(ref, 200, "refs/main").decode("utf-8", "replace").strip()
        if rev and "/" not in rev and path_kind(snapshots / rev, "snapshot") == "dir":
            return snapshots / rev
    revs = [d for d in snapshots.iterdir() if d.is_dir()]
    return max(revs, key=lambda d: d.stat().st_mtime) if revs else None


# adapter_config.json keys (peft's *Config dataclasses, peft/tuners/<method>/config.py) -> option names, per
# peft_type; core/peft_methods.py BY_PEFT_TYPE names the method. target_modules -> lora_targets for the
# per-Linear methods; IA3's feedforward_modules -> ia3_feedforward.
_ADAPTER_KEYS: dict[str, dict[str, str]] = {
    "LORA": {"r": "lora_rank", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"},
    "LOHA": {"r": "lora_rank", "alpha": "lora_alpha"},
    "LOKR": {"r": "lora_rank", "alpha": "lora_alpha"},
    "VERA": {"r": "lora_rank"},
    "OFT": {"oft_block_size": "oft_block_size"},
    "FOURIERFT": {"n_frequency": "n_frequency"},
    "BOFT": {"boft_block_size": "boft_block_size", "boft_block_num": "boft_block_num"},
    "MISS": {"r": "miss_rank"},
    "BONE": {"r": "miss_rank"},  # peft renamed Bone to MiSS: tuners/miss/config.py MissConfig keeps its r
    "C3A": {"block_size": "c3a_block_size"},
    "SHIRA": {"r": "shira_rank"},
    "ADAPTION_PROMPT": {"adapter_len": "adapter_len", "adapter_layers": "adapter_layers"},
    "IA3": {},
    "TRAINABLE_TOKENS": {},
    "LN_TUNING": {},
    "PROMPT_TUNING": {"num_virtual_tokens": "virtual_tokens"},
    "P_TUNING": {"num_virtual_tokens": "virtual_tokens", "encoder_hidden_size": "encoder_hidden_size"},
    "PREFIX_TUNING": {"num_virtual_tokens": "virtual_tokens", "encoder_hidden_size": "encoder_hidden_size",
                      "prefix_projection": "prefix_projection"},
}
_TARGETED = ("LORA", "LOHA", "LOKR", "VERA", "IA3", "OFT", "FOURIERFT", "BOFT", "MISS", "BONE", "C3A", "SHIRA")
# Settings that change memory but that vramcalc models at peft's default only: refused when they differ.
_DEFAULTS_ONLY: dict[str, dict[str, object]] = {
    "LOKR": {"decompose_both": False, "decompose_factor": -1},
    "VERA": {"vera_dropout": 0.0},
    "FOURIERFT": {"n_frequency_pattern": None},
    "OFT": {"r": 0, "coft": False, "block_share": False, "use_cayley_neumann": True, "num_cayley_neumann_terms": 5,
            "module_dropout": 0.0, "bias": "none"},
    "P_TUNING": {"encoder_reparameterization_type": "MLP"},
    # boft_n_butterfly_factor > 1 needs peft's fbd_cuda extension (without it peft itself falls back to 1); dropout
    # and bias change what is saved.
    "BOFT": {"boft_n_butterfly_factor": 1, "boft_dropout": 0.0, "bias": "none"},
    "MISS": {"init_weights": True, "miss_dropout": 0.0, "bias": "none"},  # "bat" / "mini": other tensors
    "BONE": {"init_weights": True, "bias": "none"},
    "C3A": {"bias": "none", "block_size_pattern": {}},
    "SHIRA": {"mask_type": "random"},
    "LN_TUNING": {"target_modules": None},
}


def _adapter_options(cfg: dict[str, object], where: str) -> dict[str, object]:
    """The option values of one adapter_config.json (its peft_type's method and settings)."""
    from vramcalc.core.peft_methods import BY_PEFT_TYPE

    peft_type = str(cfg.get("peft_type") or "LORA").upper()
    if peft_type not in _ADAPTER_KEYS:
        known = ", ".join(_ADAPTER_KEYS)
        raise PresetFileError(where, [f"peft_type {peft_type!r} is not modelled; vramcalc models {known}: pass the "
                                      "base model as MODEL with the nearest --method"])
    for key, default in _DEFAULTS_ONLY.get(peft_type, {}).items():
        if cfg.get(key, default) not in (default, None) or (default is None and cfg.get(key) is not None):
            raise PresetFileError(where, [f"{key} {cfg.get(key)!r}: vramcalc models {peft_type} with peft's default "
                                          f"({default!r}) only; pass the base model as MODEL and the options"])
    options: dict[str, object] = {"method": BY_PEFT_TYPE.get(peft_type, "lora")}
    layers = cfg.get("layers_to_transform")
    if layers not in (None, []):  # peft tuners_utils.py check_target_module_exists: only the listed layers' modules
        if peft_type != "LORA":
            raise PresetFileError(where, [f"layers_to_transform with peft_type {peft_type}: vramcalc models it for "
                                          "LoRA only; pass the base model as MODEL and the options"])
        from vramcalc.core import lora_layers

        try:
            options["lora_layers"] = lora_layers.text(lora_layers.parse(layers))
        except lora_layers.LayersError as e:
            raise PresetFileError(where, [f"layers_to_transform: {e}"]) from None
        pattern = cfg.get("layers_pattern")
        names = pattern if isinstance(pattern, list) else [] if pattern in (None, "") else [pattern]
        other = [str(n) for n in names if str(n) not in lora_layers.LAYERS_PATTERNS]
        if other:
            raise PresetFileError(where, [f"layers_pattern {other[0]!r:.40} is not modelled: --lora-layers counts "
                                          f"the decoder layers ({', '.join(lora_layers.LAYERS_PATTERNS)})"])
    for key, option in _ADAPTER_KEYS[peft_type].items():
        value = cfg.get(key)
        if isinstance(value, bool) and option == "prefix_projection":
            options[option] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            options[option] = value
    if peft_type == "TRAINABLE_TOKENS":
        indices, targets = cfg.get("token_indices"), cfg.get("target_modules")
        if isinstance(indices, list) and indices:
            options["trainable_tokens"] = len(indices)
        if targets not in (None, "embed_tokens", ["embed_tokens"], "wte", ["wte"]):
            raise PresetFileError(where, [f"target_modules {targets!r}: vramcalc models trainable tokens on the input "
                                          "embedding only"])
    if peft_type in _TARGETED:
        for key, option in (("target_modules", "lora_targets"), ("feedforward_modules", "ia3_feedforward")):
            targets = cfg.get(key)
            if isinstance(targets, list) and targets:
                options[option] = ",".join(str(t) for t in targets)
            elif targets == "all-linear":
                options[option] = "all-linear"
        if peft_type != "IA3":
            options.pop("ia3_feedforward", None)
    if peft_type == "LORA":  # peft tuners/lora/config.py LoraConfig: the variants that change memory
        if cfg.get("use_dora") is True:
            options["dora"] = True
        saved = cfg.get("modules_to_save")
        if isinstance(saved, list) and saved:
            options["modules_to_save"] = ",".join(str(x) for x in saved)
        tokens = cfg.get("trainable_token_indices")
        if isinstance(tokens, dict):  # {module name: [ids]}: only the input embedding (and a head tied to it)
            others = [k for k in tokens if str(k).rsplit(".", 1)[-1] not in ("embed_tokens", "wte", "word_embeddings")]
            if others:
                raise PresetFileError(where, [f"trainable_token_indices on {others[0]!r}: vramcalc models trainable "
                                              "tokens on the input embedding only"])
            tokens = [i for ids in tokens.values() if isinstance(ids, list) for i in ids]
        if isinstance(tokens, list) and tokens:
            options["lora_trainable_tokens"] = len(tokens)
        elif tokens not in (None, [], {}):
            raise PresetFileError(where, [f"trainable_token_indices {tokens!r}: expected a list of token ids"])
    return options


def read_adapter(folder: Path) -> tuple[str, dict[str, object], str]:
    """A PEFT adapter folder: its base model, the option values of adapter_config.json (its peft_type's method
    and settings), and a note."""
    from vramcalc.io.model_files import _read_json

    where = str(folder / "adapter_config.json")
    cfg = _read_json(folder / "adapter_config.json", "adapter_config.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("base_model_name_or_path"), str) \
            or not cfg["base_model_name_or_path"].strip():
        raise PresetFileError(where, ["no base_model_name_or_path: pass the base model as MODEL and the adapter's "
                                      "options"])
    options = _adapter_options(cfg, where)
    method = options["method"]
    shown = ", ".join(f"{k} {v}" for k, v in options.items() if k != "method")
    note = (f"{folder} is a PEFT adapter of {cfg['base_model_name_or_path']}: the base model is estimated; "
            f"the adapter's {'LoRA ' if method == 'lora' else ''}settings are {shown or 'not stated'} "
            f"(pass --method {method} and these to use them).")
    return cfg["base_model_name_or_path"], options, note


def adapter_options(ref: str, base_dir: Path | None = None) -> dict[str, object]:
    """The LoRA option values of MODEL when it is a PEFT adapter folder ({} otherwise), for the CLI to use
    under the command line's own options."""
    for candidate in ([base_dir / ref] if base_dir is not None else []) + [Path(os.path.expanduser(ref))]:
        if path_kind(candidate, "MODEL") == "dir" and path_kind(candidate / "adapter_config.json", "") == "file":
            return read_adapter(candidate)[1]
    return {}


def resolve_model(ref: str, base_dir: Path | None = None,
                  extra_dirs: Iterable[str | Path] = ()) -> tuple[ModelSpec, tuple[str, ...]]:
    """What MODEL names, the same in every command: an existing file or folder (relative to `base_dir`, a
    run file's folder, first), else a preset name / alias / Hugging Face id; with the reader's notes.

    A path wins over a preset of the same name (a clone of another model called `mistral-7b/` in the
    working directory is what the user points at), and the notes say so. A reference that looks like a
    path (ends in .json, starts with ./ ../ / or ~) but does not exist is an error naming the path.
    """
    from vramcalc.core.errors import UnknownPresetError, VramcalcError
    from vramcalc.io import presets

    # ~nobody stays as given (Path.expanduser raises)
    for candidate in ([base_dir / ref] if base_dir is not None else []) + [Path(os.path.expanduser(ref))]:
        kind = path_kind(candidate, "MODEL")
        if kind == "dir" and path_kind(candidate / "config.json", "config.json") == "missing":
            if path_kind(candidate / "adapter_config.json", "adapter_config.json") == "file":
                base, _, note = read_adapter(candidate)
                spec, notes = resolve_model(base, candidate, extra_dirs)
                return spec, (note, *notes)
            snapshot = cache_snapshot(candidate)
            if snapshot is not None:
                spec, notes = resolve_model(str(snapshot), None, extra_dirs)
                return spec, (f"{candidate} is a Hugging Face cache entry: read snapshot {snapshot.name}", *notes)
            raise PresetFileError(str(candidate), [
                "a folder with no config.json (nor adapter_config.json, nor a hub cache's snapshots/); pass a "
                "Hugging Face model folder, its config.json, or a preset name (see: vramcalc models)"])
        if kind != "missing":
            from vramcalc.io.model_files import load_model_path  # the reader, only for a path

            loaded = load_model_path(candidate)
            notes = loaded.notes
            if not looks_like_path(ref, exists=False) and presets.models(extra_dirs).get(presets.normalize(ref)):
                notes = (f"{ref!r} is a file or folder here and also a preset name: read {candidate} "
                         "(pass the preset from another directory to use it)", *notes)
            return loaded.spec, notes
    if looks_like_path(ref, exists=False):
        raise PresetFileError(ref, ["no such file or folder; pass a config.json, a model folder holding one, "
                                    "or a preset name (see: vramcalc models)"])
    try:
        return presets.find_model(ref, extra_dirs), ()
    except UnknownPresetError as e:
        if ref.count("/") == 1 and not ref.startswith("."):
            for hub in hub_cache_dirs():  # a hub id with no preset, downloaded before: read offline
                snapshot = cache_snapshot(hub / ("models--" + ref.replace("/", "--")))
                if snapshot is not None and path_kind(snapshot / "config.json", "config.json") == "file":
                    spec, notes = resolve_model(str(snapshot), None, extra_dirs)
                    return spec, (f"{ref}: read from the Hugging Face cache, {snapshot}", *notes)
        derived = DERIVED_IDS.get(ref.rsplit("/", 1)[-1].lower())
        if derived is not None:
            base, why = derived
            return presets.find_model(base, extra_dirs), (
                f"{ref} has no preset: estimated as {base} ({why}); pass its config.json for the exact model",)
        size = _size_token(ref)
        if size is not None:  # only a preset of the size it states (never the 671B DeepSeek-V3 for a 7B distill)
            e.suggestions = [s for s in e.suggestions if _size_token(s) == size]
            if not e.suggestions:
                e = UnknownPresetError("model", ref, [])
        if "/" in ref and not e.suggestions:
            raise VramcalcError(
                f"model {ref!r} is a Hugging Face hub id with no preset and vramcalc works offline; download its "
                "config.json and pass its path (MODEL or `model:` ./config.json), or add a preset (see: vramcalc "
                "models)") from None
        raise e from None
