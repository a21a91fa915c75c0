"""A character-level tokenizer (one token per character) for small from-scratch TrOCR models.

Built with the `tokenizers` library and saved as a standard `tokenizer.json`, so the MLX processor,
transformers' `PreTrainedTokenizerFast` and the exported HF checkpoint all read the same file.
Special tokens follow RoBERTa's order (<s>=0, <pad>=1, </s>=2, <unk>=3), like TrOCR's own vocab.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, processors

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
BOS, PAD, EOS, UNK = range(4)

# Spanish and English letters, digits and the punctuation found on forms.
DEFAULT_CHARSET = (
    string.ascii_letters
    + string.digits
    + "áéíóúüñÁÉÍÓÚÜÑ"
    + " .,;:-_/#@$%&*()+='\"!?¿¡°ºª<>[]"
)


def build_char_tokenizer(charset: str = DEFAULT_CHARSET) -> Tokenizer:
    chars = list(dict.fromkeys(charset))  # unique, order kept
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        if ch not in vocab:
            vocab[ch] = len(vocab)
    # BPE with no merges splits a string into its characters; unknown characters become <unk>.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=False))
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)]
    )
    return tok


def save_char_tokenizer(directory, charset: str = DEFAULT_CHARSET) -> Path:
    """Write tokenizer.json plus the small configs transformers needs to load it as a fast tokenizer."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer(charset)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
        "model_max_length": 512, "clean_up_tokenization_spaces": False,
    }, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}, indent=2))
    return directory / "tokenizer.json"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a character-level tokenizer.json for TrOCR models.")
    ap.add_argument("--out", required=True, help="output folder (tokenizer.json + configs)")
    ap.add_argument("--charset-file", help="text file whose characters form the vocabulary (default: Spanish+English form charset)")
    args = ap.parse_args(argv)
    charset = Path(args.charset_file).read_text(encoding="utf-8").replace("\n", "") if args.charset_file else DEFAULT_CHARSET
    path = save_char_tokenizer(args.out, charset)
    print(f"wrote {path} ({build_char_tokenizer(charset).get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
