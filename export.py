#!/usr/bin/env python3
"""export.py — converts model checkpoints and tokenizers into run.c's files.

Models (the tokenizer found beside the model is embedded in the checkpoint, so `./run OUT.bin`
needs no other file):
  python3 export.py qwen.bin --hf ~/Qwen2.5-0.5B-Instruct            Hugging Face folder (safetensors)
  python3 export.py llama.bin --hf ~/Llama-3.2-1B-Instruct --dtype bf16
  python3 export.py llama2.bin --meta-llama ~/llama-2-7b             Meta's consolidated.*.pth (needs torch)
  python3 export.py stories.bin --checkpoint ckpt.pt --tokenizer tok512.model   llama2.c .pt (needs torch)
  python3 export.py legacy.bin --hf ~/TinyLlama --version 0          llama2.c's v0/v1/v2 formats
  python3 export.py qwen.gguf --hf ~/Qwen2.5-0.5B-Instruct --dtype q4_k   llama.cpp's GGUF (a .gguf name, or --format gguf)
  python3 export.py s15.q4.bin --llama2c stories15M.bin --tokenizer tokenizer.model --dtype q4_0   llama2.c .bin
Tokenizers alone:
  python3 export.py tokenizer.bin --tokenizer tokenizer.model        SentencePiece protobuf
  python3 export.py tok.bin --tokenizer tokenizer.json               Hugging Face (BPE, byte-level BPE)

Supported architectures: LlamaForCausalLM (Llama 2, Llama 3/3.1/3.2 with rope_scaling, TinyLlama,
SmolLM/SmolLM2, CodeLlama), MistralForCausalLM (without sliding-window attention), Qwen2ForCausalLM.
Anything else is refused with a message saying what is unsupported. Needs Python 3 and numpy; torch
only for .pt/.pth inputs. Tensors stream one at a time, so memory stays near one tensor's size.
"""
import argparse
import errno
import json
import math
import mmap
import os
import re
import struct
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.stderr.write("export.py: needs numpy: apt-get install python3-numpy (and run it with /usr/bin/python3, "
                     "the Python that package installs into)\n")
    sys.exit(1)

MAGIC = 0x616B3432            # "ak42"
TOKENIZER_MAGIC = 0x6B746D6C  # "lmtk"
ALIGN = 64
DTYPES = {"fp32": 0, "fp16": 1, "bf16": 2, "q8_0": 3, "q4_0": 4}
TEMPLATES = {"none": 0, "llama2": 1, "llama3": 2, "chatml": 3, "zephyr": 4, "mistral": 5, "llama3.1": 6, "qwen2.5": 7, "smollm2": 8,
             "gemma": 9, "qwen3": 10, "phi3": 11, "phi4": 12}
SPLITS = {"none": 0, "gpt2": 1, "llama3": 2, "qwen2": 3, "gpt4o": 4}
TOK_DUMMY_PREFIX, TOK_REMOVE_EXTRA_SPACES, TOK_SPLIT_DIGITS, TOK_IGNORE_MERGES = 1, 2, 4, 8
NORMAL, SPECIAL, BYTE, UNUSED, USER_DEFINED = 0, 1, 2, 3, 4  # lmtk token types (USER_DEFINED: added, not special)
# GGUF's token types (SentencePiece's piece types)
G_NORMAL, G_UNKNOWN, G_CONTROL, G_USER_DEFINED, G_UNUSED, G_BYTE = 1, 2, 3, 4, 5, 6


class ExportError(Exception):
    """A problem with the input, reported as one line."""


held = []  # messages held back until the output is open (Writer), so that a refusal before that is the only line


def log(msg, now=False):
    if held is not None and not now:
        held.append(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def release_log():
    global held
    for msg in held or []:
        print(msg, file=sys.stderr, flush=True)
    held = None


# ----------------------------------------------------------------------------
# Tensor sources: each maps a name to a float32 numpy array, loaded only when asked for.

def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e}); download it again")


class SafetensorsFile:
    """One .safetensors file (8-byte header length, JSON header, data), memory-mapped; the header is
    checked when opened, so a truncated or damaged file is refused before anything is written."""
    DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}

    def __init__(self, path):
        size = os.path.getsize(path)

        def bad(detail):
            return ExportError(f"{path}: truncated or damaged: {detail}; download it again")

        with open(path, "rb") as f:
            if size < 8:
                raise bad(f"{size} bytes, less than a safetensors header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise bad(f"its header length {n} exceeds the file's {size} bytes")
            header = f.read(n)
        self.path, self.base = path, 8 + n
        try:
            self.header = json.loads(header)
            self.header.pop("__metadata__", None)
            for name, info in self.header.items():
                dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
                if not 0 <= begin <= end <= size - self.base:
                    raise bad(f"tensor {name} lies at bytes {self.base + begin}..{self.base + end}, past the "
                              f"file's end at {size}")
                if dtype in self.ITEMSIZE and end - begin != math.prod(shape) * self.ITEMSIZE[dtype]:
                    raise bad(f"tensor {name} ({dtype} {shape}) has {end - begin} bytes")
        except (ValueError, UnicodeDecodeError, TypeError, KeyError, AttributeError) as e:
            raise bad(f"its header is not a safetensors header ({type(e).__name__}: {e})")
        self.data = np.memmap(path, dtype=np.uint8, mode="r") if size > self.base else np.zeros(0, np.uint8)

    def names(self):
        return list(self.header)

    def dtype(self, name):
        return self.header[name]["dtype"]

    def shape(self, name):
        dtype = self.dtype(name)
        if dtype not in self.DT:
            raise ExportError(f"{self.path}: tensor {name} has dtype {dtype} (supported: F32, F16, BF16)")
        return tuple(self.header[name]["shape"])

    def get(self, name):
        info = self.header[name]
        self.shape(name)
        begin, end = info["data_offsets"]
        raw = self.data[self.base + begin:self.base + end].view(self.DT[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


class HFTensors:
    """A Hugging Face folder's tensors: model.safetensors or shards listed in its index."""

    def __init__(self, folder):
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            listing = read_json(index)
            weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
            if not isinstance(weight_map, dict):
                raise ExportError(f"{index}: no weight_map (download it again)")
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise ExportError(f"{index} lists {len(missing)} shard(s) missing from {folder}: {', '.join(missing)} "
                                  "(download them)")
        else:
            files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        if not files:
            raise ExportError(f"{folder}: no .safetensors files (convert .bin PyTorch checkpoints to safetensors first)")
        self.where = {}
        for f in files:
            st = SafetensorsFile(os.path.join(folder, f))
            for name in st.names():
                self.where[name] = st

    def has(self, name):
        return name in self.where

    def file_of(self, name):
        if name not in self.where:
            raise ExportError(f"tensor {name} is missing from the checkpoint")
        return self.where[name]

    def shape(self, name):
        return self.file_of(name).shape(name)

    def get(self, name):
        return self.file_of(name).get(name)

    def source_dtype(self):
        kinds = {st.dtype(n) for n, st in self.where.items()}
        return "bf16" if "BF16" in kinds else "fp16" if "F16" in kinds else "fp32"


def torch_load(path):
    try:
        import torch
    except ImportError:
        raise ExportError(f"{path}: reading .pt/.pth files needs PyTorch "
                          "(apt-get install python3-torch, or pip install torch)")
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except TypeError:  # older torch without mmap
        return torch.load(path, map_location="cpu")


def to_numpy(t):
    return t.float().numpy() if hasattr(t, "float") else np.asarray(t, dtype=np.float32)


# ----------------------------------------------------------------------------
# Model descriptions: hyperparameters plus a getter for canonical tensor names
#   tok_embeddings, norm, output, rope_short, rope_long (LongRoPE's factors), layers.N.{attention_norm, wq, wk,
#   wv, bq, bk, bv, q_norm, k_norm, wo, post_att_norm, ffn_norm, w1, w2, w3, post_ffn_norm}

class Model:
    def __init__(self, **kw):
        self.rope_layout = 0           # 0: llama2.c / Meta interleaved pairs, 1: Hugging Face halves
        self.rope_scaling = (0, 1.0, 1.0, 1.0, 0)  # type, factor, low, high, original context
        self.qkv_bias = False
        self.qk_norm = False           # per-head RMSNorm of q and k (Qwen3, Gemma 3)
        self.sandwich = False          # norms after attention and FFN (Gemma 2/3)
        self.activation = 0            # 0 SiLU (SwiGLU), 1 tanh-GELU (GeGLU)
        self.rotary_dim = 0            # 0: the whole head
        self.embed_scale = 0.0         # 0: 1
        self.attn_scale = 0.0          # 0: 1/sqrt(head_size)
        self.softcaps = (0.0, 0.0)     # attention scores, final logits (0: none)
        self.window = (0, 0)           # sliding window, period (layer l global when (l + 1) % period == 0; 0: none)
        self.rope_local_theta = 0.0    # local layers' RoPE base (0: rope_theta)
        self.longrope = None           # (short factors, long factors, attention factor)
        self.rope_attn_factor = 0.0    # YaRN's attention factor (cos and sin times it; 0: 1)
        self.tied = False
        self.norm_eps = 1e-5
        self.rope_theta = 10000.0
        self.shape = None              # name -> shape without loading the tensor, where the source can tell
        self.__dict__.update(kw)

    def tensor(self, name):
        return self.getter(name)


def rope_scaling_of(cfg, path):
    rs = cfg.get("rope_scaling")
    if not rs:
        return (0, 1.0, 1.0, 1.0, 0)
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "llama3":
        return (2, float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"]),
                int(rs["original_max_position_embeddings"]))
    if kind == "linear":
        return (1, float(rs["factor"]), 1.0, 1.0, 0)
    if kind == "longrope":
        return (3, 1.0, 1.0, 1.0, int(cfg.get("original_max_position_embeddings") or cfg["max_position_embeddings"]))
    if kind == "yarn":
        if rs.get("truncate", True) is False:
            raise ExportError(f"{path}: rope_scaling yarn with truncate false (gpt-oss's) is not supported: run.c rounds the "
                              "correction range as transformers does by default")
        factor, orig = yarn_factor_of(cfg)
        return (4, factor, float(rs.get("beta_fast") or 32), float(rs.get("beta_slow") or 1), orig)
    if kind == "default":
        return (0, 1.0, 1.0, 1.0, 0)
    raise ExportError(f"{path}: rope_scaling type {kind!r} is not supported (supported: llama3, linear, longrope, yarn)")


def yarn_factor_of(cfg):
    """YaRN's factor and original context, as transformers' _compute_yarn_parameters (4.5x: with rope_scaling's
    original_max_position_embeddings the factor is max_position_embeddings / that, DeepSeek-V3's configs;
    other versions keep rope_scaling's factor and warn when the two differ),
    except where the two are equal, as in Qwen2.5's 128K recipe (factor 4 over 32768 with max_position_embeddings
    left at 32768), where transformers' ratio of 1 would turn YaRN off: there rope_scaling's factor holds."""
    rs = cfg["rope_scaling"]
    orig = rs.get("original_max_position_embeddings")
    if orig and cfg.get("max_position_embeddings", orig) > orig:
        return cfg["max_position_embeddings"] / orig, int(orig)
    if not (orig or cfg.get("max_position_embeddings")) or not rs.get("factor"):
        raise ExportError("rope_scaling yarn needs its factor and original_max_position_embeddings (or max_position_embeddings)")
    return float(rs["factor"]), int(orig or cfg["max_position_embeddings"])


def yarn_attention_of(cfg):
    """YaRN's attention factor (multiplying cos and sin): rope_scaling's attention_factor, else get_mscale's
    0.1 * ln(factor) + 1 (the ratio of two with mscale and mscale_all_dim), 1 for factors <= 1."""
    rs = cfg["rope_scaling"]
    if rs.get("attention_factor") is not None:
        return float(rs["attention_factor"])
    factor, _ = yarn_factor_of(cfg)
    mscale = lambda s, m=1.0: 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
    if rs.get("mscale") and rs.get("mscale_all_dim"):
        return mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
    return mscale(factor)


def longrope_of(cfg, rotary_dim, path):
    """LongRoPE (Phi-3.5, Phi-4-mini), as transformers' _compute_longrope_parameters: the short and long
    factors dividing each frequency, and the attention factor multiplying cos and sin: sqrt(1 + ln(s) /
    ln(original context)) for s = max_position_embeddings / original (or rope_scaling's factor), 1 if s <= 1."""
    rs = cfg["rope_scaling"]
    short, long_ = rs.get("short_factor"), rs.get("long_factor")
    for name, f in (("short_factor", short), ("long_factor", long_)):
        if not isinstance(f, list) or len(f) != rotary_dim // 2:
            raise ExportError(f"{path}: rope_scaling.{name} must list {rotary_dim // 2} factors (one per rotated pair)")
    orig = cfg.get("original_max_position_embeddings")
    factor = cfg["max_position_embeddings"] / orig if orig else rs.get("factor", 1.0)
    orig = orig or cfg["max_position_embeddings"]
    attention = rs.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    return np.array(short, np.float32), np.array(long_, np.float32), float(attention)


def round_to_dtype(x, dtype):
    """A float as the model's dtype holds it (Gemma's embedding normalizer is a tensor of that dtype)."""
    if dtype == "bfloat16":
        u = np.array([x], np.float32).view(np.uint32)
        return float(((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).view(np.float32)[0])
    if dtype == "float16":
        return float(np.float16(x))
    return float(np.float32(x))


HF_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM",
            "Gemma3ForCausalLM", "Phi3ForCausalLM")
# architectures people try that run.c does not run, with why
HF_REFUSED = {"Gemma3ForConditionalGeneration": "Gemma 3 with its vision tower (4B and up) is not supported; the "
                                                "text-only gemma-3-1b and gemma-3-270m are",
              "Qwen3MoeForCausalLM": "Qwen3 mixture-of-experts models (e.g. Qwen3-30B-A3B) are not supported",
              "Qwen2MoeForCausalLM": "Qwen2 mixture-of-experts models are not supported",
              "MixtralForCausalLM": "Mixtral (mixture of experts) is not supported",
              "Phi3SmallForCausalLM": "Phi-3-small (blocksparse attention) is not supported",
              "PhiMoEForCausalLM": "Phi-3.5-MoE is not supported",
              "GemmaForCausalLM": "Gemma 1 is not supported (Gemma 2 and 3 are)"}


def window_period_of(cfg, arch, n_layers, path):
    """The layer pattern of sliding-window attention: 0 = every layer local, p = layer l global when
    (l + 1) % p == 0 (Gemma 2: every other, Gemma 3: one in six), from layer_types when the config lists it."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n_layers:
        local = [t == "sliding_attention" for t in types]
        if all(local):
            return 0
        for p in range(1, n_layers + 1):
            if all(local[l] == ((l + 1) % p != 0) for l in range(n_layers)):
                return p
        raise ExportError(f"{path}: layer_types {types} is not a repeating pattern of local layers ending in a global one; "
                          "run.c's format cannot describe it")
    if arch == "Gemma2ForCausalLM":
        return 2
    if arch == "Gemma3ForCausalLM":
        return int(cfg.get("sliding_window_pattern", 6))
    return 0


def hf_model(folder, seq_len_cap):
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise ExportError(f"{folder}: no config.json (is this a Hugging Face model folder?)")
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ExportError(f"{path}: not a model config (a JSON object)")
    archs = cfg.get("architectures")
    if not archs or not isinstance(archs, list):
        raise ExportError(f"{path} names no architectures (supported: {', '.join(HF_ARCHS)}; "
                          "add e.g. \"architectures\": [\"LlamaForCausalLM\"] if the model is one of them)")
    arch = archs[0]
    if arch in HF_REFUSED:
        raise ExportError(f"{folder}: {arch}: {HF_REFUSED[arch]} (supported: {', '.join(HF_ARCHS)})")
    if arch not in HF_ARCHS:
        raise ExportError(f"{folder}: architecture {arch} is not supported (supported: {', '.join(HF_ARCHS)})")
    missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
               if not isinstance(cfg.get(k), int) or cfg[k] <= 0]
    if missing:
        raise ExportError(f"{path}: {', '.join(missing)} missing or not a positive integer")
    gemma = arch.startswith("Gemma")
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    if act not in ("silu", "gelu_pytorch_tanh"):
        raise ExportError(f"{folder}: activation {act} is not supported (silu: SwiGLU, gelu_pytorch_tanh: GeGLU)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ExportError(f"{folder}: attention_bias/mlp_bias on a {arch} model is not supported")
    if arch.startswith("Qwen") and cfg.get("use_sliding_window"):
        raise ExportError(f"{folder}: use_sliding_window on a Qwen model (max_window_layers) is not supported")
    seq_len = int(cfg.get("max_position_embeddings", 2048))
    if seq_len_cap:
        seq_len = min(seq_len, seq_len_cap)
    dim, n_heads, n_layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    head_size = cfg.get("head_dim") or dim // n_heads
    rotary_dim = int(head_size * float(cfg.get("partial_rotary_factor") or 1.0))
    window = cfg.get("sliding_window") or 0
    if arch.startswith("Qwen"):
        window = 0  # (use_sliding_window is false, checked above)
    period = window_period_of(cfg, arch, n_layers, folder) if window else 0
    scaling = rope_scaling_of(cfg, folder)  # every config check before the tensors are opened
    longrope = longrope_of(cfg, rotary_dim, folder) if scaling[0] == 3 else None
    tensors = HFTensors(folder)
    names = {"tok_embeddings": "model.embed_tokens.weight", "norm": "model.norm.weight", "output": "lm_head.weight"}
    per_layer = {"attention_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
                 "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight", "bq": "self_attn.q_proj.bias",
                 "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias", "wo": "self_attn.o_proj.weight",
                 "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight",
                 "ffn_norm": "post_attention_layernorm.weight", "w1": "mlp.gate_proj.weight",
                 "w2": "mlp.down_proj.weight", "w3": "mlp.up_proj.weight"}
    if gemma:  # Gemma's post_attention_layernorm norms the attention's output; the FFN has its own pre-norm
        per_layer.update(post_att_norm="post_attention_layernorm.weight", ffn_norm="pre_feedforward_layernorm.weight",
                         post_ffn_norm="post_feedforward_layernorm.weight")
    q_dim, kv_dim = n_heads * head_size, (cfg.get("num_key_value_heads") or n_heads) * head_size
    hidden = cfg["intermediate_size"]
    # Phi-3 fuses q, k and v into qkv_proj and gate and up into gate_up_proj: (source, first row, rows)
    fused = {}
    if arch == "Phi3ForCausalLM":
        fused = {"wq": ("self_attn.qkv_proj.weight", 0, q_dim), "wk": ("self_attn.qkv_proj.weight", q_dim, kv_dim),
                 "wv": ("self_attn.qkv_proj.weight", q_dim + kv_dim, kv_dim),
                 "w1": ("mlp.gate_up_proj.weight", 0, hidden), "w3": ("mlp.gate_up_proj.weight", hidden, hidden)}

    def getter(name):
        if name in ("rope_short", "rope_long"):
            return longrope[0 if name == "rope_short" else 1]
        if name.startswith("layers."):
            _, layer, key = name.split(".")
            if key in fused:
                source, first, rows = fused[key]
                return tensors.get(f"model.layers.{layer}.{source}")[first:first + rows]
            x = tensors.get(f"model.layers.{layer}.{per_layer[key]}")
            # Gemma's RMSNorm multiplies by (1 + w): stored as 1 + w (in float32, as Gemma computes it)
            return x + np.float32(1) if gemma and key.endswith("norm") else x
        x = tensors.get(names[name])
        return x + np.float32(1) if gemma and name == "norm" else x

    def shape(name):
        if name in ("rope_short", "rope_long"):
            return (rotary_dim // 2,)
        if name.startswith("layers."):
            _, layer, key = name.split(".")
            if key in fused:
                source, first, rows = fused[key]
                full = tensors.shape(f"model.layers.{layer}.{source}")
                return (rows,) + tuple(full[1:]) if full[0] == (2 * hidden if key in ("w1", "w3") else q_dim + 2 * kv_dim) else full
            return tensors.shape(f"model.layers.{layer}.{per_layer[key]}")
        return tensors.shape(names[name])

    tied = not tensors.has("lm_head.weight")
    softcaps = (float(cfg.get("attn_logit_softcapping") or 0.0), float(cfg.get("final_logit_softcapping") or 0.0))
    return Model(source=folder, arch=arch, dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                 n_kv_heads=cfg.get("num_key_value_heads") or n_heads, head_size=head_size,
                 vocab_size=cfg["vocab_size"], seq_len=seq_len, norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                 rope_theta=float(cfg.get("rope_theta", 10000.0)), rope_layout=1,
                 rope_scaling=scaling, qkv_bias=tensors.has("model.layers.0.self_attn.q_proj.bias"),
                 qk_norm=tensors.has("model.layers.0.self_attn.q_norm.weight"), sandwich=gemma,
                 activation=1 if act == "gelu_pytorch_tanh" else 0,
                 rotary_dim=rotary_dim if rotary_dim != head_size else 0,
                 embed_scale=round_to_dtype(math.sqrt(dim), cfg.get("torch_dtype", "float32")) if gemma else 0.0,
                 attn_scale=float(cfg["query_pre_attn_scalar"]) ** -0.5 if gemma and cfg.get("query_pre_attn_scalar") else 0.0,
                 softcaps=softcaps, window=(int(window), period),
                 rope_local_theta=float(cfg.get("rope_local_base_freq", 0.0)) if arch == "Gemma3ForCausalLM" else 0.0,
                 longrope=longrope, tied=tied, getter=getter, shape=shape, source_dtype=tensors.source_dtype(),
                 rope_attn_factor=yarn_attention_of(cfg) if scaling[0] == 4 else 0.0)


def meta_model(folder, seq_len_cap):
    params_path = os.path.join(folder, "params.json")
    if not os.path.exists(params_path):
        raise ExportError(f"{folder}: no params.json (is this a Meta Llama folder?)")
    params = read_json(params_path)
    shards = sorted(f for f in os.listdir(folder) if f.startswith("consolidated.") and f.endswith(".pth"))
    if not shards:
        raise ExportError(f"{folder}: no consolidated.*.pth files")
    log(f"loading {len(shards)} shard(s) with torch", now=True)
    states = [torch_load(os.path.join(folder, f)) for f in shards]
    # tensors split across model-parallel shards: along the output dim, except these along the input
    cat_dim1 = ("tok_embeddings.weight", ".wo.weight", ".w2.weight")

    def getter(name):
        key = {"tok_embeddings": "tok_embeddings.weight", "norm": "norm.weight", "output": "output.weight"}.get(name)
        if key is None:
            _, layer, k = name.split(".")
            kind = {"attention_norm": "attention_norm", "ffn_norm": "ffn_norm"}.get(k)
            key = f"layers.{layer}.{kind}.weight" if kind else \
                f"layers.{layer}.{'feed_forward' if k in ('w1', 'w2', 'w3') else 'attention'}.{k}.weight"
        parts = [to_numpy(s[key]) for s in states]
        if len(parts) == 1 or parts[0].ndim == 1:
            return parts[0]
        return np.concatenate(parts, axis=1 if key.endswith(cat_dim1) else 0)

    emb = getter("tok_embeddings")
    dim = params["dim"]
    n_heads = params["n_heads"]
    return Model(source=folder, arch="Meta Llama", dim=dim, hidden_dim=getter("layers.0.w1").shape[0],
                 n_layers=params["n_layers"], n_heads=n_heads, n_kv_heads=params.get("n_kv_heads") or n_heads,
                 head_size=dim // n_heads, vocab_size=emb.shape[0], seq_len=seq_len_cap or 4096,
                 norm_eps=float(params.get("norm_eps", 1e-5)), rope_theta=float(params.get("rope_theta", 10000.0)),
                 rope_layout=0, getter=getter, source_dtype="bf16")


def llama2c_bin_model(path, seq_len_cap):
    """llama2.c's own fp32 checkpoints: v0 (7-int header) or v1 ("ak42" version 1)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if len(data) < 28:
        raise ExportError(f"{path}: too small for a llama2.c checkpoint")
    magic, version = struct.unpack("<Ii", bytes(data[:8]))
    if magic == MAGIC:
        if version != 1:
            raise ExportError(f"{path}: llama2.c version {version}; only v0 and v1 (fp32) convert (v2 is already quantized)")
        d, h, L, nh, nkv, vocab, seq = struct.unpack("<7i", bytes(data[8:36]))
        shared, off = bool(data[36]), 256
    else:
        d, h, L, nh, nkv, vocab, seq = struct.unpack("<7i", bytes(data[:28]))
        shared, vocab, off = vocab > 0, abs(vocab), 28
    if min(d, h, L, nh, nkv, vocab, seq) <= 0 or d % nh or nh % nkv:
        raise ExportError(f"{path}: not a llama2.c checkpoint (header {d}, {h}, {L}, {nh}, {nkv}, {vocab}, {seq})")
    hs, kv = d // nh, d // nh * nkv
    x = data[off:].view("<f4") if (len(data) - off) % 4 == 0 else None
    if x is None:
        raise ExportError(f"{path}: the tensor data is not a whole number of floats")
    shapes = {"tok_embeddings": (vocab, d), "attention_norm": (L, d), "ffn_norm": (L, d), "norm": (d,),
              "wq": (L, d, d), "wk": (L, kv, d), "wv": (L, kv, d), "wo": (L, d, d), "w1": (L, h, d),
              "w2": (L, d, h), "w3": (L, h, d), "freq_cis": (seq, hs), "output": (vocab, d)}
    order = (["tok_embeddings", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm", "freq_cis"]
             if version != 1 or magic != MAGIC else
             ["attention_norm", "ffn_norm", "norm", "tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w2", "w3"])
    if not shared:
        order.append("output")
    where, pos = {}, 0
    for name in order:
        n = int(np.prod(shapes[name]))
        where[name] = (pos, shapes[name])
        pos += n
    if pos > len(x):
        raise ExportError(f"{path}: truncated: the header implies {off + 4 * pos} bytes, the file has {len(data)}")

    def getter(name):
        key = name.split(".")[-1] if name.startswith("layers.") else name
        if key == "output" and shared:
            key = "tok_embeddings"
        start, shape = where[key]
        t = x[start:start + int(np.prod(shape))].reshape(shape)
        return np.array(t[int(name.split(".")[1])] if name.startswith("layers.") else t, dtype=np.float32)

    return Model(source=path, arch="llama2.c", dim=d, hidden_dim=h, n_layers=L, n_heads=nh, n_kv_heads=nkv,
                 head_size=hs, vocab_size=vocab, seq_len=min(seq, seq_len_cap or seq), rope_layout=0, tied=shared,
                 getter=getter, source_dtype="fp32")


def llama2c_model(path, seq_len_cap):
    ckpt = torch_load(path)
    args, state = ckpt["model_args"], ckpt["model"]
    state = {k[len("_orig_mod."):] if k.startswith("_orig_mod.") else k: v for k, v in state.items()}

    def getter(name):
        key = {"tok_embeddings": "tok_embeddings.weight", "norm": "norm.weight", "output": "output.weight"}.get(name)
        if key is None:
            _, layer, k = name.split(".")
            if k in ("attention_norm", "ffn_norm"):
                key = f"layers.{layer}.{k}.weight"
            else:
                key = f"layers.{layer}.{'feed_forward' if k in ('w1', 'w2', 'w3') else 'attention'}.{k}.weight"
        return to_numpy(state[key])

    dim, n_heads = args["dim"], args["n_heads"]
    tied = "output.weight" not in state or np.array_equal(getter("output"), getter("tok_embeddings"))
    return Model(source=path, arch="llama2.c", dim=dim, hidden_dim=getter("layers.0.w1").shape[0],
                 n_layers=args["n_layers"], n_heads=n_heads, n_kv_heads=args.get("n_kv_heads") or n_heads,
                 head_size=dim // n_heads, vocab_size=args["vocab_size"],
                 seq_len=min(args["max_seq_len"], seq_len_cap or args["max_seq_len"]),
                 norm_eps=float(args.get("norm_eps", 1e-5)), rope_layout=0, tied=tied, getter=getter,
                 source_dtype="fp32")


# ----------------------------------------------------------------------------
# Tensor encodings

def to_bf16(x):
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16)


def quantize_q8(x, group_size):
    """Groups of group_size along the flattened array: int8 values and one fp32 scale per group."""
    g = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, group_size)
    scale = np.abs(g).max(axis=1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.round(g / safe[:, None]).astype(np.int8)
    return q.reshape(-1), scale.astype(np.float32)


def quantize_q4(x, group_size):
    """4-bit groups: scale d = (the value of largest magnitude) / -8, so that value maps to -8 exactly;
    q = clamp(round(x / d) + 8, 0, 15); byte j of a group holds q[j] (low nibble) and q[j + gs/2]."""
    g = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, group_size)
    extreme = g[np.arange(len(g)), np.abs(g).argmax(axis=1)]
    if np.abs(extreme).max(initial=0) > 8 * 65504:
        raise ExportError(f"a weight of magnitude {np.abs(extreme).max():g} is beyond q4_0's fp16 scales; "
                          "use --dtype q8_0 or bf16")
    d = (extreme / -8.0).astype(np.float16)  # stored as fp16; quantize with the stored value
    df = d.astype(np.float32)
    inv = np.divide(1.0, df, out=np.zeros_like(df), where=df != 0)
    q = np.clip(np.floor(g * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    half = group_size // 2
    return (q[:, :half] | (q[:, half:] << 4)).reshape(-1), d


def encode_matrix(x, dtype, group_size):
    """The bytes of one matrix in dtype; for q8_0 a pair (values, scales)."""
    if dtype == "fp32":
        return [x.astype("<f4").tobytes()]
    if dtype == "fp16":
        return [x.astype("<f2").tobytes()]
    if dtype == "bf16":
        return [to_bf16(x).tobytes()]
    if dtype == "q4_0":
        q, d = quantize_q4(x, group_size)
        return [q.tobytes(), d.astype("<f2").tobytes()]
    q, s = quantize_q8(x, group_size)
    return [q.tobytes(), s.astype("<f4").tobytes()]


def halves_to_pairs(w, n_heads, head_size):
    """Reorders q/k projection rows from Hugging Face's rotate-half RoPE to interleaved pairs."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, head_size // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


# ----------------------------------------------------------------------------
# Writers

WRITE_HINTS = {errno.ENOSPC: "the disk is full: free some space or write elsewhere",
               errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
               errno.EFBIG: "larger than the file system or `ulimit -f` allows: write elsewhere",
               errno.EROFS: "a read-only file system: write elsewhere",
               errno.EACCES: "no permission: write to a folder of yours",
               errno.EPERM: "no permission: write to a folder of yours"}


class Writer:
    """A temporary file beside the output, renamed over it only when complete:
        with Writer(out, total_bytes) as w: w.write(...)
    Any failure removes the temporary file, so nothing half-written is ever left, and a write error
    (a full disk, say) is reported as one line naming the output."""

    def __init__(self, out, total_bytes):
        self.out, self.tmp = out, f"{out}.tmp-{os.getpid()}"
        self.total, self.done, self.start = max(total_bytes, 1), 0, time.time()

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.out))
        disk = os.statvfs(folder) if hasattr(os, "statvfs") else None
        free = disk.f_bavail * disk.f_frsize if disk else self.total
        if free < self.total:
            raise ExportError(f"cannot write {self.out}: it needs {self.total / 2**20:.1f} MiB and {folder} has "
                              f"{free / 2**20:.1f} MiB free (free some space or write elsewhere)")
        try:
            self.f = open(self.tmp, "wb")
        except OSError as e:
            raise self.error(e) from None
        release_log()
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None:
            try:
                self.f.close()
                os.replace(self.tmp, self.out)
                return False
            except OSError as e:
                exc = e
        for cleanup in (self.f.close, lambda: os.remove(self.tmp)):
            try:
                cleanup()
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.filename in (None, self.tmp, self.out):  # not an input's read error
            raise self.error(exc) from None
        return False

    def error(self, e):
        hint = WRITE_HINTS.get(e.errno)
        return ExportError(f"cannot write {self.out}: {e.strerror or e}{f' ({hint})' if hint else ''}; "
                           "nothing was written")

    def pad(self, align):
        self.write(b"\0" * (-self.f.tell() % align))

    def write(self, data):
        self.f.write(data)
        self.done += len(data)

    def progress(self, index, count, name, shape, dtype):
        elapsed = time.time() - self.start
        eta = max(0.0, elapsed / self.done * (self.total - self.done)) if self.done else 0.0
        log(f"[{index:4d}/{count}] {name:28s} {str(tuple(shape)):16s} {dtype:5s} "
            f"{self.done / 2**20:9.1f} MiB  ETA {eta:5.0f}s")


def tensor_plan(m):
    """(name, is_matrix) in v3 order."""
    plan = [("tok_embeddings", True)]
    for l in range(m.n_layers):
        p = f"layers.{l}."
        plan += [(p + "attention_norm", False), (p + "wq", True), (p + "wk", True), (p + "wv", True)]
        if m.qkv_bias:
            plan += [(p + "bq", False), (p + "bk", False), (p + "bv", False)]
        if m.qk_norm:
            plan += [(p + "q_norm", False), (p + "k_norm", False)]
        plan.append((p + "wo", True))
        if m.sandwich:
            plan.append((p + "post_att_norm", False))
        plan += [(p + "ffn_norm", False), (p + "w1", True), (p + "w2", True), (p + "w3", True)]
        if m.sandwich:
            plan.append((p + "post_ffn_norm", False))
    plan.append(("norm", False))
    if m.longrope is not None:
        plan += [("rope_short", False), ("rope_long", False)]
    if not m.tied:
        plan.append(("output", True))
    return plan


def expected_shape(m, name):
    q, kv, d, h, v = m.n_heads * m.head_size, m.n_kv_heads * m.head_size, m.dim, m.hidden_dim, m.vocab_size
    key = name.split(".")[-1]
    r = (m.rotary_dim or m.head_size) // 2
    return {"tok_embeddings": (v, d), "output": (v, d), "norm": (d,), "attention_norm": (d,), "ffn_norm": (d,),
            "wq": (q, d), "wk": (kv, d), "wv": (kv, d), "bq": (q,), "bk": (kv,), "bv": (kv,), "wo": (d, q),
            "w1": (h, d), "w2": (d, h), "w3": (h, d), "q_norm": (m.head_size,), "k_norm": (m.head_size,),
            "post_att_norm": (d,), "post_ffn_norm": (d,), "rope_short": (r,), "rope_long": (r,)}[key]


def load_tensor(m, name):
    x = m.tensor(name)
    want = expected_shape(m, name)
    if tuple(x.shape) != want:
        raise ExportError(f"tensor {name} has shape {tuple(x.shape)}, expected {want} from the config")
    return x


def preflight(m):
    """Every tensor the conversion needs is present with its shape and a supported dtype, checked before
    writing where the source tells shapes without loading the data (safetensors headers)."""
    if m.shape is None:
        return
    for name, _ in tensor_plan(m):
        got, want = tuple(m.shape(name)), expected_shape(m, name)
        if got != want:
            raise ExportError(f"tensor {name} has shape {got}, expected {want} from the config")


def bytes_per_weight(dtype, gs):
    return {"fp32": 4, "fp16": 2, "bf16": 2, "q8_0": 1 + 4 / max(gs, 1), "q4_0": 0.5 + 2 / max(gs, 1)}[dtype]


def describe(dtype, gs):
    groups = f"groups of {gs}, " if gs else ""
    return f"{dtype} ({groups}{bytes_per_weight(dtype, gs):.3g} bytes per weight)"


def pick_group_size(rows, requested, dtype):
    """The q8_0/q4_0 group length; it must divide every row length (rows: {what: length}). By default q8_0
    takes 64, else 32, and q4_0 32: the sizes run.c's fast integer kernels take (run_int_simd_ok: q8_0 a
    multiple of 32, q4_0 32 or 64). When neither fits, the largest size up to 64 that does, with a note on
    what that costs; q4_0 also needs an even size of at most 256."""
    lengths = ", ".join(f"{k} {v}" for k, v in rows.items())

    def fits(g):
        return all(r % g == 0 for r in rows.values()) and not (dtype == "q4_0" and (g % 2 or g > 256))

    fitting = [g for g in range(64, 0, -1) if fits(g)]
    fast = [g for g in ((64, 32) if dtype == "q8_0" else (32,)) if fits(g)]
    if requested:
        if not fits(requested):
            hint = f"leave --group-size out to get {(fast or fitting)[0]}" if fitting else "use --dtype q8_0 or bf16"
            raise ExportError(f"--group-size {requested} does not divide the row lengths ({lengths})"
                              f"{' or is not an even size <= 256 as q4_0 needs' if dtype == 'q4_0' else ''}; {hint}")
        return requested
    if fast:
        return fast[0]
    if not fitting:
        raise ExportError(f"no {dtype} group size fits the row lengths ({lengths}): q4_0 needs an even size that "
                          "divides them all; use --dtype q8_0 or bf16")
    gs = fitting[0]
    per = bytes_per_weight(dtype, gs)
    versus = "more than" if per > 2 else "as much as" if per == 2 else "vs"
    log(f"note: {dtype} groups of {gs}, the largest size that divides the row lengths ({lengths}); run.c's fast "
        f"kernels need groups of {'a multiple of 32' if dtype == 'q8_0' else '32 or 64'}, so this file runs on slower "
        f"scalar code and takes {per:.2f} bytes per weight ({versus} bf16's 2); run.c's format with --dtype bf16 or "
        "fp16 may serve better")
    return gs


def write_v3(m, out, dtype, gs, tokenizer_bytes):
    """run.c's format; gs is the group size for q8_0/q4_0 (pick_group_size), 0 otherwise."""
    plan = tensor_plan(m)
    per = bytes_per_weight(dtype, gs)
    tok_offset = 256
    tensor_offset = (tok_offset + len(tokenizer_bytes) + ALIGN - 1) // ALIGN * ALIGN
    total = tensor_offset + sum(int(math.prod(expected_shape(m, n)) * (per if mat else 4)) for n, mat in plan)
    st, factor, low, high, orig = m.rope_scaling
    header = bytearray(256)  # the layout is documented at the top of run.c
    struct.pack_into("<I9i2f2i3fi", header, 0, MAGIC, 3, m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads,
                     m.head_size, m.vocab_size, m.seq_len, m.norm_eps, m.rope_theta, m.rope_layout, st, factor,
                     low, high, orig)
    flags = ((1 if m.qkv_bias else 0) | (2 if m.tied else 0) | (4 if m.qk_norm else 0) | (8 if m.sandwich else 0) |
             (16 if m.longrope is not None else 0))
    struct.pack_into("<iii", header, 72, flags, DTYPES[dtype], gs)
    struct.pack_into("<i4f2i2fi", header, 112, m.rotary_dim, m.embed_scale, m.attn_scale, m.softcaps[0], m.softcaps[1],
                     m.window[0], m.window[1], m.rope_local_theta, m.longrope[2] if m.longrope is not None else m.rope_attn_factor,
                     m.activation)
    struct.pack_into("<QQQ", header, 88, tok_offset if tokenizer_bytes else 0, len(tokenizer_bytes), tensor_offset)
    with Writer(out, total) as w:
        w.write(bytes(header))
        w.write(tokenizer_bytes)
        for i, (name, is_matrix) in enumerate(plan):
            x = load_tensor(m, name)
            w.pad(ALIGN)
            if is_matrix:
                for j, part in enumerate(encode_matrix(x, dtype, gs)):
                    if j:
                        w.pad(ALIGN)
                    w.write(part)
            else:
                w.write(x.astype("<f4").tobytes())
            w.progress(i + 1, len(plan), name, x.shape, dtype if is_matrix else "fp32")
    return sum(int(math.prod(expected_shape(m, n))) for n, _ in plan), os.path.getsize(out)


# --check's tolerance for q4_0, in steps of the stored scale d. The quantizer stores d = fp16(e / -8) for the
# group's value e of largest magnitude, so |d - e/-8| <= 2^-11 |e/8| (round to nearest), and a value x becomes
# q = clamp(round(x / d), -8, 7). Unclamped values are within half a step. The clamp: x = -e (the opposite
# extreme) has x / d = |e/8| / |d| * 8 <= 8 / (1 - 2^-11) steps when d rounded towards zero, rounds to 8 and
# clamps to 7, so it is off by up to 1 + 8 * 2^-11 / (1 - 2^-11) = 1.0039 steps. Below fp16's normal range
# the rounding of d is absolute, at most 2^-25, which adds at most 8 * 2^-25.
Q4_STEPS, Q4_ABS = 1 + 8 * 2**-11 / (1 - 2**-11), 8 * 2**-25


def check_v3(m, path, names):
    """Re-reads the named tensors of a written v3 file and compares them with the source: exact for fp32,
    fp16 and bf16 (against the same rounding), within half a step for q8_0 and Q4_STEPS for q4_0."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    dtype = {v: k for k, v in DTYPES.items()}[struct.unpack_from("<i", data, 76)[0]]
    gs = struct.unpack_from("<i", data, 80)[0]
    off = struct.unpack_from("<Q", data, 104)[0]
    checked = 0
    for name, is_matrix in tensor_plan(m):
        n = int(math.prod(expected_shape(m, name)))
        kind = dtype if is_matrix else "fp32"
        sizes = {"fp32": [4 * n], "fp16": [2 * n], "bf16": [2 * n], "q8_0": [n, 4 * (n // max(gs, 1))],
                 "q4_0": [n // 2, 2 * (n // max(gs, 1))]}[kind]
        parts = []
        for size in sizes:
            off = (off + ALIGN - 1) // ALIGN * ALIGN
            if off + size > len(data):
                raise ExportError(f"--check: {path} ends inside tensor {name}")
            parts.append(data[off:off + size])
            off += size
        if name not in names:
            continue
        want = load_tensor(m, name).astype(np.float32).reshape(-1)
        worst = ""
        if kind == "fp32":
            ok = np.array_equal(parts[0].view("<f4"), want)
        elif kind in ("fp16", "bf16"):
            ok = np.array_equal(parts[0].view("<u2"), want.astype("<f2").view("<u2") if kind == "fp16" else to_bf16(want))
        else:
            if kind == "q8_0":
                scales = parts[1].view("<f4").astype(np.float64)
                values = parts[0].view(np.int8).astype(np.float64).reshape(-1, gs)
                limit = 0.5001 * np.abs(scales) + 1e-12
            else:
                scales = parts[1].view("<f2").astype(np.float64)
                b = parts[0].reshape(-1, gs // 2)
                values = np.concatenate([b & 15, b >> 4], axis=1).astype(np.float64) - 8
                limit = Q4_STEPS * np.abs(scales) + Q4_ABS
            err = np.abs(values * scales[:, None] - want.reshape(-1, gs))  # in float64: exact
            ok = bool(np.all(err <= limit[:, None]))
            steps = err / np.where(scales == 0, 1, np.abs(scales))[:, None]
            worst = f" (worst error {steps.max():.4g} quantization steps)"
        if not ok:
            raise ExportError(f"--check: tensor {name} in {path} does not match the source{worst}")
        checked += 1
    log(f"check: {checked} tensors re-read from {path} match the source ({dtype})")


# ----------------------------------------------------------------------------
# GGUF (llama.cpp's format, version 3): "GGUF", u32 version, u64 tensor count, u64 key count, the keys
# (u64-length string, u32 value type, value), the tensor table (name, u32 n_dims, u64 ne[n_dims] with
# ne[0] the row length, so the numpy shape reversed, u32 ggml type, u64 offset from the data start),
# then the data, every tensor at a multiple of 32 bytes. Little-endian throughout.

GGUF_MAGIC, GGUF_VERSION, GGUF_ALIGN = b"GGUF", 3, 32
GV_U8, GV_I8, GV_U16, GV_I16, GV_U32, GV_I32, GV_F32, GV_BOOL, GV_STR, GV_ARR, GV_U64, GV_I64, GV_F64 = range(13)
GV_FORMAT = {GV_U8: "<B", GV_I8: "<b", GV_U16: "<H", GV_I16: "<h", GV_U32: "<I", GV_I32: "<i", GV_F32: "<f",
             GV_BOOL: "<?", GV_U64: "<Q", GV_I64: "<q", GV_F64: "<d"}
# ggml types: id, values per block, bytes per block
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144),
        "BF16": (30, 1, 2)}
GGML_NAME = {v[0]: k for k, v in GGML.items()}
GGUF_TYPE_OF = {"fp32": "F32", "fp16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k": "Q4_K"}
# llama.cpp's llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0, MOSTLY_BF16, MOSTLY_Q4_K_M
GGUF_FILE_TYPE = {"fp32": 0, "fp16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32, "q4_k": 15}
GGUF_TENSOR = {"tok_embeddings": "token_embd.weight", "norm": "output_norm.weight", "output": "output.weight",
               "attention_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
               "wv": "attn_v.weight", "bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias",
               "wo": "attn_output.weight", "ffn_norm": "ffn_norm.weight", "w1": "ffn_gate.weight",
               "w2": "ffn_down.weight", "w3": "ffn_up.weight", "q_norm": "attn_q_norm.weight",
               "k_norm": "attn_k_norm.weight", "post_att_norm": "post_attention_norm.weight",
               "post_ffn_norm": "post_ffw_norm.weight", "rope_short": "rope_factors_short.weight",
               "rope_long": "rope_factors_long.weight"}
# llama.cpp's architecture of each source (Mistral is llama's; its window is written, which llama.cpp ignores)
GGUF_ARCH = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2",
             "Gemma3ForCausalLM": "gemma3", "Phi3ForCausalLM": "phi3"}
GGUF_CHUNK = 1 << 20  # values encoded at a time (a multiple of every block size), bounding the memory used

# Jinja chat templates written when --chat-template names a kind other than the source's own template;
# each holds the markers by which run.c (apply_tokenizer_config) and llama.cpp recognize its kind.
CHATML_LOOP = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def chatml_with_default(system):
    return ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n" + system + "<|im_end|>\\n' }}{% endif %}"
            + CHATML_LOOP)


JINJA = {
    "chatml": CHATML_LOOP,
    "qwen2.5": chatml_with_default("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    "smollm2": chatml_with_default("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    "llama3.1": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
                "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
                "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\nToday Date: "
                "26 Jul 2024\\n\\n' + system + '<|eot_id|>' }}{% for message in messages %}{{ '<|start_header_id|>' + "
                "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "llama3": "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "zephyr": "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' }}"
              "{% elif message['role'] == 'system' %}{{ '<|system|>\\n' }}{% else %}{{ '<|assistant|>\\n' }}{% endif %}"
              "{{ message['content'] + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|assistant|>\\n' }}{% endif %}",
    "llama2": "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
              "{% if message['role'] == 'system' %}{% set ns.system = '<<SYS>>\\n' + message['content'] + "
              "'\\n<</SYS>>\\n\\n' %}{% elif message['role'] == 'user' %}{{ '[INST] ' + ns.system + "
              "message['content'] + ' [/INST]' }}{% set ns.system = '' %}{% else %}{{ ' ' + message['content'] + "
              "' ' + eos_token }}{% endif %}{% endfor %}",
    "mistral": "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
               "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
               "{% elif message['role'] == 'user' %}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}"
               "{% set ns.system = '' %}{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}",
}


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, value):
    """One key: for arrays vtype is (GV_ARR, element type) and value a list or numpy array."""
    out = [gguf_string(key)]
    if isinstance(vtype, tuple):
        elem = vtype[1]
        out.append(struct.pack("<IIQ", GV_ARR, elem, len(value)))
        if elem == GV_STR:  # (vocabularies: 100k+ strings)
            length = struct.Struct("<Q").pack
            out += [length(len(b)) + b for b in (x.encode("utf-8") for x in value)]
        else:
            out.append(np.asarray(value, dtype=GV_FORMAT[elem]).tobytes())
    elif vtype == GV_STR:
        out += [struct.pack("<I", GV_STR), gguf_string(value)]
    else:
        out.append(struct.pack("<I", vtype) + struct.pack(GV_FORMAT[vtype], value))
    return b"".join(out)


def gguf_arch(m):
    return GGUF_ARCH.get(m.arch, "llama")


def gguf_tensor_name(name):
    if isinstance(name, tuple):  # fused: (wq, wk, wv) or (w1, w3)
        layer = name[0].split(".")[1]
        return f"blk.{layer}.{'attn_qkv' if name[0].endswith('wq') else 'ffn_up'}.weight"
    if name.startswith("layers."):
        _, layer, key = name.split(".")
        return f"blk.{layer}.{GGUF_TENSOR[key]}"
    return GGUF_TENSOR[name]


def gguf_plan(m, dtype):
    """[(GGUF name, source name, numpy shape, ggml type name)] in writing order: 1-D tensors are F32, matrices
    dtype's type, or (rows that are not whole blocks) F16, Q8_0 for q4_k rows of whole 32s; notes on those."""
    plan = []
    if m.rope_scaling[0] == 2:
        plan.append(("rope_freqs.weight", "rope_freqs", (m.head_size // 2,), "F32"))
    wanted, fallbacks = GGUF_TYPE_OF[dtype], {}
    entries = [(name, is_matrix, expected_shape(m, name)) for name, is_matrix in tensor_plan(m)]
    if gguf_arch(m) == "phi3":  # llama.cpp's Phi-3 reads q, k, v as one attn_qkv and gate, up as one ffn_up
        fused, parts = [], {}
        for name, is_matrix, shape in entries:
            key = name.split(".")[-1]
            if key in ("wq", "wk", "wv", "w1", "w3"):
                group = name.rsplit(".", 1)[0] + (".qkv" if key in ("wq", "wk", "wv") else ".up")
                parts.setdefault(group, []).append((name, shape))
                if key in ("wv", "w3"):
                    names, shapes = zip(*parts[group])
                    fused.append((names, True, (sum(x[0] for x in shapes), shapes[0][1])))
            else:
                fused.append((name, is_matrix, shape))
        entries = fused
    for name, is_matrix, shape in entries:
        kind = "F32"
        if is_matrix:
            kind = wanted
            if shape[-1] % GGML[kind][1]:
                kind = "Q8_0" if kind == "Q4_K" and shape[-1] % 32 == 0 else "F16"
                fallbacks.setdefault((kind, shape[-1]), []).append(re.sub(r"^blk\.\d+\.", "blk.N.", gguf_tensor_name(name)))
        plan.append((gguf_tensor_name(name), name, shape, kind))
    for (kind, cols), names in fallbacks.items():
        names = list(dict.fromkeys(names))
        log(f"note: {', '.join(names)}: rows of {cols} values, not a multiple of {wanted}'s {GGML[wanted][1]}-value "
            f"blocks, so {'these matrices are' if len(names) > 1 or 'blk.N.' in names[0] else 'it is'} written as "
            f"{kind}")
    return plan


def gguf_nbytes(kind, n):
    _, per_block, size = GGML[kind]
    return n // per_block * size


def llama3_rope_factors(m):
    """Llama 3.1's "llama3" RoPE scaling as the divisors of each frequency (llama.cpp's rope_freqs tensor),
    computed in float32 as llama.cpp's convert_hf_to_gguf.py does: 1 for wavelengths below
    original_context / high_freq_factor, factor above original_context / low_freq_factor, and between them
    1 / ((1 - smooth) / factor + smooth), smooth = (original_context / wavelength - low) / (high - low)."""
    _, factor, low, high, orig = m.rope_scaling
    f32, d = np.float32, m.head_size
    freqs = f32(1) / (f32(m.rope_theta) ** (np.arange(0, d, 2, dtype=f32) / f32(d)))
    wavelen = f32(2 * math.pi) / freqs
    with np.errstate(divide="ignore", invalid="ignore"):  # high == low leaves no band in between
        smooth = (f32(orig) / wavelen - f32(low)) / (f32(high) - f32(low))
        between = f32(1) / ((f32(1) - smooth) / f32(factor) + smooth)
    out = np.where(wavelen < f32(orig / high), f32(1), np.where(wavelen > f32(orig / low), f32(factor), between))
    return out.astype(np.float32)


def pairs_to_halves(w, n_heads, head_size):
    """The inverse of halves_to_pairs: interleaved RoPE pairs back to Hugging Face's rotate-half rows."""
    rows, cols = w.shape
    return w.reshape(n_heads, head_size // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def gguf_source(m, name, arch):
    """A tensor as the GGUF holds it (float32): arch llama wants q/k rows in interleaved pairs (llama.cpp's
    LlamaModel.permute of Hugging Face's rotate-half rows), qwen2 in halves (its RoPE is NeoX's)."""
    if name == "rope_freqs":
        return llama3_rope_factors(m)
    if isinstance(name, tuple):  # rows of each part in turn
        return np.concatenate([gguf_source(m, part, arch) for part in name])
    x = load_tensor(m, name)
    key = name.split(".")[-1]
    if key in ("wq", "wk", "bq", "bk"):
        want = 0 if arch == "llama" else 1
        if m.rope_layout != want:
            heads = m.n_heads if key in ("wq", "bq") else m.n_kv_heads
            reorder = halves_to_pairs if want == 0 else pairs_to_halves
            x = reorder(x.reshape(x.shape[0], -1), heads, m.head_size).reshape(x.shape)
    return x


def q8_0_blocks(v):
    """ggml's Q8_0: blocks of 32 values, each an fp16 scale d = max|x| / 127 and 32 int8 q = round(x / d).
    The values are rounded with the stored (fp16) scale, so each is within half a step of its source."""
    g = v.reshape(-1, 32)
    amax = np.abs(g).max(axis=1)
    if amax.max(initial=0) > 127 * 65504:
        raise ExportError(f"a weight of magnitude {amax.max():g} is beyond q8_0's fp16 scales; use --dtype bf16 or fp32")
    d = (amax / np.float32(127)).astype(np.float16)
    df = d.astype(np.float32)
    inv = np.divide(np.float32(1), df, out=np.zeros_like(df), where=df != 0)
    q = np.clip(np.rint(g * inv[:, None]), -127, 127).astype(np.int8)
    out = np.empty((len(g), 34), np.uint8)
    out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out


def q4_0_blocks(v):
    """ggml's Q4_0: blocks of 32 values, an fp16 scale d then 16 bytes, byte j holding q[j] (low nibble)
    and q[j + 16]; quantize_q4 with groups of 32 is exactly that."""
    q, d = quantize_q4(v, 32)
    out = np.empty((len(d), 18), np.uint8)
    out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.reshape(-1, 16)
    return out


def q4_k_blocks(v):
    """ggml's Q4_K by quantize_row_q4_K_ref's method (no importance matrix): super-blocks of 256 values in 8
    sub-blocks of 32, each value x ~ d * sc * q - dmin * m with 4-bit q, 6-bit sc and m per sub-block, fp16 d
    and dmin per super-block. Each sub-block's scale and min are fitted by weighted least squares (weights
    sqrt(mean(x^2)) + |x|) on the grids of 21 candidate step sizes, keeping the best (make_qkx2_quants);
    sc and m are then rounded to 6 bits of the block's largest, and q re-rounded with them. Block: d, dmin,
    12 bytes of packed sc/m, 128 bytes of q (byte l of each 32-byte run: sub-block 2c's q[l] low nibble,
    2c+1's high). Computed in float32 with numpy's summation order, so a block can differ from
    llama-quantize's in a rounding-close choice of grid."""
    f32 = np.float32
    x = np.ascontiguousarray(v, np.float32).reshape(-1, 32)  # sub-blocks
    w = np.sqrt((x * x).sum(axis=1, keepdims=True) / f32(32)) + np.abs(x)
    lo, hi = np.minimum(x.min(axis=1), f32(0))[:, None], x.max(axis=1)[:, None]
    flat = (hi == lo)[:, 0]
    span = np.where(hi == lo, f32(1), hi - lo)
    sum_w, sum_x, sum_x2 = w.sum(axis=1), np.einsum("ij,ij->i", w, x), np.einsum("ij,ij,ij->i", w, x, x)
    unit = (x - lo) / span  # each value's place in [0, 1] of its sub-block's range

    def fit(q):
        """Weighted sums of a grid's q: sum(w q), sum(w q^2), sum(w q x)."""
        wq = w * q
        return wq.sum(axis=1), np.einsum("ij,ij->i", wq, q), np.einsum("ij,ij->i", wq, x)

    def error(s, m, sums):
        """sum(w (s q + m - x)^2), expanded into the sums (in float64: the terms nearly cancel)."""
        sl, sl2, sxl = (a.astype(np.float64) for a in sums)
        s, m = s.astype(np.float64), m.astype(np.float64)
        return s * s * sl2 + 2 * s * m * sl - 2 * s * sxl + m * m * sum_w - 2 * m * sum_x + sum_x2

    scale, mn = (span / f32(15))[:, 0], lo[:, 0].copy()
    L = np.clip(np.rint(unit * f32(15)), 0, 15).astype(np.float32)
    best = error(scale, mn, fit(L))
    for step in range(21):
        La = np.clip(np.rint(unit * (f32(14) + f32(0.1) * f32(step))), 0, 15).astype(np.float32)
        sums = fit(La)
        sum_l, sum_l2, sum_xl = sums
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = np.where(ok, D, f32(1))
        this_scale, this_min = (sum_w * sum_xl - sum_x * sum_l) / Ds, (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        positive = this_min > 0  # a min above 0: fit the scale alone
        this_min = np.where(positive, f32(0), this_min)
        this_scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, f32(1)), this_scale)
        err = error(this_scale, this_min, sums)
        better = ok & ~flat & (err < best)
        L[better], best, scale, mn = La[better], np.where(better, err, best), np.where(better, this_scale, scale), \
            np.where(better, this_min, mn)
    scale[flat], L[flat] = 0, 0
    scales, mins = scale.reshape(-1, 8), (-mn).reshape(-1, 8)
    nb = len(scales)
    max_scale, max_min = scales.max(axis=1), mins.max(axis=1)
    inv_s = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_m = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.minimum(np.rint(inv_s[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(np.rint(inv_m[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    d, dmin = (max_scale / f32(63)).astype(np.float16), (max_min / f32(63)).astype(np.float16)
    dd = d.astype(np.float32)[:, None] * ls.astype(np.float32)      # (nb, 8)
    dm = dmin.astype(np.float32)[:, None] * lm.astype(np.float32)
    xb = x.reshape(nb, 8, 32)
    q = np.clip(np.rint((xb + dm[:, :, None]) / np.where(dd == 0, f32(1), dd)[:, :, None]), 0, 15)
    q = np.where((dd == 0)[:, :, None], L.reshape(nb, 8, 32), q).astype(np.uint8)  # as ggml: the fit's q there
    out = np.empty((nb, 144), np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = dmin.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 4:8] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 8:12] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 12:16] = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    pairs = q.reshape(nb, 4, 2, 32)
    out[:, 16:] = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(nb, 128)
    return out


def gguf_encode(x, kind):
    """The bytes of a tensor in ggml type kind, GGUF_CHUNK values at a time."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    for start in range(0, len(flat), GGUF_CHUNK):
        v = flat[start:start + GGUF_CHUNK]
        if kind == "F32":
            yield v.astype("<f4").tobytes()
        elif kind == "F16":
            yield v.astype("<f2").tobytes()
        elif kind == "BF16":
            yield to_bf16(v).astype("<u2").tobytes()
        else:
            yield {"Q8_0": q8_0_blocks, "Q4_0": q4_0_blocks, "Q4_K": q4_k_blocks}[kind](v).tobytes()


def gguf_scales_k4(sc):
    """Q4_K's packed 6-bit scales and mins (nb, 12) -> (sc, m), each (nb, 8)."""
    sc = sc.astype(np.uint16)
    s = np.concatenate([sc[:, 0:4] & 63, (sc[:, 8:12] & 15) | ((sc[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([sc[:, 4:8] & 63, (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)], axis=1)
    return s, m


def gguf_tokenizer_keys(t, vocab_size, template_text):
    """tokenizer.* keys: llama.cpp's "llama" (SentencePiece) or "gpt2" (byte-level BPE) vocabulary, padded
    to the model's vocabulary with unused "[PADn]" tokens as llama.cpp's converter does."""
    n = len(t.tokens)
    pad = range(n, vocab_size)
    kv = [("tokenizer.ggml.model", GV_STR, "llama" if t.kind == 1 else "gpt2")]
    if t.kind == 1:
        pre = "default"
    elif t.split == "gpt2":
        pre = "smollm" if t.flags & TOK_SPLIT_DIGITS else "gpt-2"
    else:
        pre = {"llama3": "llama-bpe", "qwen2": "qwen2", "gpt4o": "gpt-4o"}.get(t.split, "default")
    kv.append(("tokenizer.ggml.pre", GV_STR, pre))
    kv.append(("tokenizer.ggml.tokens", (GV_ARR, GV_STR), t.pieces + [f"[PAD{i}]" for i in pad]))
    if t.kind == 1:
        kv.append(("tokenizer.ggml.scores", (GV_ARR, GV_F32), [s for _, s, _ in t.tokens] + [-1000.0] * len(pad)))
    kv.append(("tokenizer.ggml.token_type", (GV_ARR, GV_I32), t.gtypes + [G_UNUSED] * len(pad)))
    if t.merge_texts:
        kv.append(("tokenizer.ggml.merges", (GV_ARR, GV_STR), t.merge_texts))
    eot = list(dict.fromkeys(t.eot))
    eom = [i for i in eot if t.tokens[i][0] == b"<|eom_id|>"]
    eot = [i for i in eot if i not in eom]
    bos = t.bos if t.bos >= 0 else t.bos_known
    eos = t.eos if t.eos >= 0 else eot[0] if eot else -1
    for key, i in (("bos", bos), ("eos", eos), ("eot", eot[0] if eot else -1), ("eom", eom[0] if eom else -1),
                   ("unknown", t.unk), ("padding", t.pad)):
        if i >= 0:
            kv.append((f"tokenizer.ggml.{key}_token_id", GV_U32, i))
    kv += [("tokenizer.ggml.add_bos_token", GV_BOOL, t.bos >= 0), ("tokenizer.ggml.add_eos_token", GV_BOOL, t.add_eos),
           ("tokenizer.ggml.add_space_prefix", GV_BOOL, bool(t.flags & TOK_DUMMY_PREFIX))]
    if t.kind == 1:
        kv.append(("tokenizer.ggml.remove_extra_whitespaces", GV_BOOL, bool(t.flags & TOK_REMOVE_EXTRA_SPACES)))
    if isinstance(template_text, list):  # named templates: the default one, and each other as chat_template.NAME
        for x in template_text:
            if isinstance(x, dict) and isinstance(x.get("template"), str):
                name = x.get("name", "default")
                kv.append(("tokenizer.chat_template" + ("" if name == "default" else f".{name}"), GV_STR, x["template"]))
    elif template_text:
        kv.append(("tokenizer.chat_template", GV_STR, template_text))
    return kv


def gguf_metadata(m, dtype, t, template_text):
    arch = gguf_arch(m)
    name = os.path.basename(os.path.normpath(m.source))  # the folder's name, or the file's without its extension
    name = (os.path.splitext(name)[0] if os.path.isfile(m.source) else name) or arch
    kv = [("general.architecture", GV_STR, arch), ("general.name", GV_STR, name),
          ("general.file_type", GV_U32, GGUF_FILE_TYPE[dtype])]
    if dtype in ("q8_0", "q4_0", "q4_k"):
        kv.append(("general.quantization_version", GV_U32, 2))
    counts = [("vocab_size", m.vocab_size)] if arch in ("llama", "qwen2") else []
    counts += [("context_length", m.seq_len), ("embedding_length", m.dim), ("block_count", m.n_layers),
               ("feed_forward_length", m.hidden_dim), ("attention.head_count", m.n_heads),
               ("attention.head_count_kv", m.n_kv_heads)]
    if arch in ("llama", "qwen2", "phi3"):
        counts.append(("rope.dimension_count", m.rotary_dim or m.head_size))
    kv += [(f"{arch}.{k}", GV_U32, v) for k, v in counts]
    if m.head_size * m.n_heads != m.dim or arch in ("qwen3", "gemma2", "gemma3"):
        kv += [(f"{arch}.attention.key_length", GV_U32, m.head_size), (f"{arch}.attention.value_length", GV_U32, m.head_size)]
    kv.append((f"{arch}.attention.layer_norm_rms_epsilon", GV_F32, m.norm_eps))
    if arch != "gemma2" or m.rope_theta != 10000.0:  # (Gemma 2's converter writes none: 10000)
        kv.append((f"{arch}.rope.freq_base", GV_F32, m.rope_theta))
    if m.rope_scaling[0] == 1:
        kv += [(f"{arch}.rope.scaling.type", GV_STR, "linear"), (f"{arch}.rope.scaling.factor", GV_F32, m.rope_scaling[1])]
    elif m.rope_scaling[0] == 4:  # (llama.cpp's keys; it derives the attention factor from the factor when absent)
        kv += [(f"{arch}.rope.scaling.type", GV_STR, "yarn"), (f"{arch}.rope.scaling.factor", GV_F32, m.rope_scaling[1]),
               (f"{arch}.rope.scaling.original_context_length", GV_U32, m.rope_scaling[4]),
               (f"{arch}.rope.scaling.yarn_beta_fast", GV_F32, m.rope_scaling[2]),
               (f"{arch}.rope.scaling.yarn_beta_slow", GV_F32, m.rope_scaling[3])]
        mscale = 0.1 * math.log(m.rope_scaling[1]) + 1.0 if m.rope_scaling[1] > 1 else 1.0
        if abs(m.rope_attn_factor / mscale - 1.0) > 1e-6:  # (llama.cpp multiplies the key's value by mscale itself)
            kv.append((f"{arch}.rope.scaling.attn_factor", GV_F32, m.rope_attn_factor / mscale))
    window, period = m.window
    if arch == "gemma2":
        kv += [("gemma2.attn_logit_softcapping", GV_F32, m.softcaps[0]), ("gemma2.final_logit_softcapping", GV_F32, m.softcaps[1]),
               ("gemma2.attention.sliding_window", GV_U32, window)]
    elif arch == "gemma3":
        if m.softcaps[1]:
            kv.append(("gemma3.final_logit_softcapping", GV_F32, m.softcaps[1]))
        if window:
            kv.append(("gemma3.attention.sliding_window", GV_U32, window))
        if window and period != 6:  # (newer llama.cpp's keys; 6 and 10000 are what it assumes without them)
            kv.append(("gemma3.attention.sliding_window_pattern", GV_U32, period))
        if m.rope_local_theta and m.rope_local_theta != 10000.0:
            kv.append(("gemma3.rope.freq_base_swa", GV_F32, m.rope_local_theta))
    elif arch == "phi3":
        kv.append(("phi3.attention.sliding_window", GV_U32, window))
        if m.longrope is not None:
            kv += [("phi3.rope.scaling.original_context_length", GV_U32, m.rope_scaling[4]),
                   ("phi3.rope.scaling.attn_factor", GV_F32, m.longrope[2])]
    elif window:  # Mistral's: llama.cpp ignores it (full attention); run.c applies it, as Hugging Face does
        kv.append((f"{arch}.attention.sliding_window", GV_U32, window))
    if t is not None:
        kv += gguf_tokenizer_keys(t, m.vocab_size, template_text)
    else:  # llama.cpp loads a file whose vocabulary is "none" (and can then run only on token ids)
        kv.append(("tokenizer.ggml.model", GV_STR, "none"))
    return kv


def gguf_refusals(m, arch):
    """What a GGUF cannot say about this model (llama.cpp derives it from the shape, with no key for it)."""
    if arch in ("gemma2", "gemma3"):
        big = m.n_layers == (46 if arch == "gemma2" else 62)  # 27B: llama.cpp's rule
        rule = np.float32(1) / np.sqrt(np.float32(m.dim / m.n_heads if big else m.head_size))
        if m.attn_scale and abs(m.attn_scale - rule) > 1e-6 * rule:
            raise ExportError(f"{m.source}: query_pre_attn_scalar {m.attn_scale ** -2:g} is not what llama.cpp assumes for this "
                              f"shape ({float(rule) ** -2:g}) and GGUF has no key for it: use run.c's format (leave out --format gguf)")
        if m.embed_scale != round_to_dtype(math.sqrt(m.dim), "bfloat16"):
            log(f"note: run.c scales a Gemma GGUF's embeddings by sqrt({m.dim}) in bf16, as the released models run; "
                f"this {m.source_dtype} model's own scale is {m.embed_scale:g}")


def write_gguf(m, out, dtype, t, template_text):
    """llama.cpp's GGUF v3, tensor by tensor; returns (parameters, bytes, the plan)."""
    arch, plan = gguf_arch(m), gguf_plan(m, dtype)
    gguf_refusals(m, arch)
    kv = gguf_metadata(m, dtype, t, template_text)
    head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(plan), len(kv))] + [gguf_kv(*x) for x in kv]
    offset = 0
    for name, _, shape, kind in plan:
        ne = tuple(reversed(shape))
        head.append(gguf_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, GGML[kind][0], offset))
        offset += -(-gguf_nbytes(kind, math.prod(shape)) // GGUF_ALIGN) * GGUF_ALIGN
    head = b"".join(head)
    data_start = -(-len(head) // GGUF_ALIGN) * GGUF_ALIGN
    with Writer(out, data_start + offset) as w:
        w.write(head)
        w.pad(GGUF_ALIGN)
        for i, (name, source, shape, kind) in enumerate(plan):
            x = gguf_source(m, source, arch)
            start = w.done
            for part in gguf_encode(x, kind):
                w.write(part)
            if w.done - start != gguf_nbytes(kind, math.prod(shape)):
                raise ExportError(f"internal error: {name} took {w.done - start} bytes, expected "
                                  f"{gguf_nbytes(kind, math.prod(shape))}")
            w.pad(GGUF_ALIGN)
            w.progress(i + 1, len(plan), name, shape, kind)
    return sum(math.prod(s) for _, n, s, _ in plan if n not in ("rope_freqs", "rope_short", "rope_long")), os.path.getsize(out), plan


class GGUFFile:
    """A GGUF file read back (for --check): .meta {key: value}, .tensors {name: (ne, ggml type id, absolute
    offset)}, .data (the memory-mapped bytes)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        self.path, self.pos = path, 0
        try:
            self.parse()
        except (UnicodeDecodeError, struct.error, KeyError, ValueError) as e:
            raise ExportError(f"--check: {path}: damaged metadata ({type(e).__name__}: {e})")

    def parse(self):
        path = self.path
        if bytes(self.take(4)) != GGUF_MAGIC:
            raise ExportError(f"--check: {path} does not start with GGUF's magic")
        version, n_tensors, n_kv = self.unpack("<IQQ")
        if version != GGUF_VERSION:
            raise ExportError(f"--check: {path} is GGUF version {version}, not {GGUF_VERSION}")
        self.meta = {}
        for _ in range(n_kv):
            key = self.string()
            self.meta[key] = self.value(self.unpack("<I")[0])
        table = []
        for _ in range(n_tensors):
            name = self.string()
            (nd,) = self.unpack("<I")
            ne = self.unpack(f"<{nd}Q")
            kind, off = self.unpack("<IQ")
            table.append((name, ne, kind, off))
        start = -(-self.pos // GGUF_ALIGN) * GGUF_ALIGN
        self.tensors = {name: (tuple(ne), kind, start + off) for name, ne, kind, off in table}

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ExportError(f"--check: {self.path} ends inside its metadata")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self):
        return str(self.take(self.unpack("<Q")[0]), "utf-8")

    def value(self, vtype):
        if vtype == GV_STR:
            return self.string()
        if vtype == GV_ARR:
            elem, n = self.unpack("<IQ")
            if elem == GV_STR:  # (a loop of its own: vocabularies hold 100k+ strings)
                out, data, pos = [], self.data, self.pos
                try:
                    for _ in range(n):
                        (size,) = struct.unpack_from("<Q", data, pos)
                        out.append(str(data[pos + 8:pos + 8 + size], "utf-8"))
                        pos += 8 + size
                except struct.error:
                    pos = len(data) + 1
                if pos > len(data):
                    raise ExportError(f"--check: {self.path} ends inside its metadata")
                self.pos = pos
                return out
            size = struct.calcsize(GV_FORMAT[elem])
            return np.frombuffer(self.take(n * size), dtype=GV_FORMAT[elem]).copy()
        return self.unpack(GV_FORMAT[vtype])[0]

    def raw(self, name):
        ne, kind, off = self.tensors[name]
        size = gguf_nbytes(GGML_NAME[kind], math.prod(ne))
        if off % GGUF_ALIGN or off + size > len(self.data):
            raise ExportError(f"--check: {self.path} ends inside tensor {name}")
        return np.frombuffer(self.data, dtype=np.uint8, count=size, offset=off)


def check_gguf(m, path, plan, names, t, template_text):
    """Re-reads a written GGUF: its keys, tensor table and tokenizer against what was meant, and the named
    tensors' values against the source: exact for F32, F16 and BF16 (against the same rounding), within
    half a step for Q8_0 and Q4_STEPS for Q4_0; for Q4_K, every value must be the nearest of the 16 its
    sub-block's stored scale and min allow, and the largest 6-bit scale and min of a block 63."""
    g = GGUFFile(path)
    want = dict((k, v) for k, _, v in gguf_metadata(m, "fp32", t, template_text) if not k.startswith("general.file"))
    for key, value in want.items():
        got = g.meta.get(key)
        same = np.array_equal(got, value) if isinstance(value, list) and value and not isinstance(value[0], str) \
            else got == value if not isinstance(value, float) else got is not None and abs(got - value) <= 1e-6 * abs(value)
        if not same:
            raise ExportError(f"--check: {path}: key {key} reads back as {str(got)[:60]}, expected {str(value)[:60]}")
    if list(g.tensors) != [name for name, _, _, _ in plan]:
        raise ExportError(f"--check: {path}: the tensor table differs from the {len(plan)} tensors written")
    arch, checked = gguf_arch(m), 0
    for name, source, shape, kind in plan:
        ne, kid, _ = g.tensors[name]
        if ne != tuple(reversed(shape)) or kid != GGML[kind][0]:
            raise ExportError(f"--check: {path}: tensor {name} reads back as {GGML_NAME.get(kid, kid)} {list(ne)}, "
                              f"expected {kind} {list(reversed(shape))}")
        raw = g.raw(name)
        if not (set(source) & names if isinstance(source, tuple) else source in names or source == "rope_freqs"):
            continue
        x = gguf_source(m, source, arch).astype(np.float32).reshape(-1)
        worst = ""
        if kind == "F32":
            ok = np.array_equal(raw.view("<f4"), x)
        elif kind in ("F16", "BF16"):
            ok = np.array_equal(raw.view("<u2"), x.astype("<f2").view("<u2") if kind == "F16" else to_bf16(x))
        else:
            b = raw.reshape(-1, GGML[kind][2])
            if kind == "Q4_K":
                d = b[:, 0:4].copy().view("<f2").astype(np.float64)  # (nb, 2): d, dmin
                sc, mn = gguf_scales_k4(b[:, 4:16])
                q = np.empty((len(b), 8, 32), np.uint8)
                q[:, 0::2], q[:, 1::2] = b[:, 16:].reshape(-1, 4, 32) & 15, b[:, 16:].reshape(-1, 4, 32) >> 4
                step, low = d[:, :1] * sc, d[:, 1:] * mn          # (nb, 8): value = step * q - low
                src = x.astype(np.float64).reshape(-1, 8, 32)
                err = np.abs(step[:, :, None] * q - low[:, :, None] - src)
                nearest = np.clip(np.rint((src + low[:, :, None]) / np.where(step == 0, 1, step)[:, :, None]), 0, 15)
                best = np.abs(step[:, :, None] * nearest - low[:, :, None] - src)
                limit = best + 1e-5 * step[:, :, None] + 1e-12
                ok = bool(np.all((err <= limit) | (step == 0)[:, :, None])) and \
                    bool(np.all((d[:, 0] == 0) | (sc.max(axis=1) == 63))) and bool(np.all((d[:, 1] == 0) | (mn.max(axis=1) == 63)))
                worst = f" (worst error {np.max((err - best) / np.where(step == 0, 1, step)[:, :, None]):.4g} steps " \
                        f"beyond the nearest)"
            else:
                scales = b[:, :2].copy().view("<f2").astype(np.float64)[:, 0]
                if kind == "Q8_0":
                    values = b[:, 2:].view(np.int8).astype(np.float64)
                    limit = 0.5001 * np.abs(scales) + 127 * 2**-25 + 1e-12
                else:
                    values = np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4], axis=1).astype(np.float64) - 8
                    limit = Q4_STEPS * np.abs(scales) + Q4_ABS
                err = np.abs(values * scales[:, None] - x.reshape(-1, 32))  # in float64: exact
                ok = bool(np.all(err <= limit[:, None]))
                worst = f" (worst error {(err / np.where(scales == 0, 1, np.abs(scales))[:, None]).max():.4g} quantization steps)"
        if not ok:
            raise ExportError(f"--check: tensor {name} ({source}) in {path} does not match the source{worst}")
        checked += 1
    log(f"check: {path}: the keys, the {len(plan)} tensors' table and {checked} tensors re-read match the source")


def write_legacy(m, out, version, gs):
    """llama2.c's v0 (fp32), v1 (fp32) or v2 (Q8_0 in groups of gs of the flattened tensors) format."""
    if m.head_size * m.n_heads != m.dim or m.qkv_bias or m.rope_scaling[0] or m.rope_theta != 10000.0 \
            or abs(m.norm_eps - 1e-5) > 1e-9 or m.qk_norm or m.sandwich or m.activation or m.rotary_dim \
            or m.embed_scale or m.attn_scale or any(m.softcaps) or m.window[0]:
        raise ExportError("llama2.c's formats hold only Llama 2-style models (head_size = dim / n_heads, no biases, "
                          "RoPE theta 10000 unscaled, norm eps 1e-5, no norms or windows of later families); use the "
                          "default --version 3")
    L = m.n_layers

    def get(name):
        x = load_tensor(m, name)
        if m.rope_layout == 1 and name.split(".")[-1] in ("wq", "wk"):
            heads = m.n_heads if name.endswith("wq") else m.n_kv_heads
            x = halves_to_pairs(x, heads, m.head_size)
        return x

    norms = [f"layers.{l}.attention_norm" for l in range(L)] + [f"layers.{l}.ffn_norm" for l in range(L)] + ["norm"]
    mats = ["tok_embeddings"] + [f"layers.{l}.{k}" for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3") for l in range(L)]
    if not m.tied:
        mats.append("output")
    n_norms, n_mats = (sum(int(math.prod(expected_shape(m, n))) for n in names) for names in (norms, mats))
    per = bytes_per_weight("q8_0", gs) if version == 2 else 4
    total = 256 + m.seq_len * m.head_size * 4 + 4 * n_norms + n_mats * per
    with Writer(out, total) as w:
        if version == 0:
            vocab = m.vocab_size if m.tied else -m.vocab_size
            w.write(struct.pack("<7i", m.dim, m.hidden_dim, L, m.n_heads, m.n_kv_heads, vocab, m.seq_len))
            order = ["tok_embeddings"] + [f"layers.{l}.attention_norm" for l in range(L)] + \
                [f"layers.{l}.{k}" for k in ("wq", "wk", "wv", "wo") for l in range(L)] + \
                [f"layers.{l}.ffn_norm" for l in range(L)] + \
                [f"layers.{l}.{k}" for k in ("w1", "w2", "w3") for l in range(L)] + ["norm", "freq_cis"] + \
                ([] if m.tied else ["output"])
        else:
            hdr = struct.pack("<Ii7iB", MAGIC, version, m.dim, m.hidden_dim, L, m.n_heads, m.n_kv_heads,
                              m.vocab_size, m.seq_len, 1 if m.tied else 0)
            if version == 2:
                hdr += struct.pack("<i", gs)
            w.write(hdr + b"\0" * (256 - len(hdr)))
            order = norms + mats
        for i, name in enumerate(order):
            if name == "freq_cis":  # llama2.c's unused RoPE tables
                w.write(b"\0" * (m.seq_len * m.head_size * 4))
                continue
            x = get(name)
            if version == 2 and name in mats:
                q, s = quantize_q8(x, gs)
                w.write(q.tobytes())
                w.write(s.astype("<f4").tobytes())
            else:
                w.write(x.astype("<f4").tobytes())
            w.progress(i + 1, len(order), name, x.shape, "q8_0" if version == 2 and name in mats else "fp32")
    return n_norms + n_mats, os.path.getsize(out)


# ----------------------------------------------------------------------------
# Tokenizers

class Tokenizer:
    def __init__(self):
        self.kind = 1                # 1 SentencePiece (scores), 2 byte-level BPE (ranked merges)
        self.tokens = []             # (bytes, score, type)
        self.merges = []             # (left id, right id), best first
        self.bos, self.eos = 1, 2
        self.flags = TOK_DUMMY_PREFIX
        self.split = "none"
        self.template = "none"
        self.eot = []
        # what GGUF carries besides: each token as its source spells it, GGUF's token types, merges as
        # "a b" texts, special ids known but not necessarily used, and the chat template's own text
        self.pieces = []
        self.gtypes = []
        self.merge_texts = []
        self.bos_known = self.unk = self.pad = -1
        self.add_eos = False
        self.template_text = None    # a string, or a list of {"name", "template"}

    def id_of(self, text):
        b = text.encode("utf-8")
        for i, (t, _, _) in enumerate(self.tokens):
            if t == b:
                return i
        return -1

    def serialize(self):
        eot = [e for e in dict.fromkeys(self.eot) if e >= 0 and e != self.eos][:8]
        head = struct.pack("<11i", TOKENIZER_MAGIC, 1, self.kind, len(self.tokens), len(self.merges), self.bos,
                           self.eos, self.flags, SPLITS[self.split], TEMPLATES[self.template], len(eot))
        head += struct.pack(f"<{len(eot)}i", *eot)
        parts = [head + b"\0" * (128 - len(head))]
        for text, score, kind in self.tokens:
            parts.append(struct.pack("<fBi", score, kind, len(text)) + text)
        parts.append(np.asarray(self.merges, dtype="<i4").reshape(-1).tobytes())
        return b"".join(parts)


def read_varint(buf, i):
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def protobuf_fields(buf):
    """Yields (field number, value) of a protobuf message; value is an int, bytes or 4/8 raw bytes."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ExportError(f"unsupported protobuf wire type {wire}")
        yield field, value


def sentencepiece_tokenizer(path):
    """tokenizer.model (SentencePiece's ModelProto), parsed without the sentencepiece package."""
    with open(path, "rb") as f:
        buf = f.read()
    pieces, trainer, normalizer = [], {}, {}
    for field, value in protobuf_fields(buf):
        if field == 1:  # SentencePiece { piece = 1; score = 2; type = 3 }
            p = {1: b"", 2: 0.0, 3: 1}
            for f, v in protobuf_fields(value):
                p[f] = struct.unpack("<f", v)[0] if f == 2 else v
            pieces.append(p)
        elif field == 2:
            trainer = dict(protobuf_fields(value))
        elif field == 3:
            normalizer = dict(protobuf_fields(value))
    model_type = trainer.get(3, 1)
    if model_type != 2:
        raise ExportError(f"{path}: SentencePiece model type {model_type} is not supported (only BPE = 2)")
    t = Tokenizer()
    type_map = {1: NORMAL, 2: SPECIAL, 3: SPECIAL, 4: NORMAL, 5: UNUSED, 6: BYTE}
    for p in pieces:
        piece = p[1].decode("utf-8")
        t.tokens.append((piece.replace("\u2581", " ").encode("utf-8"), p[2], type_map.get(p[3], NORMAL)))
        t.pieces.append(piece)
        t.gtypes.append(p[3] if G_NORMAL <= p[3] <= G_BYTE else G_NORMAL)

    def valid(i):  # an absent id is -1 (stored as a 10-byte varint, so a huge number here)
        return i if 0 <= i < len(t.tokens) else -1
    t.bos, t.eos = valid(trainer.get(41, 1)), valid(trainer.get(42, 2))
    t.unk, t.pad, t.bos_known = valid(trainer.get(40, 0)), valid(trainer.get(43, -1)), t.bos
    t.flags = (TOK_DUMMY_PREFIX if normalizer.get(3, 1) else 0) | (TOK_REMOVE_EXTRA_SPACES if normalizer.get(4, 1) else 0)
    return t


def gpt2_byte_decoder():
    """The inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# GPT-4o's (OpenAI's o200k_base; Phi-4-mini's too, llama.cpp's "gpt-4o")
GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def walk(node, kind):
    """Every sub-object of a tokenizer.json component (Sequence or single) whose type is kind."""
    if not node:
        return []
    found = [node] if node.get("type") == kind else []
    for child in (node.get("pretokenizers", []) + node.get("normalizers", []) + node.get("decoders", [])
                  + node.get("processors", [])):
        found += walk(child, kind)
    return found


def hf_json_tokenizer(path):
    tj = read_json(path)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError(f"{path}: tokenizer model {model.get('type')} is not supported (only BPE)")
    vocab = model["vocab"]
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    n = max(max(vocab.values()), max(added, default=-1)) + 1
    pre = tj.get("pre_tokenizer")
    byte_level = bool(walk(pre, "ByteLevel") or walk(tj.get("decoder"), "ByteLevel"))
    t = Tokenizer()
    t.kind = 2 if byte_level else 1
    texts, keys = [None] * n, [None] * n
    decoder = gpt2_byte_decoder()
    for s, i in vocab.items():
        keys[i] = s
        if byte_level:
            try:
                texts[i] = bytes(decoder[c] for c in s)
            except KeyError:
                raise ExportError(f"{path}: token {s!r} is not in GPT-2's byte alphabet")
        else:
            texts[i] = s.replace("\u2581", " ").encode("utf-8")
    rank_of = {}
    merges = []
    # (one pass over 100k+ merges: this loop is most of a large vocabulary's conversion time)
    merge_texts, id_of = t.merge_texts, vocab.get
    for r, mg in enumerate(model.get("merges", [])):
        if isinstance(mg, str):
            a, b = mg.split(" ", 1)
            # GGUF's merges are "a b" texts; a space inside a part is spelled as GPT-2's stand-in for it
            merge_texts.append(mg if " " not in b else f"{a} {b.replace(' ', chr(0x120))}")
        else:
            a, b = mg
            merge_texts.append(f"{a.replace(' ', chr(0x120))} {b.replace(' ', chr(0x120))}")
        ia, ib = id_of(a), id_of(b)
        if ia is not None and ib is not None:
            merges.append((ia, ib))
            iab = id_of(a + b)
            if iab is not None and iab not in rank_of:
                rank_of[iab] = r
    unk_token = model.get("unk_token")
    t.unk = vocab.get(unk_token, -1) if isinstance(unk_token, str) else -1
    for i in range(n):
        a = added.get(i)
        if a is not None and not byte_level and not a.get("special") and "\u2581" in a["content"] and keys[i] == a["content"]:
            a = None  # Gemma's runs of U+2581: in raw text they never occur (a typed U+2581 is a space), in BPE they do
        if a is not None:
            # added tokens are matched whole in the text; "special": true ones are control tokens (not
            # printed), "special": false ones (Qwen's <think>, <tool_call>, <|fim_prefix|>) user-defined text
            special = bool(a.get("special"))
            t.tokens.append((a["content"].encode("utf-8"), 0.0, SPECIAL if special else USER_DEFINED))
            t.pieces.append(a["content"])
            t.gtypes.append((G_UNKNOWN if i == t.unk else G_CONTROL) if special else G_USER_DEFINED)
        elif texts[i] is None:
            t.tokens.append((b"", 0.0, UNUSED))
            t.pieces.append(f"[PAD{i}]")
            t.gtypes.append(G_UNUSED)
        else:
            is_byte = not byte_level and re.fullmatch(rb"<0x[0-9A-F]{2}>", texts[i]) is not None
            t.tokens.append((texts[i], -float(rank_of.get(i, len(merges))), BYTE if is_byte else NORMAL))
            t.pieces.append(keys[i])
            t.gtypes.append(G_BYTE if is_byte else G_UNKNOWN if i == t.unk else G_NORMAL)
    t.merges = merges
    if walk(tj.get("normalizer"), "NFC") or walk(tj.get("normalizer"), "NFKC"):
        log(f"note: {path} normalizes text to NFC/NFKC, which run.c does not: give it composed text "
            "(decomposed accents such as 'e' + U+0301 tokenize differently)")
    if byte_level:
        t.flags = 0
        splits = walk(pre, "Split")
        if splits:
            pattern = splits[0]["pattern"].get("Regex", "")
            t.split = {LLAMA3_SPLIT: "llama3", QWEN2_SPLIT: "qwen2", GPT4O_SPLIT: "gpt4o"}.get(pattern)
            if t.split is None:
                raise ExportError(f"{path}: pre-tokenizer pattern {pattern!r} is not one run.c implements "
                                  "(Llama 3, Qwen2, GPT-4o, GPT-2)")
        elif any(bl.get("use_regex", True) for bl in walk(pre, "ByteLevel")):
            t.split = "gpt2"
        else:
            raise ExportError(f"{path}: byte-level tokenizer without a known split pattern")
        if any(d.get("individual_digits") for d in walk(pre, "Digits")):
            t.flags |= TOK_SPLIT_DIGITS
        if any(bl.get("add_prefix_space") for bl in walk(pre, "ByteLevel")):
            t.flags |= TOK_DUMMY_PREFIX
        if model.get("ignore_merges"):
            t.flags |= TOK_IGNORE_MERGES
    else:
        if not model.get("byte_fallback"):
            log(f"note: {path} has no byte fallback: unknown characters become <unk>")
        prepends = walk(tj.get("normalizer"), "Prepend") + walk(pre, "Metaspace")
        t.flags = TOK_DUMMY_PREFIX if any(p.get("prepend") == "\u2581" or p.get("add_prefix_space", True)
                                          and p.get("prepend_scheme", "always") != "never" for p in prepends) else 0
    # BOS/EOS and the chat template come from tokenizer_config.json beside it
    t.bos = t.eos = -1
    cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    cfg = read_json(cfg_path) if os.path.exists(cfg_path) else {}
    apply_tokenizer_config(t, cfg, tj)
    return t


def token_content(x):
    return x.get("content") if isinstance(x, dict) else x


def apply_tokenizer_config(t, cfg, tj=None, set_ids=True):
    """BOS/EOS (when set_ids), the chat template kind and end-of-turn ids from tokenizer_config.json."""
    if set_ids:
        bos, eos = token_content(cfg.get("bos_token")), token_content(cfg.get("eos_token"))
        adds_bos = cfg.get("add_bos_token")
        if adds_bos is None:  # the post-processor says whether BOS is prepended
            single = []
            for p in walk((tj or {}).get("post_processor"), "TemplateProcessing"):
                single = p.get("single", [])
            adds_bos = bool(single) and "SpecialToken" in single[0]
            if adds_bos and bos is None:
                bos = single[0]["SpecialToken"]["id"]
        template_text = json.dumps(cfg.get("chat_template") or "")
        if bos is not None:
            t.bos_known = t.id_of(bos)
            if adds_bos or "bos_token" in template_text:  # the template starts with BOS
                t.bos = t.bos_known
        if eos is not None:
            t.eos = t.id_of(eos)
    pad = token_content(cfg.get("pad_token"))
    if isinstance(pad, str) and t.id_of(pad) >= 0:
        t.pad = t.id_of(pad)
    t.add_eos = bool(cfg.get("add_eos_token", False))
    template = cfg.get("chat_template") or ""
    if isinstance(template, (str, list)) and template:
        t.template_text = template
    if isinstance(template, list):
        template = next((x["template"] for x in template if x.get("name") == "default"), "")
    kind = template_kind(template)
    if kind is None:
        log("note: the chat template is not one run.c knows (llama2, llama3, llama3.1, chatml, qwen2.5, qwen3, smollm2, zephyr, mistral, gemma, phi3, phi4); "
            "pick one with --chat-template")
    elif template:
        t.template = kind
    for name in ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>"):
        if name in template or t.template in ("llama3", "llama3.1", "chatml", "qwen2.5", "smollm2"):
            i = t.id_of(name)
            if i >= 0 and t.tokens[i][2] == SPECIAL:
                t.eot.append(i)


def template_kind(template):
    """The kind of a Jinja chat template, by its markers: a TEMPLATES name, or None for one run.c does not know."""
    if isinstance(template, list):
        template = next((x["template"] for x in template if isinstance(x, dict) and x.get("name") == "default"), "")
    if not template:
        return "none"
    if "<|start_header_id|>" in template:  # Llama 3.1/3.2 always write a system block with the dates
        return "llama3.1" if "Cutting Knowledge Date" in template else "llama3"
    if "<|im_start|>" in template:  # ChatML; Qwen3 thinks; Qwen2.5 and SmolLM2 add their default system prompts
        if "<think>" in template:
            return "qwen3"
        return "qwen2.5" if "You are Qwen, created by Alibaba Cloud" in template else "smollm2" if "named SmolLM" in template else "chatml"
    if "<start_of_turn>" in template:
        return "gemma"
    if "<|user|>" in template and "<|assistant|>" in template and "<|end|>" in template:
        return "phi4" if "'<|' + message['role'] + '|>'" in template else "phi3"
    if "<|user|>" in template and "<|assistant|>" in template:
        return "zephyr"
    if "[INST]" in template:
        return "llama2" if "<<SYS>>" in template else "mistral"
    return None


def load_tokenizer(path):
    if not path.endswith((".json", ".model")):
        raise ExportError(f"{path}: expected a tokenizer.model (SentencePiece) or tokenizer.json (Hugging Face)")
    try:
        if path.endswith(".json"):
            return hf_json_tokenizer(path)
        t = sentencepiece_tokenizer(path)
        cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        if os.path.exists(cfg_path):
            apply_tokenizer_config(t, read_json(cfg_path), set_ids=False)
        return t
    except (IndexError, KeyError, TypeError, AttributeError, ValueError, struct.error) as e:  # a damaged file
        kind = "Hugging Face tokenizer.json" if path.endswith(".json") else "SentencePiece tokenizer.model"
        raise ExportError(f"{path}: not a valid {kind} ({type(e).__name__}: {e}); download it again")


def find_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer.model"):
        for d in (folder, os.path.dirname(os.path.abspath(folder))):
            if os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def add_generation_eos(t, folder):
    """End-of-turn ids from config.json / generation_config.json (eos_token_id may be a list)."""
    for name in ("generation_config.json", "config.json"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            cfg = read_json(p)
            ids = cfg.get("eos_token_id")
            for i in ids if isinstance(ids, list) else [ids] if ids is not None else []:
                if isinstance(i, int) and 0 <= i < len(t.tokens):
                    t.eot.append(i)
            # GGUF's bos/padding ids where the tokenizer's files name none
            for attr, key in (("bos_known", "bos_token_id"), ("pad", "pad_token_id")):
                i = cfg.get(key)
                if getattr(t, attr) < 0 and isinstance(i, int) and 0 <= i < len(t.tokens):
                    setattr(t, attr, i)


# ----------------------------------------------------------------------------
# Command line

class Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage error is one line too
        log(f"export.py: {message} (see python3 export.py --help)", now=True)
        sys.exit(1)


def parse_args(argv):
    ap = Parser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
--dtype defaults to q8_0 (int8 weights with a scale per group: about half of fp16's size and twice
its generation speed, with logits within about 1% of fp32); q4_0 (4-bit groups of 32 with an fp16
scale, 4.5 bits per weight) halves that again at some loss of accuracy; use fp16, bf16 or fp32 for
exact weights. Groups must divide every row length (dim, hidden_dim, n_heads*head_size); when the
default sizes do not, export.py takes the largest size that does and says what that costs.
GGUF (an output named *.gguf, or --format gguf) holds the same model and tokenizer for llama.cpp: --dtype
f32, f16, bf16, q8_0, q4_0 (ggml's blocks of 32) or q4_k (super-blocks of 256, 4.5 bits per weight, more
accurate than q4_0); a matrix whose rows are not whole blocks is written as f16 (q8_0 for q4_k when rows are
whole 32s), with a note. Norms, biases and rope_freqs are always f32.""")
    ap.add_argument("output", help="the file to write")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--hf", metavar="DIR", help="a Hugging Face model folder (config.json + *.safetensors)")
    src.add_argument("--meta-llama", metavar="DIR", help="a Meta Llama folder (params.json + consolidated.*.pth)")
    src.add_argument("--checkpoint", metavar="FILE.pt", help="a llama2.c training checkpoint")
    src.add_argument("--llama2c", metavar="FILE.bin", help="a llama2.c v0 or v1 checkpoint (e.g. to quantize it)")
    ap.add_argument("--tokenizer", metavar="FILE", help="tokenizer.model or tokenizer.json: embedded in the "
                    "checkpoint, or written alone when no model is given (default: the one beside the model)")
    ap.add_argument("--format", choices=["v3", "gguf"], help="v3: run.c's own format (the default); gguf: llama.cpp's "
                    "GGUF (the default for an output named *.gguf)")
    ap.add_argument("--version", type=int, default=3, choices=[0, 1, 2, 3],
                    help="3: run.c's self-describing format (default); 0, 1, 2: llama2.c's (v0/v1 fp32, v2 Q8_0)")
    ap.add_argument("--dtype", choices=list(DTYPES) + list(DTYPE_ALIASES) + ["q4_k"],
                    help="weight type (default q8_0; --version 0 and 1 are fp32 only, 2 q8_0 only; q4_k is GGUF only)")
    ap.add_argument("--group-size", type=int, default=0, help="q8_0/q4_0 group length (default: q8_0 64, or 32 "
                    "when 64 does not divide every row; q4_0 32; failing those the largest that divides, with a note)")
    ap.add_argument("--seq-len", type=int, default=0, help="cap the context length (Llama 3.1's 131072 makes a large KV cache)")
    ap.add_argument("--chat-template", choices=list(TEMPLATES), help="override the chat template found in tokenizer_config.json")
    ap.add_argument("--check", action="store_true", help="re-read the written file and compare the embedding, the first "
                    "layer's and the last layer's tensors and the final norm with the source (--version 3 and GGUF; "
                    "for GGUF also its keys and tensor table); a file that does not match is removed")
    a = ap.parse_args(argv)
    if not (a.hf or a.meta_llama or a.checkpoint or a.llama2c or a.tokenizer):
        ap.error("give a model (--hf, --meta-llama, --checkpoint, --llama2c) or --tokenizer")
    return a


LEGACY_DTYPE = {0: "fp32", 1: "fp32", 2: "q8_0"}
DTYPE_ALIASES = {"f32": "fp32", "f16": "fp16"}  # GGUF's spellings


def validate(a):
    """Every check that needs no tensor data, before anything is converted; sets a.dtype and a.format."""
    a.dtype = DTYPE_ALIASES.get(a.dtype, a.dtype)
    a.format = a.format or ("gguf" if a.output.lower().endswith(".gguf") else "v3")
    has_model = bool(a.hf or a.meta_llama or a.checkpoint or a.llama2c)
    if a.format == "gguf":
        why = "--format gguf" if not a.output.lower().endswith(".gguf") else f"the output {a.output} (a .gguf name)"
        if a.version != 3:
            raise ExportError(f"--version {a.version} writes llama2.c's format, but {why} asks for GGUF; drop one of them")
        if not has_model:
            raise ExportError(f"{why} asks for GGUF, which holds a model: give --hf, --meta-llama, --checkpoint or "
                              "--llama2c (a tokenizer alone is written in run.c's format: name the output .bin)")
        if a.group_size and not (a.group_size == 32 and a.dtype in (None, "q8_0", "q4_0")):
            raise ExportError(f"--group-size {a.group_size}: GGUF's blocks are fixed (q8_0 and q4_0 32 values, q4_k 256); "
                              "drop --group-size")
    elif a.dtype == "q4_k":
        raise ExportError("--dtype q4_k is a GGUF type: name the output *.gguf or add --format gguf (run.c's own "
                          "format has q4_0)")
    if a.version == 3:
        a.dtype = a.dtype or "q8_0"
    elif a.dtype not in (None, LEGACY_DTYPE[a.version]):
        raise ExportError(f"--version {a.version} writes llama2.c's {LEGACY_DTYPE[a.version]} format only, not "
                          f"--dtype {a.dtype}; drop --dtype, or drop --version to write run.c's format")
    else:
        a.dtype = LEGACY_DTYPE[a.version]
    if a.check and a.version != 3:
        raise ExportError("--check reads run.c's format (--version 3) and GGUF only")
    for flag, value in (("--group-size", a.group_size), ("--seq-len", a.seq_len)):
        if value < 0:
            raise ExportError(f"{flag} {value}: expected a positive number (or 0 for the default)")
    if a.group_size and a.dtype not in ("q8_0", "q4_0") and a.format != "gguf":
        log(f"note: --group-size applies to q8_0 and q4_0 only; {a.dtype} ignores it")
    out, folder = a.output, os.path.dirname(os.path.abspath(a.output))
    if os.path.isdir(out):
        raise ExportError(f"the output {out} is a folder; give a file name such as {os.path.join(out, 'model.bin')}")
    if os.path.exists(out) and not os.path.isfile(out):
        raise ExportError(f"the output {out} exists and is not a regular file; give another name")
    if not os.path.isdir(folder):
        raise ExportError(f"the output's folder {folder} does not exist (create it with mkdir -p, or give "
                          "another path)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"the output's folder {folder} is not writable (write into a folder of yours)")
    for flag, path, want_dir in (("--hf", a.hf, True), ("--meta-llama", a.meta_llama, True),
                                 ("--checkpoint", a.checkpoint, False), ("--llama2c", a.llama2c, False),
                                 ("--tokenizer", a.tokenizer, False)):
        if path is None:
            continue
        if not os.path.exists(path):
            raise ExportError(f"{flag} {path}: no such {'folder' if want_dir else 'file'}")
        if want_dir != os.path.isdir(path):
            raise ExportError(f"{flag} {path}: expected a {'folder' if want_dir else 'file, not a folder'}")
    if a.tokenizer and a.version != 3 and (a.hf or a.meta_llama or a.checkpoint or a.llama2c):
        log("note: llama2.c's formats hold no tokenizer, so --tokenizer is ignored "
            "(write it alone with: export.py tokenizer.bin --tokenizer FILE)")


def export_tokenizer(a):
    t = load_tokenizer(a.tokenizer)
    if a.chat_template:
        t.template = a.chat_template
    data = t.serialize()
    with Writer(a.output, len(data)) as w:
        w.write(data)
    log(f"wrote {a.output}: {len(t.tokens)} tokens, {len(t.merges)} merges, "
        f"{'byte-level' if t.kind == 2 else 'SentencePiece'} BPE, template {t.template}")


def export_model(a, start):
    if a.hf:
        m = hf_model(a.hf, a.seq_len)
    elif a.meta_llama:
        m = meta_model(a.meta_llama, a.seq_len)
    elif a.llama2c:
        m = llama2c_bin_model(a.llama2c, a.seq_len)
    else:
        m = llama2c_model(a.checkpoint, a.seq_len)
    log(f"{m.arch}: dim {m.dim}, hidden {m.hidden_dim}, {m.n_layers} layers, {m.n_heads} heads "
        f"({m.n_kv_heads} kv, size {m.head_size}), vocab {m.vocab_size}, context {m.seq_len}, "
        f"theta {m.rope_theta:g}, source {m.source_dtype}")
    preflight(m)
    if a.format == "gguf":
        gs = 0
    else:
        rows = {"dim": m.dim, "hidden_dim": m.hidden_dim}  # run.c needs dim; llama2.c's runq.c (v2) also hidden_dim
        if a.version == 3:
            rows["n_heads*head_size"] = m.n_heads * m.head_size
        gs = pick_group_size(rows, a.group_size, a.dtype) if a.dtype in ("q8_0", "q4_0") else 0
    last = m.n_layers - 1
    checked = {"tok_embeddings", "norm", "output"} | {f"layers.{l}.{k}" for l in {0, last} for k in
                                                      ("attention_norm", "wq", "wk", "wv", "bq", "bk", "bv", "wo",
                                                       "ffn_norm", "w1", "w2", "w3", "q_norm", "k_norm",
                                                       "post_att_norm", "post_ffn_norm")} | {"rope_short", "rope_long"}
    if a.version == 3:
        t = model_tokenizer(a, m)
        if a.format == "gguf":
            template_text = t.template_text if t is not None else None
            if a.chat_template and t is not None and a.chat_template != template_kind(t.template_text or ""):
                template_text = JINJA.get(a.chat_template)  # none: no template
            log(f"writing {a.output}: GGUF, {describe_gguf(a.dtype)}")
            params, size, plan = write_gguf(m, a.output, a.dtype, t, template_text)
        else:
            log(f"writing {a.output}: {describe(a.dtype, gs)}")
            params, size = write_v3(m, a.output, a.dtype, gs, t.serialize() if t is not None else b"")
        if a.check:
            try:
                if a.format == "gguf":
                    check_gguf(m, a.output, plan, checked, t, template_text)
                else:
                    check_v3(m, a.output, checked)
            except ExportError as e:
                os.remove(a.output)
                raise ExportError(f"{e}; removed {a.output}") from None
    else:
        log(f"writing {a.output}: llama2.c v{a.version}, {describe(a.dtype, gs)}")
        params, size = write_legacy(m, a.output, a.version, gs)
    what = f"GGUF, {describe_gguf(a.dtype)}" if a.format == "gguf" else describe(a.dtype, gs)
    log(f"wrote {a.output}: {params / 1e6:.1f}M parameters, {what}, {size / 2**20:.1f} MiB, {time.time() - start:.1f} s")


def model_tokenizer(a, m):
    """The tokenizer to embed: --tokenizer, or the one beside a Hugging Face / Meta model; None if none."""
    folder = a.hf or a.meta_llama or os.path.dirname(a.checkpoint or a.llama2c) or "."
    tok_path = a.tokenizer or (find_tokenizer(folder) if a.hf or a.meta_llama else None)
    if not tok_path:
        log("note: no tokenizer found beside the model; run it with -z" + (
            " (the GGUF's vocabulary is \"none\", so llama.cpp runs it on token ids only; give --tokenizer)"
            if a.format == "gguf" else ""))
        return None
    t = load_tokenizer(tok_path)
    if a.hf:
        add_generation_eos(t, a.hf)
    if a.chat_template:
        t.template = a.chat_template
    extra = t.tokens[m.vocab_size:]
    if extra and all(kind != 0 for _, _, kind in extra) and not any(a >= m.vocab_size or b >= m.vocab_size for a, b in t.merges):
        # added tokens past the model's embedding (Gemma 3's <image_soft_token> for its vision tower): the
        # model can neither read nor write them
        names = ", ".join(x.decode("utf-8", "replace") for x, _, _ in extra[:4]) + (", ..." if len(extra) > 4 else "")
        log(f"note: {tok_path}: {len(extra)} added token(s) past the model's vocabulary of {m.vocab_size} left out ({names})")
        del t.tokens[m.vocab_size:], t.pieces[m.vocab_size:], t.gtypes[m.vocab_size:]
        t.eot = [e for e in t.eot if e < m.vocab_size]
        for attr in ("bos", "eos", "bos_known", "unk", "pad"):
            if getattr(t, attr) >= m.vocab_size:
                setattr(t, attr, -1)
    if len(t.tokens) > m.vocab_size:
        raise ExportError(f"{tok_path} has {len(t.tokens)} tokens, more than the model's {m.vocab_size}")
    log(f"tokenizer {tok_path}: {len(t.tokens)} tokens, template {t.template}")
    return t


def describe_gguf(dtype):
    kind = GGUF_TYPE_OF[dtype]
    _, per_block, size = GGML[kind]
    blocks = f"blocks of {per_block}, " if per_block > 1 else ""
    return f"{kind} ({blocks}{size / per_block:.4g} bytes per weight)"


def main(argv=None):
    """Runs the conversion; every failure is one line on stderr starting "export.py: " and exit status 1."""
    global held
    held = []
    a = parse_args(argv)
    start = time.time()
    try:
        validate(a)
        if a.hf or a.meta_llama or a.checkpoint or a.llama2c:
            export_model(a, start)
        else:
            export_tokenizer(a)
        return 0
    except ExportError as e:
        log(f"export.py: {e}", now=True)
    except OSError as e:  # reading an input (writing is reported by Writer)
        log(f"export.py: {f'{e.filename}: ' if e.filename else ''}{e.strerror or e}", now=True)
    except MemoryError:
        log("export.py: out of memory (tensors are converted one at a time, so the largest one must fit; "
            "close other programs or use a machine with more memory)", now=True)
    except KeyboardInterrupt:
        log("export.py: interrupted (no partial file is left)", now=True)
        return 130
    except Exception as e:  # a bug, or an input damaged in a way nothing above foresaw
        if os.environ.get("EXPORT_DEBUG"):
            raise
        log(f"export.py: internal error: {type(e).__name__}: {e} (please report it with the command line; "
            "EXPORT_DEBUG=1 shows the traceback)", now=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
