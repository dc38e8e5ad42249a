"""Check a model folder before a session: configs parse, weight files are whole, and tensor shapes agree with the
configs — read from file headers only, so a 5 GB model is checked in a second and nothing is run.

A safetensors file is an 8-byte little-endian header length, a JSON header (name → dtype, shape, byte offsets)
and the data; a truncated copy shows as data offsets past the end of the file. PyTorch ``.bin`` files are zip
archives whose central directory sits at the end, so a truncated one fails to open.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
NO_WEIGHTS = {"scheduler", "tokenizer", "tokenizer_2", "feature_extractor"}
MAX_HEADER = 100_000_000


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Report:
    folder: Path
    family: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(what, ok, detail))
        return ok

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


class BadWeights(Exception):
    """A weight file that is not whole or not what it claims to be."""


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensors a safetensors file declares, after checking that every byte they point at is in the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BadWeights(f"{size} bytes: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise BadWeights(f"header length {n} does not fit in the {size}-byte file (truncated or not safetensors)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise BadWeights(f"unreadable header: {exc}") from None
    header.pop("__metadata__", None)
    end = 0
    for name, t in header.items():
        try:
            itemsize = DTYPE_BYTES[t["dtype"]]
            begin, stop = t["data_offsets"]
            shape = t["shape"]
        except (KeyError, TypeError, ValueError):
            raise BadWeights(f"tensor {name}: malformed header entry") from None
        if stop - begin != math.prod(shape) * itemsize:
            raise BadWeights(f"tensor {name}: {stop - begin} bytes for shape {shape} {t['dtype']}")
        end = max(end, stop)
    if 8 + n + end != size:
        raise BadWeights(f"the header describes {8 + n + end} bytes but the file has {size} "
                         f"({'truncated' if size < 8 + n + end else 'trailing bytes'})")
    return header


def torch_zip_ok(path: Path) -> None:
    """A PyTorch zip checkpoint opens and holds its pickle (the tensors are not read)."""
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                raise BadWeights("no data.pkl inside: not a PyTorch checkpoint")
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadWeights(f"cannot open as a PyTorch checkpoint ({exc}): truncated or corrupt") from None


def _text_cfg(cfg: dict) -> dict:
    return cfg.get("text_config") or cfg


def shape_problems(cls: str, cfg: dict, tensors: dict[str, list[int]]) -> list[str]:
    """Where the weights disagree with the config, for the components aiedit loads (checked key by key)."""
    out: list[str] = []

    def expect(key: str, dim: int, want, label: str) -> None:
        shape = tensors.get(key)
        if shape is None or want is None:
            return
        if len(shape) <= dim or shape[dim] != want:
            out.append(f"{key} has shape {shape}, but config.json's {label} = {want} (dimension {dim})")

    if cls == "UNet2DConditionModel":
        blocks = cfg.get("block_out_channels") or [None]
        expect("conv_in.weight", 1, cfg.get("in_channels"), "in_channels")
        expect("conv_in.weight", 0, blocks[0], "block_out_channels[0]")
        expect("conv_out.weight", 0, cfg.get("out_channels"), "out_channels")
    elif cls == "AutoencoderKL":
        blocks = cfg.get("block_out_channels") or [None]
        latent = cfg.get("latent_channels")
        expect("encoder.conv_in.weight", 1, cfg.get("in_channels"), "in_channels")
        expect("encoder.conv_in.weight", 0, blocks[0], "block_out_channels[0]")
        expect("decoder.conv_out.weight", 0, cfg.get("out_channels"), "out_channels")
        expect("post_quant_conv.weight", 0, latent, "latent_channels")
        expect("quant_conv.weight", 0, 2 * latent if latent else None, "2 × latent_channels")
    elif cls == "AceStep":  # ACE-Step's DiT as published: the patchify conv against the DiT's widths
        expect("decoder.proj_in.1.weight", 0, cfg.get("hidden_size"), "hidden_size")
        expect("decoder.proj_in.1.weight", 1, cfg.get("in_channels"), "in_channels")
        expect("decoder.proj_out.1.weight", 1, cfg.get("audio_acoustic_hidden_dim"), "audio_acoustic_hidden_dim")
    elif cls == "SpeechT5HifiGan":
        expect("conv_pre.weight", 1, cfg.get("model_in_dim"), "model_in_dim")
        expect("conv_pre.weight", 0, cfg.get("upsample_initial_channel"), "upsample_initial_channel")
    else:  # transformers text models: the token embedding table against vocab_size × hidden size
        for key in tensors:
            if not key.endswith(("word_embeddings.weight", "embed_tokens.weight", "shared.weight", "wte.weight")):
                continue
            c = _text_cfg(cfg) if key.startswith("text_model.") or "text_config" not in cfg else cfg
            if key.startswith("encoder.") and isinstance(cfg.get("encoder"), dict):
                c = cfg["encoder"]  # encoder-decoder configs (T5Gemma, SA3's text encoder) nest the encoder's own
            width = c.get("hidden_size") or c.get("d_model") or c.get("n_embd")
            expect(key, 1, width, "hidden size")
            expect(key, 0, c.get("vocab_size"), "vocab_size")
    return out


def _read_json(report: Report, path: Path, what: str) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        report.add(what, False, f"{path.name} is missing")
        return None
    except (OSError, ValueError) as exc:
        report.add(what, False, f"{path.name} is unreadable: {str(exc)[:120]}")
        return None
    return data if isinstance(data, dict) else {}


def check_weights(report: Report, folder: Path, what: str, cls: str, cfg: dict) -> None:
    """Every weight file of one component: whole, and (safetensors) consistent with its config."""
    st = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("*.bin"))
    if not st and not bins:
        report.add(what, False, f"no weights (*.safetensors or *.bin) in {folder}")
        return
    for idx in folder.glob("*.index.json"):  # sharded weights: every shard the index names must be here
        try:
            shards = set(json.loads(idx.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError) as exc:
            report.add(f"{what}/{idx.name}", False, f"unreadable: {exc}")
            return
        lost = sorted(n for n in shards if not (folder / n).is_file())
        if lost:
            report.add(f"{what}/{idx.name}", False, f"missing shard(s): {', '.join(lost)}")
            return
    tensors: dict[str, list[int]] = {}
    for f in st:
        try:
            tensors.update({k: v["shape"] for k, v in safetensors_header(f).items()})
        except (BadWeights, OSError) as exc:
            report.add(f"{what}/{f.name}", False, str(exc))
            return
    for f in bins if not st else []:
        try:
            torch_zip_ok(f)
        except BadWeights as exc:
            report.add(f"{what}/{f.name}", False, str(exc))
            return
    problems = shape_problems(cls, cfg, tensors)
    if problems:
        report.add(what, False, "; ".join(problems))
        return
    size = sum(f.stat().st_size for f in (st or bins))
    detail = f"{len(tensors)} tensors" if st else f"{len(bins)} PyTorch file(s)"
    report.add(what, True, f"{detail}, {size / 1e6:.1f} MB, shapes match {cls or 'config'}")


def verify_diffusers(report: Report, folder: Path) -> None:
    index = _read_json(report, folder / "model_index.json", "model_index.json")
    if index is None:
        return
    report.add("model_index.json", True, index.get("_class_name", "?"))
    for comp, value in index.items():
        if comp.startswith("_") or not isinstance(value, list) or value[1] is None:
            continue
        sub = folder / comp
        if not sub.is_dir():
            report.add(comp, False, f"folder {comp}/ is missing")
            continue
        if comp in NO_WEIGHTS or comp.startswith(("tokenizer", "feature_extractor")):
            files = [p for p in sub.iterdir() if p.suffix in (".json", ".txt", ".model")]
            bad = [p.name for p in files if p.suffix == ".json" and _read_json(Report(sub, None), p, p.name) is None]
            report.add(comp, bool(files) and not bad,
                       f"unreadable {', '.join(bad)}" if bad else f"{len(files)} file(s)" if files else "empty")
            continue
        cfg = _read_json(report, sub / "config.json", f"{comp}/config.json")
        if cfg is None:
            continue
        cls = cfg.get("_class_name") or (cfg.get("architectures") or [value[1]])[0]
        check_weights(report, sub, comp, cls, cfg)


def verify_tango(report: Report, folder: Path) -> None:
    from engine.models.inventory import tango_text_encoder

    for name in ("main_config.json", "vae_config.json"):
        cfg = _read_json(report, folder / name, name)
        if cfg is not None:
            report.add(name, True, f"{len(cfg)} keys")
            if name == "vae_config.json" and "scale_factor" not in cfg:
                report.add(name, False, "no scale_factor: download the model again")
    for name in ("pytorch_model_main.bin", "pytorch_model_vae.bin"):
        path = folder / name
        if not path.is_file():
            report.add(name, False, "missing")
            continue
        try:
            torch_zip_ok(path)
            report.add(name, True, f"{path.stat().st_size / 1e6:.1f} MB")
        except BadWeights as exc:
            report.add(name, False, str(exc))
    te = tango_text_encoder(folder)
    report.add("FLAN-T5 tokenizer", te is not None,
               str(te) if te else "google/flan-t5-large is not cached: `aiedit models pull tango` fetches it")


def verify_ace_dit(report: Report, folder: Path) -> None:
    """An ACE-Step DiT folder as published (config.json, model.safetensors, silence_latent.pt); its shared VAE and
    text encoder are verified as folders of their own (``aiedit models verify`` lists them)."""
    cfg = _read_json(report, folder / "config.json", "config.json")
    if cfg is None:
        return
    report.add("config.json", True, f"ACE-Step DiT {cfg.get('model_version') or ''}: {cfg.get('num_hidden_layers')} "
               f"layers of {cfg.get('hidden_size')}".replace("  ", " "))
    check_weights(report, folder, "DiT weights", "AceStep", cfg)
    silence = folder / "silence_latent.pt"
    if not silence.is_file():
        report.add("silence_latent.pt", False, "missing (the learned silence latent the model conditions on)")
        return
    try:
        torch_zip_ok(silence)
        report.add("silence_latent.pt", True, f"{silence.stat().st_size / 1e6:.1f} MB")
    except BadWeights as exc:
        report.add("silence_latent.pt", False, str(exc))


def verify_folder(folder: Path) -> Report:
    """All checks for one model folder (diffusers layout, a TANGO snapshot or an ACE-Step DiT folder)."""
    from engine.models.inventory import family_of

    folder = Path(folder).expanduser()
    report = Report(folder, None)
    if not folder.is_dir():
        report.add("folder", False, f"{folder} does not exist")
        return report
    report.family = family_of(folder)
    if (folder / "model_index.json").is_file():
        verify_diffusers(report, folder)
    elif report.family == "tango":
        verify_tango(report, folder)
    elif report.family == "ace-step":
        verify_ace_dit(report, folder)
    else:
        report.add("layout", False, "neither model_index.json (AudioLDM, AudioLDM 2) nor main_config.json + "
                   "vae_config.json (TANGO)")
    return report
