#!/usr/bin/python3
"""Produces tiny_model_sentencepiece_ids.json from the models TinyModelTests writes when run with
VISUALCHAT_TINY_TOKENIZER_OUT=/tmp/visualchat-tiny-tokenizer (into that folder as <variant>.model): python
sentencepiece's ids for a few strings. Usage: make_tiny_fixture.py [folder]."""
import json, sys
import sentencepiece as spm

folder = sys.argv[1] if len(sys.argv) > 1 else "/tmp/visualchat-tiny-tokenizer"
texts = ["the cat and the dog", "that hat", "aaaaaaa", "aaaa", "!!!!!!", "!!!!!", "hello world", "  leading and trailing  ",
         "line\nbreak\ttab", "héllo wörld ☃", "日本", "<s> </s> <unk>", "", " ", "an at", "tthhee"]
texts += ["a   lot    of     spaces", "   ", "xyz qq", "x☃y"]
out = {}
for variant in ["llama_like", "squeeze_whitespace", "no_byte_fallback"]:
    sp = spm.SentencePieceProcessor(model_file=f"{folder}/{variant}.model")
    cases = []
    for text in texts:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids), "pieces": sp.encode(text, out_type=str)})
    out[variant] = {"vocab_size": sp.vocab_size(), "cases": cases}
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
