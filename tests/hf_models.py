#!/usr/bin/env python3
"""Tiny random Hugging Face-style models and their reference logits, for test_all.c.

    /usr/bin/python3 tests/hf_models.py OUT_DIR [FAMILY=TOKENIZER_DIR ...]
        (FAMILY: llama2, llama3, qwen, qwen3, phi3: its tokenizer.json and tokenizer_config.json are copied
        into the models of that tokenizer family)

Writes OUT_DIR/<name>/ with config.json, safetensors (written here, not with the safetensors package) and the
tokenizer files of the real model family when their folder is given, plus OUT_DIR/<name>/reference.f32: the logits
(n_tokens, vocab) of a float64 numpy forward pass that follows the Hugging Face modelling code, written independently
of export.py, for the token ids in reference.json ({"tokens", "vocab", "what": a line on the shape}).

MODELS (the 18 TOKENS, whole-sequence causal forward): Llama 2, Llama 3.2 and Qwen2.5 shapes (rotate-half RoPE,
llama3 rope scaling, q/k/v biases, tied embeddings). ARCH_MODELS (40 tokens each, one token per forward call with a
KV cache): Qwen3 (q/k norms, head_dim of its own), Gemma 2 (scaled embeddings, (1 + w) sandwich norms, GeGLU,
soft-capping, alternate sliding layers), Gemma 3 text (q/k norms, 5 local : 1 global layers, local/global RoPE,
linear scaling on the global ones), Phi-4-mini and Phi-3.5-mini (fused qkv and gate_up, partial rotary, longrope)
and Mistral (sliding window on every layer).
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


# ---------------------------------------------------------------------------------------------------------------
# More architectures. They live in ARCH_MODELS, not MODELS: tests/test_export.py walks MODELS with make_weights
# and a per-name table. Each one is written from the Hugging Face transformers modelling code named in its comment
# (read in the huggingface/transformers repository; commits given where the stored copy named one), independently
# of export.py and run.c. Forward pass: float64 on the stored (dtype-rounded) weights, one token per call with a
# KV cache, as generate() feeds a model after the first token (see decode_logits).
#
# Sliding windows (masking_utils.py @ 2ccc6cae, sliding_window_overlay + causal_mask_function; the same rule as
# Gemma2's older tril(..., diagonal=-sliding_window) mask): the query at position i sees key j iff
# i - sliding_window < j <= i, i.e. the last sliding_window positions including itself.
ARCH_MODELS = {
    # Qwen3 (modeling_qwen3.py @ 9ee3f431, transformers ~4.56; configuration_qwen3.py @ 1f3ae2b3): per-head
    # RMSNorm q_norm/k_norm (weight * x / rms, weights of head_dim) on q and k after the projection and before
    # RoPE, no q/k/v bias, head_dim its own key (heads * head_dim = 64 != hidden 32), tied, bf16.
    "qwen3": dict(family="qwen3", arch="Qwen3ForCausalLM", dim=32, hidden=64, layers=2, heads=4, kv_heads=2,
                  head_dim=16, vocab=151936, theta=1000000.0, eps=1e-6, tied=True, dtype="BF16", tokenizer="qwen3",
                  tokens=dict(seed=3, lo=0, hi=151643, first=None)),
    # Gemma 2 (modeling_gemma2.py @ 9a80143c, transformers ~4.49, and @ 006e8693; configuration keys of
    # google/gemma-2-2b): embeddings times normalizer = torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype),
    # so sqrt(24) = 4.899 becomes 4.90625 in bf16 (round to nearest even; truncation would give 4.875); RMSNorm
    # x / rms * (1 + w) with w stored raw; input/post_attention/pre_feedforward/post_feedforward norms (the post
    # norms act on the block's output before the residual add); GeGLU down(gelu_tanh(gate) * up); scores *
    # query_pre_attn_scalar**-0.5 (32, not head_dim 16), then cap * tanh(score / cap) before the mask; logits
    # cap * tanh(logits / cap). Layer i slides iff i is even (sliding_window if not bool(layer_idx % 2); later
    # versions: layer_types "sliding_attention" if (i + 1) % 2). The caps are smaller than the real 50/30 so the
    # tanh matters with random weights: 5 on the scores (q_proj scaled up too; 50 would move the logits by 0.2%,
    # under bf16's tolerance, 5 by 15%) and 10 on the logits (30 would be 7%, 10 is 38%, 3 saturates every top
    # logit near 3 and leaves no clear argmax).
    "gemma2": dict(family="gemma2", arch="Gemma2ForCausalLM", dim=24, hidden=64, layers=4, heads=4, kv_heads=2,
                   head_dim=16, vocab=32000, theta=10000.0, eps=1e-6, tied=True, dtype="BF16", tokenizer=None,
                   query_pre_attn_scalar=32, attn_logit_softcapping=5.0, final_logit_softcapping=10.0,
                   sliding_window=8, n_tokens=150, tokens=dict(seed=8, lo=3, hi=32000, first=2)),
    # Gemma 3 text (modeling_gemma3.py @ f14d0cbc, transformers ~4.56; configuration_gemma3.py @ d98ac17c and the
    # later layer_types rule): Gemma 2's block without soft-capping (both null), plus q_norm/k_norm with Gemma's
    # (1 + w) over head_dim before RoPE; the embedding scale is Gemma3TextScaledWordEmbedding's
    # embed_scale.to(weight.dtype) (bf16, the same 4.90625). layer_types: "sliding_attention" if (i + 1) %
    # sliding_window_pattern else "full_attention", so with 7 layers and pattern 6 layer 5 is global and layers
    # 0-4 and 6 slide. Sliding layers use rotary_emb_local: a deep copy of the config with rope_theta =
    # rope_local_base_freq (10000) and rope_scaling {"rope_type": "default"}; global layers use rope_theta 1e6
    # with the linear scaling (inv_freq / factor, no attention factor). query_pre_attn_scalar equals head_dim here
    # (Gemma 2's shows another value): a GGUF has no key for it, and llama.cpp assumes head_dim.
    "gemma3": dict(family="gemma3", arch="Gemma3ForCausalLM", dim=24, hidden=48, layers=7, heads=4, kv_heads=2,
                   head_dim=16, vocab=32000, theta=1000000.0, local_theta=10000.0, eps=1e-6, tied=True,
                   dtype="BF16", tokenizer=None, query_pre_attn_scalar=16, sliding_window=8,
                   sliding_window_pattern=6, rope_scaling={"rope_type": "linear", "factor": 8.0},
                   n_tokens=150, tokens=dict(seed=8, lo=3, hi=32000, first=2)),
    # Phi-4-mini shape (modeling_phi3.py @ 43c2b481 and modular_phi3.py @ 2b6c089d, transformers ~4.56;
    # modeling_rope_utils.py @ ef468064 for _compute_longrope_parameters; dynamic_rope_update for the switch):
    # fused qkv_proj split q | k | v (rows [0, H*hd), [H*hd, H*hd + KV*hd), the rest); fused gate_up_proj split
    # by chunk(2): gate = first half, up = second half, down(up * silu(gate)). partial_rotary_factor 0.75: the
    # rotary dim is int(head_dim * 0.75) = 12, the first 12 dims of each head rotate, rotate_half acting on those
    # 12 alone (pairs (j, j + 6)), dims 12..15 pass through. longrope: inv_freq = 1 / (ext * theta**(2i/12)) with
    # ext = long_factor when seq_len > original_max_position_embeddings else short_factor, and cos and sin both
    # times attention_factor = sqrt(1 + ln(max_position_embeddings / original) / ln(original)) (factor 96/24 = 4).
    # Untied head (the real Phi-4-mini ties it), bf16.
    # generate(): Phi3ForCausalLM.prepare_inputs_for_generation (modular_phi3.py) drops the cache once, at the step
    # where the input reaches original_max_position_embeddings + 1 tokens, and recomputes the whole prefix with
    # the long factors. So row p (p + 1 > 24) is a cache-less forward of tokens[:p + 1] with the long factors
    # throughout (decode_logits(..., all_long=True)'s last row), and rows before it use the short ones.
    "phi3": dict(family="phi3", arch="Phi3ForCausalLM", dim=64, hidden=96, layers=2, heads=4, kv_heads=2,
                 head_dim=16, partial_rotary_factor=0.75, vocab=32064, theta=10000.0, eps=1e-5, tied=False,
                 dtype="BF16", tokenizer="phi3", original_max_position_embeddings=24, max_position_embeddings=96,
                 rope_scaling={"long_factor": [1.0, 1.25, 2.5, 4.75, 9.5, 16.0],
                               "short_factor": [1.0, 1.0, 1.0625, 1.125, 1.375, 1.5], "type": "longrope"},
                 tokens=dict(seed=36, lo=3, hi=32000, first=1)),
    # Phi-3.5-mini shape: the same code with the whole head rotating (no partial_rotary_factor key), the same
    # longrope (8 factors per list), no GQA, fp16.
    "phi3_full": dict(family="phi3", arch="Phi3ForCausalLM", dim=64, hidden=96, layers=2, heads=4, kv_heads=4,
                      head_dim=16, vocab=32064, theta=10000.0, eps=1e-5, tied=False, dtype="F16", tokenizer="phi3",
                      original_max_position_embeddings=24, max_position_embeddings=96,
                      rope_scaling={"long_factor": [1.0, 1.125, 1.75, 3.0, 5.5, 9.0, 14.5, 20.0],
                                    "short_factor": [1.0, 1.0, 1.0, 1.0625, 1.125, 1.25, 1.375, 1.5],
                                    "type": "longrope"},
                      tokens=dict(seed=37, lo=3, hi=32000, first=1)),
    # Mistral 7B v0.1 shape (modular_mistral.py @ 9db58abd, transformers ~4.56): Llama's block, and
    # create_sliding_window_causal_mask for every layer when config.sliding_window is not None. fp32, untied.
    "mistral_swa": dict(family="mistral", arch="MistralForCausalLM", dim=32, hidden=64, layers=2, heads=4,
                        kv_heads=2, head_dim=8, vocab=32000, theta=10000.0, eps=1e-5, tied=False, dtype="F32",
                        tokenizer="llama2", sliding_window=8, n_tokens=150, tokens=dict(seed=17, lo=3, hi=32000, first=1)),
    # YaRN as Qwen2.5's 128K recipe writes it (rope_scaling {"type": "yarn", "factor": 4,
    # "original_max_position_embeddings": 32768} with max_position_embeddings left at the original), scaled down
    # to an original context of 48 so that 150 positions run far past it; on Mistral's block without a window.
    # modeling_rope_utils.py's _compute_yarn_parameters: dim = rotary dims, low = max(floor(corr(beta_fast)), 0),
    # high = min(ceil(corr(beta_slow)), dim - 1) with corr(r) = dim * ln(orig / (2 pi r)) / (2 ln theta), ramp
    # clip((i - low) / (high - low), 0, 1), inv_freq = interpolation * ramp + extrapolation * (1 - ramp) with
    # interpolation = extrapolation / factor, and cos and sin times attention_factor = 0.1 ln(factor) + 1.
    "yarn": dict(family="mistral", arch="MistralForCausalLM", dim=64, hidden=96, layers=2, heads=4, kv_heads=2,
                 head_dim=16, vocab=32000, theta=10000.0, eps=1e-5, tied=False, dtype="F32", tokenizer="llama2",
                 sliding_window=None, max_position_embeddings=48, n_tokens=150,
                 rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 48},
                 tokens=dict(seed=28, lo=3, hi=32000, first=1)),
}
N_ARCH_TOKENS = 40  # past every sliding window (8) and the longrope original context (24)
# (the windowed models take 150: past run.c's ring of window + 64 cache rows, which then wraps around)
# (token seeds: phi3's and phi3_full's chosen so that every position's top-2 logit margin is > 3e-3 of the
# row's largest |logit|, gemma2's and gemma3's > 5e-4 over their 150; the other models' are > 1e-3 with their first seed. The Gemma
# look-alikes have 32000 tokens, not their real 256000 / 262144, to keep make test fast: no tokenizer goes
# with them, the chat templates and the Gemma 3 tokenizer are tested on their own.)


def arch_tokens(t, n=N_ARCH_TOKENS):
    """Fixed token ids from a 64-bit LCG (no dependence on numpy's generators): the first one a BOS when given."""
    x, ids = t["seed"], [] if t["first"] is None else [t["first"]]
    while len(ids) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) % 2 ** 64
        ids.append(t["lo"] + (x >> 33) % (t["hi"] - t["lo"]))
    return ids


def bf16_round(x):
    """float32 -> bfloat16 with round-to-nearest-even, as torch's .to(torch.bfloat16) (not stored()'s truncation)."""
    u = int(np.array(x, np.float32).view(np.uint32))
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return float(np.array(u, np.uint32).view(np.float32))


def in_dtype(x, dtype):
    """A Python float made a tensor of the model's dtype (torch.tensor(x, dtype=...) / .to(dtype))."""
    return {"BF16": bf16_round, "F16": lambda v: float(np.float16(v))}.get(dtype, lambda v: float(np.float32(v)))(x)


def layer_windows(c):
    """The sliding window of each layer, None for a global one."""
    f, n, w = c["family"], c["layers"], c.get("sliding_window")
    if f == "gemma2":
        return [w if i % 2 == 0 else None for i in range(n)]
    if f == "gemma3":
        return [w if (i + 1) % c["sliding_window_pattern"] else None for i in range(n)]
    return [w] * n  # mistral: every layer; the others have no window (phi3's 262144 never bites here)


def arch_config(c):
    """config.json as the real checkpoints of each architecture write it (their key names; tiny values)."""
    f = c["family"]
    torch_dtype = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[c["dtype"]]
    common = {"architectures": [c["arch"]], "hidden_size": c["dim"], "intermediate_size": c["hidden"],
              "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
              "num_key_value_heads": c["kv_heads"], "rms_norm_eps": c["eps"], "rope_theta": c["theta"],
              "tie_word_embeddings": c["tied"], "torch_dtype": torch_dtype, "use_cache": True,
              "vocab_size": c["vocab"], "attention_dropout": 0.0, "initializer_range": 0.02}
    if f == "qwen3":  # Qwen/Qwen3-0.6B
        cfg = dict(common, attention_bias=False, bos_token_id=151643, eos_token_id=151645, head_dim=c["head_dim"],
                   hidden_act="silu", max_position_embeddings=40960, max_window_layers=c["layers"],
                   model_type="qwen3", rope_scaling=None, sliding_window=None, use_sliding_window=False,
                   transformers_version="4.51.0")
    elif f == "gemma2":  # google/gemma-2-2b
        cfg = dict(common, attention_bias=False, attn_logit_softcapping=c["attn_logit_softcapping"],
                   bos_token_id=2, cache_implementation="hybrid", eos_token_id=1,
                   final_logit_softcapping=c["final_logit_softcapping"], head_dim=c["head_dim"],
                   hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, model_type="gemma2", pad_token_id=0,
                   query_pre_attn_scalar=c["query_pre_attn_scalar"], sliding_window=c["sliding_window"],
                   transformers_version="4.42.4")
    elif f == "gemma3":  # google/gemma-3-1b-it (text-only), with gemma-3-4b's linear rope scaling
        cfg = dict(common, attention_bias=False, attn_logit_softcapping=None, bos_token_id=2,
                   cache_implementation="hybrid", eos_token_id=[1, 106], final_logit_softcapping=None,
                   head_dim=c["head_dim"], hidden_activation="gelu_pytorch_tanh",
                   layer_types=["full_attention" if w is None else "sliding_attention" for w in layer_windows(c)],
                   max_position_embeddings=32768, model_type="gemma3_text", pad_token_id=0,
                   query_pre_attn_scalar=c["query_pre_attn_scalar"], rope_local_base_freq=c["local_theta"],
                   rope_scaling=c["rope_scaling"], sliding_window=c["sliding_window"],
                   sliding_window_pattern=c["sliding_window_pattern"], use_bidirectional_attention=False,
                   transformers_version="4.55.0")
    elif f == "phi3":  # microsoft/Phi-4-mini-instruct, microsoft/Phi-3.5-mini-instruct
        cfg = dict(common, attention_bias=False, bos_token_id=1, embd_pdrop=0.0, eos_token_id=32000,
                   hidden_act="silu", max_position_embeddings=c["max_position_embeddings"], model_type="phi3",
                   original_max_position_embeddings=c["original_max_position_embeddings"], pad_token_id=32000,
                   resid_pdrop=0.0, rope_scaling=c["rope_scaling"], sliding_window=262144,
                   transformers_version="4.45.0")
        if "partial_rotary_factor" in c:
            cfg.update(full_attn_mod=1, interpolate_factor=1, lm_head_bias=False, mlp_bias=False,
                       partial_rotary_factor=c["partial_rotary_factor"])
    else:  # mistralai/Mistral-7B-v0.1
        cfg = dict(common, bos_token_id=1, eos_token_id=2, hidden_act="silu",
                   max_position_embeddings=c.get("max_position_embeddings", 32768), model_type="mistral",
                   sliding_window=c["sliding_window"], transformers_version="4.34.0.dev0")
        if c.get("rope_scaling"):
            cfg["rope_scaling"] = c["rope_scaling"]
    return dict(sorted(cfg.items()))


def arch_weights(c, rng):
    """Random weights under the checkpoint's tensor names, rounded to the stored dtype."""
    d, f, hd = c["dim"], c["hidden"], c["head_dim"]
    qd, kvd = c["heads"] * hd, c["kv_heads"] * hd
    gemma = c["family"] in ("gemma2", "gemma3")

    def norm(n):  # Gemma stores w of x * (1 + w): raw values around 0
        return 0.3 * rng.standard_normal(n) if gemma else 1 + 0.1 * rng.standard_normal(n)

    w = {"model.embed_tokens.weight": rng.standard_normal((c["vocab"], d)) * 0.5, "model.norm.weight": norm(d)}
    if not c["tied"]:
        w["lm_head.weight"] = rng.standard_normal((c["vocab"], d)) * 0.5
    qscale = 2.0 if c.get("attn_logit_softcapping") else 1.0  # scores of a few units, where the tanh bends
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        if gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm(d)
            w[p + "post_feedforward_layernorm.weight"] = norm(d)
        q = rng.standard_normal((qd, d)) * qscale / np.sqrt(d)
        k = rng.standard_normal((kvd, d)) / np.sqrt(d)
        v = rng.standard_normal((kvd, d)) / np.sqrt(d)
        if c["family"] == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
        else:
            w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"] = q, k
            w[p + "self_attn.v_proj.weight"] = v
        w[p + "self_attn.o_proj.weight"] = rng.standard_normal((d, qd)) / np.sqrt(qd)
        if c["family"] in ("qwen3", "gemma3"):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        gate = rng.standard_normal((f, d)) * 1.5 / np.sqrt(d)
        up = rng.standard_normal((f, d)) * 1.5 / np.sqrt(d)
        if c["family"] == "phi3":
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
        else:
            w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = gate, up
        w[p + "mlp.down_proj.weight"] = rng.standard_normal((d, f)) * 1.5 / np.sqrt(f)
    return {k: stored(v.astype(np.float32), c["dtype"]) for k, v in w.items()}


def rope_cos_sin(c, layer, pos, windows, all_long=False):
    """cos and sin (attention factor included) over the rotary dims for one position, as the layer's rotary
    embedding module computes them for a call whose position_ids are [pos]."""
    rd = int(c["head_dim"] * c.get("partial_rotary_factor", 1.0))
    theta, rs, scale = c["theta"], c.get("rope_scaling"), 1.0
    if c["family"] == "gemma3" and windows[layer] is not None:  # rotary_emb_local
        theta, rs = c["local_theta"], None
    shape = np.arange(0, rd, 2, dtype=np.float64) / rd
    inv = 1.0 / theta ** shape
    if rs and rs.get("rope_type", rs.get("type")) == "linear":
        inv = inv / rs["factor"]
    elif rs and rs.get("rope_type", rs.get("type")) == "yarn":
        orig, factor = rs["original_max_position_embeddings"], rs["factor"]
        if c["max_position_embeddings"] > orig:  # (transformers' ratio; equal, as here, keeps the factor)
            factor = c["max_position_embeddings"] / orig
        corr = lambda r: rd * np.log(orig / (r * 2 * np.pi)) / (2 * np.log(theta))
        low, high = max(np.floor(corr(rs.get("beta_fast", 32))), 0), min(np.ceil(corr(rs.get("beta_slow", 1))), rd - 1)
        high = high + 0.001 if low == high else high
        ramp = np.clip((np.arange(rd // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        inv = inv / factor * ramp + inv * (1 - ramp)
        scale = 0.1 * np.log(factor) + 1.0 if factor > 1 else 1.0
    elif rs and rs.get("rope_type", rs.get("type")) == "longrope":
        # dynamic_rope_update -> longrope_frequency_update: seq_len = max(position_ids) + 1, the long factors when
        # seq_len > original_max_position_embeddings. One token per call: position pos is rotated with the short
        # factors when pos + 1 <= original_max_position_embeddings and with the long ones after, and the keys
        # already in the cache keep the rotation they were given.
        orig = c["original_max_position_embeddings"]
        ext = rs["long_factor"] if pos + 1 > orig or all_long else rs["short_factor"]
        inv = 1.0 / (np.array(ext, np.float64) * theta ** shape)
        factor = c["max_position_embeddings"] / orig
        scale = 1.0 if factor <= 1.0 else np.sqrt(1 + np.log(factor) / np.log(orig))
    ang = pos * inv
    ang = np.concatenate([ang, ang])  # emb = cat(freqs, freqs)
    return np.cos(ang) * scale, np.sin(ang) * scale


def apply_rope(x, cos, sin):
    """q_embed = cat(q_rot * cos + rotate_half(q_rot) * sin, q_pass) over the last axis."""
    rd = cos.shape[-1]
    r = x[..., :rd]
    return np.concatenate([r * cos + rotate_half(r) * sin, x[..., rd:]], axis=-1)


def gelu_tanh(x):  # ACT2FN["gelu_pytorch_tanh"]
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def generate_logits(c, w, tokens):
    """The logits generate() computes for each position: decode_logits, except that a longrope model's rows past
    the original context come from a forward pass of the whole prefix with the long factors (see "phi3")."""
    logits = decode_logits(c, w, tokens)
    rs = c.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "longrope":
        for p in range(c["original_max_position_embeddings"], len(tokens)):
            logits[p] = decode_logits(c, w, tokens[:p + 1], all_long=True)[-1]
    return logits


def decode_logits(c, w, tokens, all_long=False):
    """Logits (n_tokens, vocab) in float64 with one token per forward call and a KV cache (generate()'s decoding
    steps): each position's q, k, v are computed, k rotated with that call's cos/sin and appended to the cache,
    and the query attends to the cached keys its layer's mask allows. Apart from longrope, whose rotation depends
    on the call, this equals the whole-sequence causal forward pass."""
    W = {k: v.astype(np.float64) for k, v in w.items()}
    f, d, H, KV, hd = c["family"], c["dim"], c["heads"], c["kv_heads"], c["head_dim"]
    gemma = f in ("gemma2", "gemma3")
    eps, rep = c["eps"], H // KV
    windows = layer_windows(c)

    def norm(x, wt):  # Gemma: x / rms * (1 + w); the others: w * x / rms
        x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
        return x * (1 + wt) if gemma else x * wt

    scaling = c["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    cap = c.get("attn_logit_softcapping")
    normalizer = in_dtype(d ** 0.5, c["dtype"]) if gemma else 1.0
    cache = [([], []) for _ in range(c["layers"])]
    out = []
    for pos, tok in enumerate(tokens):
        x = W["model.embed_tokens.weight"][tok] * normalizer
        for l in range(c["layers"]):
            p = f"model.layers.{l}."
            h = norm(x, W[p + "input_layernorm.weight"])
            if f == "phi3":
                qkv = W[p + "self_attn.qkv_proj.weight"] @ h
                q, k, v = qkv[:H * hd], qkv[H * hd:(H + KV) * hd], qkv[(H + KV) * hd:]
            else:
                q, k, v = (W[p + f"self_attn.{n}_proj.weight"] @ h for n in "qkv")
            q, k, v = q.reshape(H, hd), k.reshape(KV, hd), v.reshape(KV, hd)
            if f in ("qwen3", "gemma3"):
                q, k = norm(q, W[p + "self_attn.q_norm.weight"]), norm(k, W[p + "self_attn.k_norm.weight"])
            cos, sin = rope_cos_sin(c, l, pos, windows, all_long)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            ks, vs = cache[l]
            ks.append(k)
            vs.append(v)
            first = 0 if windows[l] is None else max(0, pos - windows[l] + 1)  # keys j with pos - window < j
            K, V = np.stack(ks[first:]), np.stack(vs[first:])  # (n_keys, KV, hd)
            a = np.empty((H, hd))
            for i in range(H):
                s = K[:, i // rep] @ q[i] * scaling
                if cap:
                    s = cap * np.tanh(s / cap)
                s = np.exp(s - s.max())
                a[i] = (s / s.sum()) @ V[:, i // rep]
            a = W[p + "self_attn.o_proj.weight"] @ a.reshape(-1)
            if gemma:
                x = x + norm(a, W[p + "post_attention_layernorm.weight"])
                h = norm(x, W[p + "pre_feedforward_layernorm.weight"])
            else:
                x = x + a
                h = norm(x, W[p + "post_attention_layernorm.weight"])
            if f == "phi3":
                g, u = np.split(W[p + "mlp.gate_up_proj.weight"] @ h, 2)
            else:
                g, u = W[p + "mlp.gate_proj.weight"] @ h, W[p + "mlp.up_proj.weight"] @ h
            m = W[p + "mlp.down_proj.weight"] @ ((gelu_tanh(g) if gemma else g / (1 + np.exp(-g))) * u)
            x = x + (norm(m, W[p + "post_feedforward_layernorm.weight"]) if gemma else m)
        out.append(norm(x, W["model.norm.weight"]))
    head = W["model.embed_tokens.weight"] if c["tied"] else W["lm_head.weight"]
    logits = np.stack(out) @ head.T
    if c.get("final_logit_softcapping"):
        fc = c["final_logit_softcapping"]
        logits = fc * np.tanh(logits / fc)
    return logits


OLD_WHAT = {"llama": "LlamaForCausalLM, Llama 2/TinyLlama shape: 2 layers, dim 48, ffn 128, 6 heads / 2 kv heads, "
                    "theta 1e4, untied, fp32",
            "llama3": "LlamaForCausalLM, Llama 3.2 shape: 2 layers, dim 32, ffn 96, 4 heads / 1 kv head, llama3 rope "
                      "scaling (original context 64), theta 5e5, tied, bf16",
            "qwen2": "Qwen2ForCausalLM, Qwen2.5 shape: 2 layers, dim 32, ffn 80, 4 heads / 2 kv heads, q/k/v biases, "
                     "theta 1e6, tied, fp16 in 2 shards"}


def arch_what(c):
    """One line on the shape, for reference.json."""
    windows = layer_windows(c)
    parts = [f"{c['arch']}: {c['layers']} layers, dim {c['dim']}, ffn {c['hidden']}, {c['heads']} heads / "
             f"{c['kv_heads']} kv heads of {c['head_dim']}"]
    if c["family"] in ("qwen3", "gemma3"):
        parts.append("q/k norms" + (" (1 + w)" if c["family"] == "gemma3" else ""))
    if c["family"] in ("gemma2", "gemma3"):
        parts.append(f"scaled embeddings, (1 + w) sandwich norms, GeGLU, query_pre_attn_scalar "
                     f"{c['query_pre_attn_scalar']}")
    if c.get("attn_logit_softcapping"):
        parts.append(f"soft caps {c['attn_logit_softcapping']:g} (attention) and "
                     f"{c['final_logit_softcapping']:g} (logits)")
    if any(w is not None for w in windows):
        slid = [i for i, w in enumerate(windows) if w is not None]
        parts.append(f"window {c['sliding_window']} on layers {','.join(map(str, slid))}" if len(slid) < len(windows)
                     else f"window {c['sliding_window']} on every layer")
    if c["family"] == "gemma3":
        parts.append(f"local rope theta {c['local_theta']:g}, global theta {c['theta']:g} with linear factor "
                     f"{c['rope_scaling']['factor']:g}")
    elif c["family"] == "phi3":
        parts.append(f"fused qkv and gate_up, rotary dims {int(c['head_dim'] * c.get('partial_rotary_factor', 1.0))}"
                     f" of {c['head_dim']}, longrope (original context {c['original_max_position_embeddings']} of "
                     f"{c['max_position_embeddings']}, switch per call)")
    elif c.get("rope_scaling"):
        rs = c["rope_scaling"]
        parts.append(f"theta {c['theta']:g}, yarn factor {rs['factor']:g} over {rs['original_max_position_embeddings']}")
    else:
        parts.append(f"theta {c['theta']:g}")
    dtype = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}[c["dtype"]]
    parts.append(("tied" if c["tied"] else "untied") + ", " + dtype)
    return ", ".join(parts)


def copy_tokenizer(folder, d):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if d and os.path.exists(os.path.join(d, f)):
            shutil.copy(os.path.join(d, f), folder)


def main(out, tokenizer_dirs, names=None):
    """Writes every model of MODELS and ARCH_MODELS (or those named)."""
    for name, c in MODELS.items():
        if names is not None and name not in names:
            continue
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
        names_ = list(w)
        if c["shards"] == 1:
            write_safetensors(os.path.join(folder, "model.safetensors"), w, c["dtype"])
        else:
            half = len(names_) // 2
            index = {}
            for s, part in enumerate((names_[:half], names_[half:])):
                fname = f"model-{s + 1:05d}-of-00002.safetensors"
                write_safetensors(os.path.join(folder, fname), {n: w[n] for n in part}, c["dtype"])
                index.update({n: fname for n in part})
            json.dump({"weight_map": index}, open(os.path.join(folder, "model.safetensors.index.json"), "w"))
        copy_tokenizer(folder, tokenizer_dirs.get(c["tokenizer"]))
        logits = reference_logits(c, w, TOKENS)
        logits.astype("<f4").tofile(os.path.join(folder, "reference.f32"))
        json.dump({"tokens": TOKENS, "vocab": c["vocab"], "what": OLD_WHAT[name]},
                  open(os.path.join(folder, "reference.json"), "w"))
        print(f"wrote {folder}", file=sys.stderr)
    for name, c in ARCH_MODELS.items():
        if names is not None and name not in names:
            continue
        rng = np.random.default_rng(sum(map(ord, name)))
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        json.dump(arch_config(c), open(os.path.join(folder, "config.json"), "w"), indent=2)
        w = arch_weights(c, rng)
        write_safetensors(os.path.join(folder, "model.safetensors"), w, c["dtype"])
        copy_tokenizer(folder, tokenizer_dirs.get(c["tokenizer"]))
        tokens = arch_tokens(c["tokens"], c.get("n_tokens", N_ARCH_TOKENS))
        assert all(0 <= t < c["vocab"] for t in tokens)
        generate_logits(c, w, tokens).astype("<f4").tofile(os.path.join(folder, "reference.f32"))
        json.dump({"tokens": tokens, "vocab": c["vocab"], "what": arch_what(c)},
                  open(os.path.join(folder, "reference.json"), "w"))
        print(f"wrote {folder}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:]))
