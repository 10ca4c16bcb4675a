#!/usr/bin/env python3
"""Random-weight checkpoints for `make bench`, cached under build/bench/ (never committed):
    /usr/bin/python3 tests/bench_models.py SHAPE DTYPE      prints the checkpoint's path
A Hugging Face-style folder with bf16 safetensors is written once per shape, then export.py makes
each dtype from it, so the benchmark also exercises the real converter at scale.
"""
import json, os, struct, subprocess, sys
import numpy as np

SHAPES = {  # dim, hidden, layers, heads, kv heads, vocab, context, tied embeddings
    "110m": (768, 2048, 12, 12, 12, 32000, 1024, True),    # stories110M
    "1.1b": (2048, 5632, 22, 32, 4, 32000, 2048, False),   # TinyLlama-1.1B
    "15m": (288, 768, 6, 6, 6, 32000, 256, True),          # stories15M
}
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


def main(shape, dtype):
    if shape not in SHAPES:
        sys.exit(f"bench_models.py: unknown shape {shape} (known: {', '.join(SHAPES)})")
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
