"""Offline building blocks for tiny models: a word-level tokenizer over the toy world's words."""

from __future__ import annotations

_WORDS = (
    "a the an and of on in with to is are red green blue yellow circle square triangle shape moves rests "
    "left right up down black white gray background video image scene camera slowly quickly bright dark "
    "small large describe this detail objects setting style sentences"
)
VOCAB = _WORDS.split()
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "<video>"]


def word_tokenizer():
    """A fast word-level tokenizer over VOCAB with pad/bos/eos/unk and the <image>/<video> media tokens.

    Text is lowercased first (the vocabulary is lowercase): "A red circle" and "a red circle" are the same tokens,
    as cleaned-up training captions start with a capital and typed prompts often do not."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(VOCAB)], trainers.WordLevelTrainer(special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
