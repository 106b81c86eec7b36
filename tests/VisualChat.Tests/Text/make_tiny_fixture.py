#!/usr/bin/python3
"""Produces tiny_model_sentencepiece_ids.json from the model TinyModelTests writes (default
/tmp/visualchat-tiny-tokenizer/tokenizer.model): python sentencepiece's ids for a few strings."""
import json, sys
import sentencepiece as spm

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/visualchat-tiny-tokenizer/tokenizer.model"
sp = spm.SentencePieceProcessor(model_file=path)
texts = ["the cat and the dog", "that hat", "aaaaaaa", "aaaa", "!!!!!!", "!!!!!", "hello world", "  leading and trailing  ",
         "line\nbreak\ttab", "héllo wörld ☃", "日本", "<s> </s> <unk>", "", " ", "an at", "tthhee"]
cases = []
for text in texts:
    ids = sp.encode(text)
    cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids), "pieces": sp.encode(text, out_type=str)})
json.dump({"vocab_size": sp.vocab_size(), "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
