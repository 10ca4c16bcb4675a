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
    seeds = {k: os.path.join(out, f"seed-{k}") for k in ("checkpoint", "tokenizer", "encode", "chat", "cli", "gguf")}
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
    write_gguf_seeds(seeds["gguf"], rng)
    print(f"wrote seeds under {out}", file=sys.stderr)


def write_gguf_seeds(folder, rng):
    """Tiny GGUF models (dim 32, one layer) in the 32-value block types, with a SentencePiece or a
    byte-level tokenizer, written by tests/gguf_ref.py (an independent writer)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gguf_ref as g
    d, h = 32, 64
    spm_tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)] + ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789ABCDE"]
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in printable]
    spelling = {b: chr(b) for b in printable} | {b: chr(256 + k) for k, b in enumerate(others)}  # GPT-2's byte-level
    for i, (ty, arch) in enumerate([(8, "llama"), (2, "llama"), (3, "qwen2"), (6, "llama"), (7, "llama"), (20, "qwen2"), (1, "llama")]):
        meta = {"general.architecture": arch, f"{arch}.embedding_length": d, f"{arch}.feed_forward_length": h,
                f"{arch}.block_count": 1, f"{arch}.attention.head_count": 4, f"{arch}.attention.head_count_kv": 2,
                f"{arch}.context_length": 16, f"{arch}.attention.layer_norm_rms_epsilon": 1e-5, f"{arch}.rope.freq_base": 10000.0}
        if i % 2 == 0:
            vocab = 300
            meta.update({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": spm_tokens[:vocab],
                         "tokenizer.ggml.scores": np.arange(vocab, dtype=np.float32) * -1.0,
                         "tokenizer.ggml.token_type": np.array([2, 3, 3] + [6] * 256 + [1] * (vocab - 259), dtype=np.int32),
                         "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})
        else:
            toks = [spelling[b] for b in range(256)] + ["ab", "cd", "<think>", "<|im_start|>", "<|im_end|>"]
            vocab = len(toks)
            meta.update({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": toks,
                         "tokenizer.ggml.token_type": np.array([1] * 258 + [4, 3, 3], dtype=np.int32),
                         "tokenizer.ggml.merges": ["a b", "c d"], "tokenizer.ggml.eos_token_id": vocab - 1,
                         "tokenizer.chat_template": "<|im_start|>You are Qwen, created by Alibaba Cloud"})
        shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,), "blk.0.attn_norm.weight": (d,), "blk.0.ffn_norm.weight": (d,),
                  "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (d // 2, d), "blk.0.attn_v.weight": (d // 2, d),
                  "blk.0.attn_output.weight": (d, d), "blk.0.ffn_gate.weight": (h, d), "blk.0.ffn_up.weight": (h, d),
                  "blk.0.ffn_down.weight": (d, h)}
        if arch == "qwen2":
            shapes.update({"blk.0.attn_q.bias": (d,), "blk.0.attn_k.bias": (d // 2,), "blk.0.attn_v.bias": (d // 2,)})
        tensors = {}
        for name, shape in shapes.items():
            x = rng.standard_normal(shape).astype(np.float32) * 0.1
            t = 0 if len(shape) == 1 else ty
            tensors[name] = (t, list(reversed(shape)), g.quantize(t, x.reshape(-1)) if t else x.tobytes())
        g.write_gguf(os.path.join(folder, f"model{i}.gguf"), meta, tensors)

if __name__ == "__main__":
    main(sys.argv[1])
