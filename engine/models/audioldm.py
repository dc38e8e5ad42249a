"""AudioLDM (cvssp/audioldm-*): a UNet conditioned on one pooled CLAP text vector.

The pipeline feeds the L2-normalised 512-d CLAP ``text_embeds`` to the UNet as ``class_labels`` (a
"simple_projection" class embedding, concatenated) with no cross-attention context, so e_opt is one vector per
clip. The ``tiny`` model is the same classes at toy widths with random weights, built offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from engine.models.base import AudioModel, Conditioning


class AudioLDM(AudioModel):
    """Adapter over the components of diffusers' ``AudioLDMPipeline``."""

    def __init__(self, *, name: str, unet, vae, vocoder, text_encoder, tokenizer, scheduler,
                 max_seconds: float = 10.24, default_steps: int = 50, default_guidance: float = 2.5) -> None:
        self.name = name
        self.unet, self.vae, self.vocoder = unet, vae, vocoder
        self.text_encoder, self.tokenizer, self.scheduler = text_encoder, tokenizer, scheduler
        self.max_seconds = max_seconds
        self.default_steps, self.default_guidance = default_steps, default_guidance
        self._settle()

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Conditioning:
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        out = self.text_encoder(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))
        emb = F.normalize(out.text_embeds, dim=-1).to(self.dtype)
        return Conditioning({"class_labels": emb})

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=None, class_labels=cond.tensors["class_labels"],
                         return_dict=False)[0]


def load_audioldm(path_or_id: str, *, name: str | None = None, local_files_only: bool = True) -> AudioLDM:
    """Load from a hub id (already in the local cache unless downloads are allowed) or a diffusers folder."""
    from diffusers import AudioLDMPipeline, DDIMScheduler

    pipe = AudioLDMPipeline.from_pretrained(path_or_id, local_files_only=local_files_only)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return AudioLDM(name=name or Path(path_or_id).name, unet=pipe.unet, vae=pipe.vae, vocoder=pipe.vocoder,
                    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, scheduler=scheduler,
                    max_seconds=10.24, default_steps=50, default_guidance=2.5)


def tiny_audioldm(seed: int = 0, *, max_seconds: float = 10.24) -> AudioLDM:
    """The AudioLDM classes at toy widths with random weights: the offline model of tests and the demo.

    Attention sits only at the lowest UNet resolution (CPU time is dominated by attention over many frames).
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    from engine.models.tiny_parts import byte_roberta_tokenizer, tiny_ddim_config, tiny_vae, tiny_vocoder

    tokenizer = byte_roberta_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, projection_dim=32, max_position_embeddings=tokenizer.model_max_length + 4,
            bos_token_id=0, pad_token_id=1, eos_token_id=2))
        unet = UNet2DConditionModel(
            sample_size=None, in_channels=8, out_channels=8, block_out_channels=(16, 32, 64), layers_per_block=1,
            norm_num_groups=8, attention_head_dim=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=(16, 32, 64), class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=32, class_embeddings_concat=True)
    return AudioLDM(name="tiny", unet=unet, vae=tiny_vae(seed), vocoder=tiny_vocoder(seed),
                    text_encoder=text_encoder, tokenizer=tokenizer,
                    scheduler=DDIMScheduler(**tiny_ddim_config()), max_seconds=max_seconds,
                    default_steps=25, default_guidance=2.5)
