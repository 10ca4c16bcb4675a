#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (tests/fuzz.c), made from scratch rather than copied model files:
    /usr/bin/python3 tests/make_fuzz_corpus.py build/fuzz
writes build/fuzz/seed-<target>/ for checkpoint, tokenizer, encode, chat and cli.
"""
import json, os, struct, subprocess, sys
import numpy as np

def main(out):
    here = os.path.dirname(os.path.abspath(__file__))
    export = os.path.join(here, "..", "export.py")
    seeds = {k: os.path.join(out, f"seed-{k}") for k in ("checkpoint", "tokenizer", "encode", "chat", "cli")}
    for d in seeds.values():
        os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    # checkpoints: a tiny v0 (unshared classifier, GQA), v1, v2, and v3 at several types via export.py
    d, h, L, nh, nkv, vocab, seq = 16, 32, 1, 4, 2, 264, 8  # vocab: room for the byte-level tokenizer
    kv = d // nh * nkv
    tensors = [(vocab, d), (L, d), (L, d, d), (L, kv, d), (L, kv, d), (L, d, d), (L, d), (L, h, d), (L, d, h), (L, h, d), (d,),
               (seq, d // nh), (vocab, d)]
    body = b"".join(rng.standard_normal(s, dtype=np.float32).tobytes() for s in tensors)
    v0 = os.path.join(seeds["checkpoint"], "v0.bin")
    open(v0, "wb").write(struct.pack("<7i", d, h, L, nh, nkv, -vocab, seq) + body)
    hdr = struct.pack("<Ii7iB", 0x616B3432, 1, d, h, L, nh, nkv, vocab, seq, 0)
    open(os.path.join(seeds["checkpoint"], "v1.bin"), "wb").write(hdr + b"\0" * (256 - len(hdr)) + body[:64])
    hdr2 = struct.pack("<Ii7iBi", 0x616B3432, 2, d, h, L, nh, nkv, vocab, seq, 1, 8)
    open(os.path.join(seeds["checkpoint"], "v2.bin"), "wb").write(hdr2 + b"\0" * (256 - len(hdr2)) + body[:200])
    # a tiny byte-level tokenizer.json, exported to run.c's format, to embed and to fuzz on its own
    sys.path.insert(0, os.path.join(here, ".."))
    from export import gpt2_byte_decoder
    vocab_json = {c: b for c, b in sorted(gpt2_byte_decoder().items(), key=lambda kv: kv[1])}
    merges = [["h", "e"], ["l", "l"], ["he", "ll"]]
    for a, b in merges:
        vocab_json[a + b] = len(vocab_json)
    tok = {"model": {"type": "BPE", "vocab": vocab_json, "merges": merges}, "added_tokens": [
        {"id": len(vocab_json), "content": "<|im_start|>", "special": True}, {"id": len(vocab_json) + 1, "content": "<|im_end|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "decoder": {"type": "ByteLevel"}}
    tdir = os.path.join(out, "tok-json")
    os.makedirs(tdir, exist_ok=True)
    json.dump(tok, open(os.path.join(tdir, "tokenizer.json"), "w"))
    json.dump({"chat_template": "<|im_start|>", "eos_token": "<|im_end|>"}, open(os.path.join(tdir, "tokenizer_config.json"), "w"))
    q = lambda *a: subprocess.run([sys.executable, export, *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    q(os.path.join(seeds["tokenizer"], "bytelevel.bin"), "--tokenizer", os.path.join(tdir, "tokenizer.json"))
    # a llama2.c tokenizer.bin: specials, 256 byte tokens, a few pieces
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)] + [b" ", b"a", b"b", b" a", b"ab"]
    blob = struct.pack("<i", 6) + b"".join(struct.pack("<fi", -float(i), len(p)) + p for i, p in enumerate(pieces))
    open(os.path.join(seeds["tokenizer"], "llama2c.bin"), "wb").write(blob)
    for dtype in ("fp32", "q8_0", "q4_0", "bf16"):
        q(os.path.join(seeds["checkpoint"], f"v3_{dtype}.bin"), "--llama2c", v0, "--dtype", dtype, "--group-size", "8",
          "--tokenizer", os.path.join(tdir, "tokenizer.json"))
    texts = ["Hello, world!", "I believe the meaning of life is", "你好，世界。用C语言写推理引擎", "\U0001F600\U0001F44D\U0001F3FD",
             "  many   spaces\t\ttabs\n\nnewlines", "don't I'M we'll 12345 3.14", "<|im_start|>user\n<s>[INST]",
             "\xff\xfe invalid \xc3 utf8", "a" * 300]
    for i, t in enumerate(texts):
        data = t.encode("utf-8", "surrogateescape") if not t.startswith("\xff") else b"\xff\xfe invalid \xc3 utf8"
        open(os.path.join(seeds["encode"], f"text{i}"), "wb").write(data)
        open(os.path.join(seeds["chat"], f"chat{i}"), "wb").write(b"You are helpful.\n" + data)
    args = [["model.bin", "-t", "0.5", "-p", "0.9", "-n", "10"], ["model.bin", "-m", "chat", "-y", "sys", "--template", "chatml"],
            ["model.bin", "-t", "-1"], ["model.bin", "-T", "4", "-s", "123", "-z", "tok.bin"], ["-h"], ["model.bin", "-q"]]
    for i, a in enumerate(args):
        open(os.path.join(seeds["cli"], f"args{i}"), "wb").write(b"\0".join(x.encode() for x in a))
    print(f"wrote seeds under {out}", file=sys.stderr)

if __name__ == "__main__":
    main(sys.argv[1])
