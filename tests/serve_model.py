"""A tiny random-weight Llama and a tokenizer, built and saved locally for the serve lane.

Nothing is downloaded: the tokenizer is a word-level vocabulary made here with the `tokenizers`
library (words w0..wN, split on whitespace), wrapped as a transformers fast tokenizer, and the
model is `LlamaForCausalLM` from a small `LlamaConfig` with seeded random weights. vLLM serves
the folder as it would any Hugging Face checkpoint, and `vllm bench serve` tokenizes its random
prompts with the same tokenizer. Run as a script: `python tests/serve_model.py OUT_DIR [SHAPE]`.

Shapes: `tiny` (the lane's functional check, 0.2M parameters) and `small`, the harness's `small`
preset (ppharness/core/workload.py: vocabulary 8192, dim 256, 4 layers, MLP 768) with 4 heads of 64
and 2 KV heads instead of 8 of 32 and 4 (vLLM's CPU attention kernels take head sizes of 64 and
up): the same weights' bytes per token, served (configs/runs/serve-cpu-small.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL = ("<unk>", "<s>", "</s>")
# shape -> (vocabulary incl. the 3 special tokens, hidden, MLP, layers, heads, KV heads)
SHAPES = {"tiny": (503, 128, 256, 2, 2, 1), "small": (8192, 256, 768, 4, 4, 2)}


def build(out: Path, seed: int = 0, shape: str = "tiny") -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size, hidden, mlp, layers, heads, kv_heads = SHAPES[shape]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *(f"w{i}" for i in range(vocab_size - len(SPECIAL)))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decode joins words with spaces: round trips
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.model_max_length = 1024
    fast.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,  # head_dim 64: a size every vLLM attention backend supports
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), shape=sys.argv[2] if len(sys.argv) > 2 else "tiny"))
