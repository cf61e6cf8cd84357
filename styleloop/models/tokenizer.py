"""The `tiny` preset's tokenizer: a WordPiece vocabulary trained locally on a bundled corpus.

No download is needed; the same corpus and settings always give the same vocabulary.
"""

from __future__ import annotations

from importlib.resources import files

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

PAD, UNK, BOS, EOS, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, MASK]


def corpus_lines() -> list[str]:
    text = files("styleloop.models").joinpath("data/tiny_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_tiny_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """Train a lower-casing WordPiece tokenizer that wraps texts as ``[CLS] … [SEP]``."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        # Digits and brackets, so that the tiny LLM can write a citation such as "[2]".
        initial_alphabet=list("[]0123456789"),
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, bos), (EOS, eos)],
    )
    return tokenizer
