"""Tiny randomly initialised captioning VLMs saved like hub folders (model + processor), built fully offline.

Both use the packaged MiniLM BERT WordPiece tokenizer (BLIP's own tokenizer is a BERT one; InstructBLIP's Q-Former
tokenizer is too). Special-token ids in the configs are set to that tokenizer's [CLS]/[SEP]/[PAD], so the real
processor -> generate -> decode path runs without any downloaded file.
"""

from __future__ import annotations

from pathlib import Path

_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def _tokenizer():
    from transformers import AutoTokenizer

    from ovt.caption.cleaning import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def build_tiny_blip(out: Path) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = _tokenizer()
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        sep_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=_VISION, projection_dim=32))
    model.save_pretrained(out)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(out)
    return Path(out)


def build_tiny_instructblip(out: Path, num_query_tokens: int = 4) -> Path:
    """InstructBLIP (the paper's captioner family) with a 2-layer T5 language model, as Flan-T5-XL is a T5."""
    import torch
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        T5Config,
    )

    qtok, tok = _tokenizer(), _tokenizer()
    # the processor adds the "<image>" placeholder token to the LM tokenizer; the config must point at its id
    processor = InstructBlipProcessor(
        BlipImageProcessor(size={"height": 32, "width": 32}), tok, qtok, num_query_tokens=num_query_tokens
    )
    t5 = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    qformer = dict(
        vocab_size=len(qtok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        encoder_hidden_size=32,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    cfg = InstructBlipConfig(
        vision_config=_VISION,
        qformer_config=qformer,
        text_config=t5.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    InstructBlipForConditionalGeneration(cfg).save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)
