#!/usr/bin/python3
"""Produces llama2_sentencepiece_ids.json: SentencePiece's own ids for varied strings (run with Debian's
/usr/bin/python3 and python3-sentencepiece). Usage: make_llama_fixture.py path/to/tokenizer.model > llama2_sentencepiece_ids.json"""
import json, sys
import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
texts = [
    "", " ", "  ", "a", "Hello world", "Hello world!", " Hello", "  Hello  world  ", "Hello ", "trailing spaces   ",
    "multiple    spaces   inside", "\n", "\n\n", "line one\nline two\n", "\tTabbed\ttext\t", "\n\n### Answer:",
    "### Human: What is in the image?\n### Assistant:", "!!!!!!", "!!!", "??!!..", "### Image 1:\n<image>\n",
    "### Image 1:\n<image>\n### Image 2:\n<image>\n### Question: What differs between the two images?\n### Answer:",
    "<s> literal special tokens </s>", "Emoji 😀🎉👍🏽 test", "👨‍👩‍👧‍👦", "日本語のテキストです。", "中文分词测试，你好世界！",
    "한국어 문장입니다", "مرحبا بالعالم", "Привет, мир!", "Ελληνικά γράμματα", "שלום עולם", "नमस्ते दुनिया", "1234567",
    "3.14159 and 2,718,281", "Phone: +1 (555) 010-9999", "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }", "https://example.com/path?query=1&other=two#frag",
    "user@example.org", "MiXeD CaSe and snake_case_and_camelCase", "ÀÉÎÕÜ àéîõü ñ ç ß", "Zero\u200bwidth and non\u00a0breaking",
    "\u0000 control \u0007 chars \u001b", "\r\nwindows\r\nnewlines", "A \"quoted\" 'string' with `backticks`",
    "▁already▁escaped▁", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "          ten leading",
    "The quick brown fox jumps over the lazy dog. " * 3,
    ("DeepSpeed-VisualChat is designed to handle multi-image, multi-round dialogues. It uses a frozen visual encoder, "
     "a trainable projection layer and a frozen language model, combined through multi-modal causal attention. "
     "Images 🖼️ may appear anywhere; answers should be concise,\nprecise, and grounded in what is visible.\n\n"
     "Numbers like 42, 1e-5 and 0x1F, URLs like http://a.b/c, and code such as `x = y[0] + 1;` all occur."),
]
out = []
for text in texts:
    ids = sp.encode(text)
    out.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
