"""CLAP scores for takes (paper §3.2): Text CLAP = cos(take, prompt), Audio CLAP = cos(take, input).

Pure computation: arrays and strings in, :class:`~engine.result.Scores` out; no file I/O besides loading
weights. The scorer reuses the checkpoint's own :class:`transformers.ClapFeatureExtractor`, so the mel
front-end, padding and truncation are those CLAP was trained with; the only thing added is determinism,
because a score that changes between two calls on the same take cannot pick the best η.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import InputError, ModelUnavailable
from engine.result import Scores

DEFAULT_CLAP = "laion/clap-htsat-unfused"
TEXT_MAX_TOKENS = 77  # LAION-CLAP trains its RoBERTa tower on 77-token captions
CROP_SEED = 0  # fixed seed for the extractor's random crops (clips longer than its window)

_NP_RANDOM_LOCK = threading.Lock()


class ClapScorer:
    """A CLAP model (text + audio towers) with its tokenizer and feature extractor, used in inference only."""

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, device: str | torch.device = "cpu",
                 batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.device = torch.device(device)
        self.batch_size = batch_size

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path_or_id: str = DEFAULT_CLAP, device: str | torch.device = "cpu",
             local_files_only: bool = True, cache_dir: str | None = None) -> ClapScorer:
        """Load a real CLAP checkpoint (a hub id in the local cache, or a folder).

        ``local_files_only`` defaults to True so scoring never waits on the network; a missing model raises
        :class:`ModelUnavailable` with the fix in one line.
        """
        looks_like_path = Path(path_or_id).expanduser().is_absolute() or path_or_id.startswith((".", "~"))
        if looks_like_path and not Path(path_or_id).expanduser().is_dir():
            raise ModelUnavailable(f"CLAP model folder not found: {path_or_id}; point at the folder that "
                                   f"holds config.json and the weights of {DEFAULT_CLAP} (or another CLAP).")
        source = str(Path(path_or_id).expanduser()) if looks_like_path else path_or_id
        try:
            from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

            kwargs: dict[str, Any] = {"local_files_only": local_files_only, "cache_dir": cache_dir}
            model = ClapModel.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            feature_extractor = ClapFeatureExtractor.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            if looks_like_path:
                fix = (f"put a CLAP checkpoint there (on a connected machine: `hf download {DEFAULT_CLAP} "
                       f"--local-dir <folder>`, then copy the folder over)")
            else:
                fix = (f"download it on a connected machine (`hf download {path_or_id}`) and copy the "
                       f"Hugging Face cache over, or pass the folder that holds it")
            message = f"CLAP model '{path_or_id}' could not be loaded ({reason}); {fix}."
            raise ModelUnavailable(message) from err
        return cls(model.to(device), tokenizer, feature_extractor, device)

    @classmethod
    def from_components(cls, model: Any, tokenizer: Any, feature_extractor: Any,
                        device: str | torch.device = "cpu") -> ClapScorer:
        """Wrap a ClapModel someone else owns (AudioLDM 2 carries one) without copying it.

        The model is moved to ``device`` only if it is elsewhere, and its train/eval mode is restored after
        each call, so sharing it with the pipeline has no side effects.
        """
        first = next(model.parameters(), None)
        if first is not None and first.device != torch.device(device):
            model = model.to(device)
        return cls(model, tokenizer, feature_extractor, device)

    @classmethod
    def tiny(cls, seed: int = 0) -> ClapScorer:
        """A tiny random-weight CLAP taking the real unfused checkpoint's inputs; offline, deterministic.

        The feature extractor is configured like laion/clap-htsat-unfused (48 kHz, 64 Slaney mels
        50 Hz-14 kHz, hop 480, 10 s window, ``rand_trunc`` + ``repeatpad``), so tests exercise the real
        front-end. HTSAT cannot shrink its image: ``spec_size`` must be 256 (freq_ratio 4 folds 1001 frames ×
        64 mels into 256 × 256), so speed comes from 16 × 16 patches (256 tokens), two one-block stages
        (16 × 16 then 8 × 8 tokens, window 8) and 16/32-wide features.
        """
        from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

        from engine.models.tiny_parts import byte_roberta_tokenizer

        tokenizer = byte_roberta_tokenizer(model_max_length=TEXT_MAX_TOKENS)
        text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=TEXT_MAX_TOKENS + 3,  # RoBERTa positions start at 2
                              bos_token_id=0, pad_token_id=1, eos_token_id=2)
        audio = ClapAudioConfig(spec_size=256, num_mel_bins=64, patch_size=16, patch_stride=(16, 16),
                                window_size=8, depths=(1, 1), num_attention_heads=(2, 4),
                                patch_embeds_hidden_size=16, hidden_size=32, enable_fusion=False)
        config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ClapModel(config)
        feature_extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48_000, hop_length=480,
                                                 max_length_s=10, fft_window_size=1024, frequency_min=50,
                                                 frequency_max=14_000, top_db=None, truncation="rand_trunc",
                                                 padding="repeatpad")
        return cls(model.eval(), tokenizer, feature_extractor, "cpu")

    # ------------------------------------------------------------------ embeddings

    @property
    def sample_rate(self) -> int:
        """The rate CLAP's mel front-end expects (48 kHz for LAION checkpoints)."""
        return int(self.feature_extractor.sampling_rate)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised projected text embeddings, (len(texts), D), on the CPU in float32."""
        if not texts:
            raise InputError("No text to embed.")
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=TEXT_MAX_TOKENS,
                                return_tensors="pt")
        with self._inference():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
        return _normalised(out)

    def embed_audio(self, waves: list[np.ndarray], sample_rate: int) -> torch.Tensor:
        """L2-normalised projected audio embeddings, (len(waves), D), on the CPU in float32.

        Each wave is (frames,) or (frames, channels); channels are averaged to mono and the result resampled
        to the extractor's rate with soxr. Features are extracted one clip at a time (so a clip's embedding
        never depends on its batch neighbours), then the model runs in batches of ``batch_size``.
        """
        if not waves:
            raise InputError("No audio to embed.")
        feats, longer = [], []
        for wave in waves:
            f = self._features(self._mono_at_model_rate(wave, sample_rate))
            feats.append(f["input_features"])
            longer.append(f["is_longer"])
        dtype = next(self.model.parameters()).dtype
        out = []
        for i in range(0, len(feats), self.batch_size):
            x = torch.cat(feats[i:i + self.batch_size]).to(self.device, dtype=dtype)
            is_longer = torch.cat(longer[i:i + self.batch_size]).to(self.device)
            with self._inference():
                out.append(_normalised(self.model.get_audio_features(input_features=x, is_longer=is_longer)))
        return torch.cat(out)

    # ------------------------------------------------------------------ scores

    def score(self, takes: list[np.ndarray], sample_rate: int, reference: np.ndarray,
              prompt: str) -> list[Scores]:
        """One :class:`Scores` per take, in order: text = cos(take, prompt) (Eq. 3), audio =
        cos(take, reference) (Eq. 4).

        The reference is embedded in the same batch as the takes. For clips longer than the CLAP window, every
        clip of a given length gets the same crop (see :meth:`_features`), so a take aligned with the input is
        compared with the same stretch of the input.
        """
        if not takes:
            return []
        audio = self.embed_audio([*takes, reference], sample_rate).double()
        text = self.embed_text([prompt]).double()
        take_emb, ref_emb = audio[:-1], audio[-1]
        text_cos = (take_emb @ text[0]).clamp(-1.0, 1.0).tolist()
        audio_cos = (take_emb @ ref_emb).clamp(-1.0, 1.0).tolist()
        return [Scores(text=t, audio=a) for t, a in zip(text_cos, audio_cos, strict=True)]

    # ------------------------------------------------------------------ internals

    def _mono_at_model_rate(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        import soxr

        x = np.asarray(wave, dtype=np.float64)
        if x.ndim == 2:
            x = x.mean(axis=1)
        elif x.ndim != 1:
            raise InputError(f"Audio must be (frames,) or (frames, channels), got shape {x.shape}.")
        if x.size == 0:
            raise InputError("Cannot score an empty clip.")
        if not np.all(np.isfinite(x)):
            raise InputError("Audio to score contains NaN or infinite samples.")
        if sample_rate <= 0:
            raise InputError(f"Invalid sample rate {sample_rate}.")
        if sample_rate != self.sample_rate:
            x = soxr.resample(x, sample_rate, self.sample_rate, quality="HQ")
        return np.ascontiguousarray(x, dtype=np.float64)

    def _features(self, wave: np.ndarray) -> dict[str, torch.Tensor]:
        """The extractor's own features for one 48 kHz mono clip, made deterministic.

        ``rand_trunc`` (unfused checkpoints) crops a clip longer than ``nb_max_samples`` at a random offset;
        we draw that offset from ``np.random.default_rng(CROP_SEED)`` and crop before calling the extractor,
        so the offset depends only on the clip's length. ``fusion`` (fused checkpoints) draws its three mel
        crops (and, for short clips, the "longer" flag) from NumPy's global RNG: we seed it with ``CROP_SEED``
        for the call and restore its state afterwards. Shorter clips are repeat-padded by the extractor, as
        in training.
        """
        fe = self.feature_extractor
        max_samples = int(fe.nb_max_samples)
        if fe.truncation == "rand_trunc" and wave.shape[0] > max_samples:
            offset = int(np.random.default_rng(CROP_SEED).integers(0, wave.shape[0] - max_samples + 1))
            wave = wave[offset:offset + max_samples]
        with _seeded_numpy_random(CROP_SEED):
            out = fe([wave], sampling_rate=self.sample_rate, return_tensors="pt")
        return {"input_features": out["input_features"], "is_longer": out["is_longer"]}

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """no_grad + eval for the call, then the model's previous mode (it may be shared with a pipeline)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            if was_training:
                self.model.train()


def _normalised(out: Any) -> torch.Tensor:
    """L2-normalised output of get_*_features (a tensor in transformers 4.x, pooler_output in 5.x)."""
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return F.normalize(emb.float(), dim=-1).cpu()


@contextlib.contextmanager
def _seeded_numpy_random(seed: int) -> Iterator[None]:
    """Seed NumPy's global RNG for a block and put the caller's state back afterwards."""
    with _NP_RANDOM_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)
