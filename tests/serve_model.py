"""A tiny random-weight Llama and a tokenizer, built and saved locally for the serve lane.

Nothing is downloaded: the tokenizer is a word-level vocabulary made here with the `tokenizers`
library (words w0..wN, split on whitespace), wrapped as a transformers fast tokenizer, and the
model is `LlamaForCausalLM` from a small `LlamaConfig` with seeded random weights. vLLM serves
the folder as it would any Hugging Face checkpoint, and `vllm bench serve` tokenizes its random
prompts with the same tokenizer. Run as a script: `python tests/serve_model.py OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

VOCAB_WORDS = 500
SPECIAL = ("<unk>", "<s>", "</s>")


def build(out: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *(f"w{i}" for i in range(VOCAB_WORDS))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decode joins words with spaces: round trips
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.model_max_length = 1024
    fast.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: a size every vLLM attention backend supports
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
