#!/usr/bin/env python3
"""Phi-3 / Phi-3.5-mini's tokenizer files from Llama 2's tokenizer.json (tests/llama_tokenizer_js.py writes it):
Phi-3 keeps Llama 2's 32000 tokens and adds its chat tokens at 32000..32010, as microsoft/Phi-3.5-mini-instruct's
tokenizer.json lists them; tokenizer_config.json carries the chat template named on the command line
(tests/vectors/templates/*.jinja: the real Phi-3.5-mini and Phi-4-mini templates).

    python3 tests/phi3_tokenizer.py LLAMA2_TOKENIZER_JSON TEMPLATE.jinja OUT_DIR
"""
import json, os, sys

ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
         "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def main(src, template, out):
    tj = json.load(open(src, encoding="utf-8"))
    tj["added_tokens"] = [x for x in tj.get("added_tokens", []) if x["id"] < 32000]
    for i, text in enumerate(ADDED):
        tj["added_tokens"].append({"id": 32000 + i, "content": text, "single_word": False, "lstrip": False,
                                   "rstrip": text != "<|endoftext|>", "normalized": False, "special": True})
    os.makedirs(out, exist_ok=True)
    json.dump(tj, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump({"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "add_bos_token": False,
               "chat_template": open(template, encoding="utf-8").read()},
              open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8"))


if __name__ == "__main__":
    main(*sys.argv[1:])
