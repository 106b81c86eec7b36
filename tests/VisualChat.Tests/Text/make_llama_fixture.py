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
cases = []
for text in texts:
    ids = sp.encode(text)
    cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})

# Prompts with the added token "<image>" (id 32000 once added after the 32000-piece vocabulary), split on it the way HF's
# slow LlamaTokenizer does. legacy=True: each text segment is SentencePiece-encoded on its own (dummy prefix each time).
# legacy=False: later segments are encoded without the dummy prefix; HF does that as encode("<unk>" + segment) minus the
# "<unk>" pieces, reproduced here.
IMAGE_ID = 32000
unk_len = len(sp.encode("<unk>"))
def with_image(text, legacy):
    ids = []
    for k, segment in enumerate(text.split("<image>")):
        if k > 0:
            ids.append(IMAGE_ID)
        if segment == "":
            continue
        if legacy or k == 0:
            ids += sp.encode(segment)
        else:
            ids += sp.encode("<unk>" + segment)[unk_len:]
    return ids
prompts = [
    "### Image 1:\n<image>\n### Question: What is in the image?\n### Answer:",
    "### Image 1:\n<image>\n### Image 2:\n<image>\n### Question: Compare them.\n### Answer: The first",
    "<image>\nDescribe this image.",
    "Look: <image> and <image><image> done",
]
added = [{"text": t, "legacy_ids": with_image(t, True), "non_legacy_ids": with_image(t, False)} for t in prompts]
json.dump({"model": "llama2-tokenizer/tokenizer.model", "cases": cases, "image_token_prompts": added},
          sys.stdout, ensure_ascii=False, indent=1)
