#!/usr/bin/env python3
"""Random-weight checkpoints for `make bench`, cached under build/bench/ (never committed):
    /usr/bin/python3 tests/bench_models.py SHAPE DTYPE      prints the checkpoint's path
A Hugging Face-style folder with bf16 safetensors is written once per shape, then export.py makes
each dtype from it, so the benchmark also exercises the real converter at scale. The GGUF dtypes
(in capitals: GGUF_PRESETS, named as llama.cpp's presets) are quantized by tests/gguf_ref.py from
random weights, with llama-quantize's choice of Q6_K tensors (the classifier below 8 bits, some attn_v
and ffn_down for the _M presets) and otherwise one type throughout (so "Q2_K" and "Q3_K" are those
types throughout, where llama.cpp's Q2_K and Q3_K_S presets put a few more bits on attn_v and
ffn_down), and carry a placeholder SentencePiece vocabulary so that llama.cpp loads them too
(tests/llamacpp_bench.mjs times llama.cpp on the same files).
"""
import json, os, struct, subprocess, sys
import numpy as np

SHAPES = {  # dim, hidden, layers, heads, kv heads, vocab, context, tied embeddings
    "110m": (768, 2048, 12, 12, 12, 32000, 1024, True),    # stories110M
    "1.1b": (2048, 5632, 22, 32, 4, 32000, 2048, False),   # TinyLlama-1.1B
    "15m": (288, 768, 6, 6, 6, 32000, 256, True),          # stories15M
    "1b-long": (2048, 8192, 16, 32, 8, 128256, 131072, True),  # Llama-3.2-1B (make bench-long)
}
GGUF_PRESETS = {"F32": 0, "F16": 1, "Q8_0": 8, "Q4_0": 2, "Q6_K": 14, "Q4_K_M": 12,  # the base ggml type of each
                "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q5_K_M": 13, "IQ4_NL": 20, "IQ4_XS": 23, "Q2_K": 10, "Q3_K": 11}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bench")


def write_hf(folder, shape):
    d, h, L, nh, nkv, vocab, ctx, tied = shape
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    kv = d // nh * nkv
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, d)
    for l in range(L):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (h, d), p + "mlp.up_proj.weight": (h, d),
                       p + "mlp.down_proj.weight": (d, h)})
    header, offset = {}, 0
    for name, s in shapes.items():
        n = int(np.prod(s)) * 2
        header[name] = {"dtype": "BF16", "shape": list(s), "data_offsets": [offset, offset + n]}
        offset += n
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    tmp = os.path.join(folder, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for name, s in shapes.items():
            x = (1.0 + 0.1 * rng.standard_normal(s, dtype=np.float32)) if name.endswith("norm.weight") \
                else 0.02 * rng.standard_normal(s, dtype=np.float32)
            f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    os.replace(tmp, os.path.join(folder, "model.safetensors"))
    json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": d, "intermediate_size": h,
               "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
               "vocab_size": vocab, "max_position_embeddings": ctx, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "tie_word_embeddings": tied}, open(os.path.join(folder, "config.json"), "w"))


def write_gguf(out, shape, preset):
    """A llama-architecture GGUF of this shape in one of llama.cpp's presets (GGUF_PRESETS)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gguf_ref as g
    d, h, L, nh, nkv, vocab, ctx, tied = shape
    kv = d // nh * nkv
    base = GGUF_PRESETS[preset]
    meta = {"general.architecture": "llama", "llama.embedding_length": d, "llama.feed_forward_length": h, "llama.block_count": L,
            "llama.attention.head_count": nh, "llama.attention.head_count_kv": nkv, "llama.context_length": ctx,
            "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
            # placeholder vocabulary: <unk> <s> </s>, the 256 byte tokens, then distinct pieces
            "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581t%d" % i for i in range(vocab - 259)],
            "tokenizer.ggml.scores": np.array([0.0] * 259 + [-float(i) for i in range(vocab - 259)], dtype=np.float32),
            "tokenizer.ggml.token_type": np.array([2, 3, 3] + [6] * 256 + [1] * (vocab - 259), dtype=np.int32)}
    rng = np.random.default_rng(1)
    tensors = {}

    def add(name, rows, cols, ty):
        x = 0.02 * rng.standard_normal((rows, cols), dtype=np.float32) if cols > 1 else (1.0 + 0.1 * rng.standard_normal(rows, dtype=np.float32))
        tensors[name] = (ty, [cols, rows] if cols > 1 else [rows], g.quantize(ty, x.reshape(-1)) if ty else x.tobytes())

    more_bits = lambda i: i < L // 8 or i >= 7 * L // 8 or (i - L // 8) % 3 == 2  # llama-quantize's use_more_bits
    add("token_embd.weight", vocab, d, base)
    for i in range(L):
        q6 = preset.endswith("_M") and more_bits(i)
        for name, rows, cols, ty in [("attn_norm", d, 1, 0), ("attn_q", d, d, base), ("attn_k", kv, d, base), ("attn_v", kv, d, 14 if q6 else base),
                                     ("attn_output", d, d, base), ("ffn_norm", d, 1, 0), ("ffn_gate", h, d, base), ("ffn_up", h, d, base),
                                     ("ffn_down", d, h, 14 if q6 else base)]:
            add(f"blk.{i}.{name}.weight", rows, cols, ty)
    add("output_norm.weight", d, 1, 0)
    if not tied:
        add("output.weight", vocab, d, base if preset in ("F32", "F16", "Q8_0") else 14)
    tmp = out + ".tmp"
    g.write_gguf(tmp, meta, tensors)
    os.replace(tmp, out)


def main(shape, dtype):
    if shape not in SHAPES:
        sys.exit(f"bench_models.py: unknown shape {shape} (known: {', '.join(SHAPES)})")
    if dtype in GGUF_PRESETS:
        out = os.path.join(ROOT, f"{shape}.{dtype}.gguf")
        if not os.path.exists(out):
            os.makedirs(ROOT, exist_ok=True)
            print(f"bench: writing {out}", file=sys.stderr)
            write_gguf(out, SHAPES[shape], dtype)
        print(os.path.abspath(out))
        return
    out = os.path.join(ROOT, f"{shape}.{dtype}.bin")
    if not os.path.exists(out):
        folder = os.path.join(ROOT, f"{shape}-hf")
        if not os.path.exists(os.path.join(folder, "config.json")):
            print(f"bench: writing random {shape} weights to {folder}", file=sys.stderr)
            write_hf(folder, SHAPES[shape])
        print(f"bench: exporting {out}", file=sys.stderr)
        export = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export.py")
        subprocess.run([sys.executable, export, out, "--hf", folder, "--dtype", dtype], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(os.path.abspath(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
