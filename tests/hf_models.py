#!/usr/bin/env python3
"""Tiny random Hugging Face-style models and their reference logits, for test_all.c.

    /usr/bin/python3 tests/hf_models.py OUT_DIR [FAMILY=TOKENIZER_DIR ...]     (FAMILY: llama2, llama3, qwen)

Writes OUT_DIR/<name>/ with config.json, safetensors (written here, not with the safetensors
package) and the tokenizer files of the real model family when their folder is given, plus
OUT_DIR/<name>/reference.f32: the logits (n_tokens, vocab) of a numpy forward pass that follows the
Hugging Face modelling code (rotate-half RoPE, llama3 rope scaling, q/k/v biases, tied embeddings),
written independently of export.py, for the token ids in reference.json.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

MODELS = {
    # Llama 2 / TinyLlama shape: GQA, unshared classifier, fp32 safetensors
    "llama": dict(arch="LlamaForCausalLM", dim=48, hidden=128, layers=2, heads=6, kv_heads=2, vocab=32000,
                  theta=10000.0, eps=1e-5, tied=False, bias=False, rope_scaling=None, dtype="F32", shards=1,
                  tokenizer="llama2"),
    # Llama 3.2 shape: rope scaling (a small original context so the scaling shows), theta 500000,
    # tied embeddings, bf16 safetensors
    "llama3": dict(arch="LlamaForCausalLM", dim=32, hidden=96, layers=2, heads=4, kv_heads=1, vocab=128256,
                   theta=500000.0, eps=1e-5, tied=True, bias=False, dtype="BF16", shards=1, tokenizer="llama3",
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    # Qwen2.5 shape: q/k/v biases, tied embeddings, theta 1e6, vocab padded past the tokenizer,
    # fp16 safetensors in two shards with an index
    "qwen2": dict(arch="Qwen2ForCausalLM", dim=32, hidden=80, layers=2, heads=4, kv_heads=2, vocab=151936,
                  theta=1000000.0, eps=1e-6, tied=True, bias=True, rope_scaling=None, dtype="F16", shards=2,
                  tokenizer="qwen"),
}
TOKENS = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 3118, 2501, 263, 931]


def write_safetensors(path, tensors, dtype):
    np_dtype = {"F32": np.float32, "F16": np.float16}.get(dtype)
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        if dtype == "BF16":
            data = (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            data = np.ascontiguousarray(x, np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def stored(x, dtype):
    """The values as the checkpoint stores them (what the reference must use)."""
    if dtype == "BF16":
        return (np.ascontiguousarray(x, np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    return x.astype(np.float32)


def make_weights(c, rng):
    d, h, hs = c["dim"], c["hidden"], c["dim"] // c["heads"]
    kv = hs * c["kv_heads"]
    w = {"model.embed_tokens.weight": rng.standard_normal((c["vocab"], d)) * 0.5,
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(d)}
    if not c["tied"]:
        w["lm_head.weight"] = rng.standard_normal((c["vocab"], d)) * 0.5
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        w[p + "self_attn.q_proj.weight"] = rng.standard_normal((d, d)) / np.sqrt(d)
        w[p + "self_attn.k_proj.weight"] = rng.standard_normal((kv, d)) / np.sqrt(d)
        w[p + "self_attn.v_proj.weight"] = rng.standard_normal((kv, d)) / np.sqrt(d)
        w[p + "self_attn.o_proj.weight"] = rng.standard_normal((d, d)) / np.sqrt(d)
        w[p + "mlp.gate_proj.weight"] = rng.standard_normal((h, d)) * 1.5 / np.sqrt(d)
        w[p + "mlp.up_proj.weight"] = rng.standard_normal((h, d)) * 1.5 / np.sqrt(d)
        w[p + "mlp.down_proj.weight"] = rng.standard_normal((d, h)) * 1.5 / np.sqrt(h)
        if c["bias"]:
            w[p + "self_attn.q_proj.bias"] = 0.3 * rng.standard_normal(d)
            w[p + "self_attn.k_proj.bias"] = 0.3 * rng.standard_normal(kv)
            w[p + "self_attn.v_proj.bias"] = 0.3 * rng.standard_normal(kv)
    return {k: stored(v.astype(np.float32), c["dtype"]) for k, v in w.items()}


def inv_freq(c, hs):
    inv = 1.0 / (c["theta"] ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
    rs = c["rope_scaling"]
    if rs:  # transformers' _compute_llama3_parameters
        low_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
        high_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > low_wl, inv / rs["factor"], inv)
        smooth = (rs["original_max_position_embeddings"] / wavelen - rs["low_freq_factor"]) / (
            rs["high_freq_factor"] - rs["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / rs["factor"] + smooth * scaled
        medium = (wavelen >= high_wl) & (wavelen <= low_wl)
        inv = np.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def reference_logits(c, w, tokens):
    """The whole sequence at once with a causal mask, in float64."""
    T, d, hs = len(tokens), c["dim"], c["dim"] // c["heads"]
    W = {k: v.astype(np.float64) for k, v in w.items()}
    x = W["model.embed_tokens.weight"][tokens]
    ang = np.outer(np.arange(T), inv_freq(c, hs))
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], c["eps"])
        q, k, v = (h @ W[p + f"self_attn.{n}_proj.weight"].T + (W[p + f"self_attn.{n}_proj.bias"] if c["bias"] else 0)
                   for n in "qkv")
        q = q.reshape(T, c["heads"], hs).transpose(1, 0, 2)
        k = k.reshape(T, c["kv_heads"], hs).transpose(1, 0, 2)
        v = v.reshape(T, c["kv_heads"], hs).transpose(1, 0, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = c["heads"] // c["kv_heads"]
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(T, d)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], c["eps"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    head = W["model.embed_tokens.weight"] if c["tied"] else W["lm_head.weight"]
    return rmsnorm(x, W["model.norm.weight"], c["eps"]) @ head.T


def main(out, tokenizer_dirs):
    for name, c in MODELS.items():
        rng = np.random.default_rng(sum(map(ord, name)))
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        cfg = {"architectures": [c["arch"]], "hidden_size": c["dim"], "intermediate_size": c["hidden"],
               "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
               "num_key_value_heads": c["kv_heads"], "vocab_size": c["vocab"], "max_position_embeddings": 256,
               "rms_norm_eps": c["eps"], "rope_theta": c["theta"], "rope_scaling": c["rope_scaling"],
               "tie_word_embeddings": c["tied"], "hidden_act": "silu", "torch_dtype": c["dtype"].lower()}
        if c["arch"] == "Qwen2ForCausalLM":
            cfg.update(use_sliding_window=False, sliding_window=131072)
        json.dump(cfg, open(os.path.join(folder, "config.json"), "w"), indent=1)
        w = make_weights(c, rng)
        names = list(w)
        if c["shards"] == 1:
            write_safetensors(os.path.join(folder, "model.safetensors"), w, c["dtype"])
        else:
            half = len(names) // 2
            index = {}
            for s, part in enumerate((names[:half], names[half:])):
                fname = f"model-{s + 1:05d}-of-00002.safetensors"
                write_safetensors(os.path.join(folder, fname), {n: w[n] for n in part}, c["dtype"])
                index.update({n: fname for n in part})
            json.dump({"weight_map": index}, open(os.path.join(folder, "model.safetensors.index.json"), "w"))
        d = tokenizer_dirs.get(c["tokenizer"])
        for f in ("tokenizer.json", "tokenizer_config.json"):
            if d and os.path.exists(os.path.join(d, f)):
                shutil.copy(os.path.join(d, f), folder)
        logits = reference_logits(c, w, TOKENS)
        logits.astype("<f4").tofile(os.path.join(folder, "reference.f32"))
        json.dump({"tokens": TOKENS, "vocab": c["vocab"]}, open(os.path.join(folder, "reference.json"), "w"))
        print(f"wrote {folder}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:]))
