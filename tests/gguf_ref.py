#!/usr/bin/env python3
"""Independent GGUF reference for run.c's tests: reader/writer, ggml dequantizers and simple quantizers,
and a float64 forward pass (archs llama, qwen2, qwen3, gemma2, gemma3, phi3), in Python 3 + numpy only.

    gguf_ref.py check FILE.gguf REF64.txt TOKENS.txt   # forward(FILE) vs a float64 reference; exit 0 if rel <= 1e-6
    gguf_ref.py make OUT_DIR                           # spm-{Q4_1,Q5_0,Q5_1,IQ4_XS,mixed}.gguf + .ref64.txt
    gguf_ref.py rows FILE.gguf TENSOR ROW0 NROWS       # dequantized rows of a 2-D tensor, %.9g
    gguf_ref.py info FILE.gguf                         # metadata (abridged) and tensor table
    gguf_ref.py selftest                               # quantize/dequantize and write/read round trips, and
                                                       # tiny models of every arch against transformers' math

Dequantization follows ggml's block layouts and evaluates every product in float32 in the order ggml's
dequantize_row_* does (d*scale first, then times the quant, then minus the min), so the values equal
ggml's to_float bit for bit; the forward pass then runs in float64 on those values:
RMSNorm, RoPE (arch llama: adjacent pairs (2i, 2i+1), since the converter permuted q/k; all others: halves
(i, i+n_rot/2)), angle = freq_scale * pos * theta^(-2i/n_rot) / factors[i], GQA q head h -> kv head
h/(n_head/n_kv), causal softmax with 1/sqrt(head_dim), SwiGLU FFN, optional q/k/v biases, output = token_embd
when output.weight is absent. The other archs add, as llama.cpp computes them (see hparams() and the comments
above it for the llama.cpp sources): qwen3 per-head q/k RMSNorm before RoPE; gemma2/gemma3 embeddings times
sqrt(n_embd), post-attention and post-FFN norms, GELU FFN, sliding-window layers, attention and final logit
soft-caps (gemma2), q/k norms and a separate RoPE base for the SWA layers (gemma3); phi3 fused attn_qkv and
[gate; up] ffn_up, partial rotary, LongRoPE factors (chosen by n_ctx) and attention factor.

Python API beyond the reader/writer:
    forward(meta, tensors, token_ids, n_ctx=4096, llama_swa=False, ggml_gelu_f16=False) -> logits [T, n_vocab]
    hparams(meta, n_ctx=4096, llama_swa=False)    -> dict: what llama.cpp derives from the metadata
    expected_layout(hf_config, {hf_name: shape}, n_vocab_real=None) -> (keys, {gguf_name: ne}): what llama.cpp's
        convert_hf_to_gguf.py writes for a Hugging Face folder (keys is a Metadata: values and .types)
    expected_keys(hf_config), hf_to_gguf_tensors(hf_config, {hf_name: array}, n_vocab_real=None): the same keys,
        and the converted tensor values (llama q/k permutation, Gemma norm + 1, ...)
    llama_cpp_tensor_problems(meta, tensors)      -> what llama.cpp's loader would refuse (missing/extra/shape)
    hf_forward(hf_config, hf_tensors, token_ids)  -> transformers' logits, for the self-checks
"""
import math, os, struct, sys, time

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# ggml types

GGML_TYPES = {  # id: (name, elements per block, bytes per block)
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2),
}
TYPE_ID = {v[0]: k for k, v in GGML_TYPES.items()}
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, BF16 = 10, 11, 12, 13, 14, 20, 23, 30

# the non-linear 4-bit grid of IQ4_NL / IQ4_XS (ggml's kvalues_iq4nl)
IQ4_GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)


def type_name(t):
    return GGML_TYPES[t][0] if t in GGML_TYPES else "type%d" % t


def tensor_nbytes(t, n):
    _, bs, ts = GGML_TYPES[t]
    if n % bs:
        raise ValueError("%d values is not a whole number of %s blocks" % (n, type_name(t)))
    return n // bs * ts


def _f16(u8cols):
    """(nb, 2) uint8 -> (nb, 1) float32 of the little-endian fp16 stored there."""
    return np.ascontiguousarray(u8cols).view("<f2").astype(np.float32)


def _blocks(raw, t, n):
    _, bs, ts = GGML_TYPES[t]
    nb = n // bs
    a = np.frombuffer(raw, dtype=np.uint8, count=nb * ts)
    return a.reshape(nb, ts)


# Per-element gather maps for the 256-value super-blocks: for element e of a block, which byte and which
# bit shift hold its bits, and which sub-block scale applies. Built from the loops of dequantize_row_*.
def _kmaps():
    e = np.arange(256)
    m = {}
    # Q2_K: 128-value halves n; in each, 4 passes j with shift 2j over the same 32 bytes qs[32n .. 32n+31]
    n, r = e // 128, e % 128
    j, l = r // 32, r % 32
    m["q2_byte"], m["q2_shift"] = 32 * n + l, 2 * j
    # Q3_K: low 2 bits as Q2_K; high bit = bit (e // 32) of hmask[e % 32] (a set bit means no -4)
    m["q3_hbyte"], m["q3_hbit"] = e % 32, e // 32
    # Q4_K / Q5_K: 64-value chunks c; first 32 values are low nibbles of qs[32c + l], next 32 the high ones
    c, r = e // 64, e % 64
    h, l = r // 32, r % 32
    m["q4_byte"], m["q4_shift"] = 32 * c + l, 4 * h
    m["q5_hbyte"], m["q5_hbit"] = e % 32, e // 32
    # Q6_K: halves n; quarter k of 32 values: low 4 bits in ql[64n + 32*(k&1) + l] (low nibble for k<2),
    # high 2 bits in qh[32n + l] at bit 2k
    n, r = e // 128, e % 128
    k, l = r // 32, r % 32
    m["q6_lbyte"], m["q6_lshift"] = 64 * n + 32 * (k & 1) + l, 4 * (k >> 1)
    m["q6_hbyte"], m["q6_hshift"] = 32 * n + l, 2 * k
    # IQ4_XS: sub-block ib of 32 values: t<16 low nibble of qs[16ib + t], t>=16 high nibble of qs[16ib + t-16]
    ib, t = e // 32, e % 32
    m["iq4xs_byte"], m["iq4xs_shift"] = 16 * ib + t % 16, 4 * (t // 16)
    return {k: np.asarray(v) for k, v in m.items()}


KMAP = _kmaps()
# 32-value blocks with two nibbles per byte: value j < 16 is the low nibble of byte j, value j+16 the high one
NIB32_BYTE = np.arange(32) % 16
NIB32_SHIFT = 4 * (np.arange(32) // 16)


def unpack_scale_min_k4(sc12):
    """Q4_K / Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins (ggml get_scale_min_k4).
    Bytes 0-3: low 6 bits = scale 0-3, top 2 bits = bits 4-5 of scale 4-7; bytes 4-7 likewise for the
    mins; bytes 8-11: low nibble = bits 0-3 of scale 4-7, high nibble = bits 0-3 of min 4-7."""
    b = sc12.astype(np.uint8)
    sc = np.empty(b.shape[:-1] + (8,), dtype=np.uint8)
    mn = np.empty_like(sc)
    sc[..., :4] = b[..., 0:4] & 63
    mn[..., :4] = b[..., 4:8] & 63
    sc[..., 4:] = (b[..., 8:12] & 15) | ((b[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (b[..., 8:12] >> 4) | ((b[..., 4:8] >> 6) << 4)
    return sc, mn


def pack_scale_min_k4(sc, mn):
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    out = np.empty(sc.shape[:-1] + (12,), dtype=np.uint8)
    out[..., 0:4] = (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6)
    out[..., 4:8] = (mn[..., :4] & 63) | ((mn[..., 4:] >> 4) << 6)
    out[..., 8:12] = (sc[..., 4:] & 15) | ((mn[..., 4:] & 15) << 4)
    return out


def unpack_scales_q3k(sc12):
    """Q3_K: 12 bytes -> sixteen 6-bit scales (still offset by 32). Scale i: low 4 bits = nibble (i // 8)
    of byte i % 8; high 2 bits = bits 2*(i // 4)..+1 of byte 8 + i % 4."""
    b = sc12.astype(np.uint8)
    i = np.arange(16)
    lo = (b[..., i % 8] >> (4 * (i // 8))) & 15
    hi = (b[..., 8 + i % 4] >> (2 * (i // 4))) & 3
    return lo | (hi << 4)


def dequantize(t, raw, n):
    """Dequantize n values of ggml type t from raw bytes; returns float32 (exactly ggml's to_float)."""
    if t == F32:
        return np.frombuffer(raw, dtype="<f4", count=n).astype(np.float32)
    if t == F16:
        return np.frombuffer(raw, dtype="<f2", count=n).astype(np.float32)
    if t == BF16:
        return (np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16).view(np.float32)
    if t not in GGML_TYPES:
        raise NotImplementedError("ggml type %d" % t)
    b = _blocks(raw, t, n)
    nb = b.shape[0]
    if t in (Q4_0, Q4_1, IQ4_NL):
        d = _f16(b[:, 0:2])
        off = 4 if t == Q4_1 else 2
        q = (b[:, off + NIB32_BYTE] >> NIB32_SHIFT) & 15
        if t == Q4_0:
            y = d * (q.astype(np.float32) - np.float32(8))
        elif t == IQ4_NL:
            y = d * IQ4_GRID[q].astype(np.float32)
        else:
            y = d * q.astype(np.float32) + _f16(b[:, 2:4])
    elif t in (Q5_0, Q5_1):
        d = _f16(b[:, 0:2])
        off = 4 if t == Q5_1 else 2
        qh = np.ascontiguousarray(b[:, off:off + 4]).view("<u4")  # (nb, 1): bit j = 5th bit of value j
        lo = (b[:, off + 4 + NIB32_BYTE] >> NIB32_SHIFT) & 15
        hi = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
        q = (lo | (hi << 4)).astype(np.float32)
        if t == Q5_0:
            y = d * (q - np.float32(16))
        else:
            y = d * q + _f16(b[:, 2:4])
    elif t == Q8_0:
        d = _f16(b[:, 0:2])
        y = d * b[:, 2:34].view(np.int8).astype(np.float32)
    elif t == Q2_K:
        sc = b[:, 0:16]
        qs = b[:, 16:80]
        d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
        q = ((qs[:, KMAP["q2_byte"]] >> KMAP["q2_shift"]) & 3).astype(np.float32)
        s16 = sc[:, np.arange(256) // 16]
        dl = d * (s16 & 15).astype(np.float32)
        ml = dmin * (s16 >> 4).astype(np.float32)
        y = dl * q - ml
    elif t == Q3_K:
        hmask, qs, sc12 = b[:, 0:32], b[:, 32:96], b[:, 96:108]
        d = _f16(b[:, 108:110])
        scales = unpack_scales_q3k(sc12).astype(np.float32) - np.float32(32)
        lo = ((qs[:, KMAP["q2_byte"]] >> KMAP["q2_shift"]) & 3).astype(np.int16)
        hbit = (hmask[:, KMAP["q3_hbyte"]] >> KMAP["q3_hbit"]) & 1
        q = (lo - np.where(hbit == 1, 0, 4)).astype(np.float32)
        dl = d * scales
        y = dl[:, np.arange(256) // 16] * q
    elif t in (Q4_K, Q5_K):
        d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        sc, mn = unpack_scale_min_k4(b[:, 4:16])
        if t == Q4_K:
            qs = b[:, 16:144]
            q = (qs[:, KMAP["q4_byte"]] >> KMAP["q4_shift"]) & 15
        else:
            qh, qs = b[:, 16:48], b[:, 48:176]
            q = ((qs[:, KMAP["q4_byte"]] >> KMAP["q4_shift"]) & 15) | \
                (((qh[:, KMAP["q5_hbyte"]] >> KMAP["q5_hbit"]) & 1) << 4)
        dl = d * sc.astype(np.float32)
        ml = dmin * mn.astype(np.float32)
        sub = np.arange(256) // 32
        y = dl[:, sub] * q.astype(np.float32) - ml[:, sub]
    elif t == Q6_K:
        ql, qh = b[:, 0:128], b[:, 128:192]
        sc = b[:, 192:208].view(np.int8).astype(np.float32)
        d = _f16(b[:, 208:210])
        q = ((ql[:, KMAP["q6_lbyte"]] >> KMAP["q6_lshift"]) & 15) | \
            (((qh[:, KMAP["q6_hbyte"]] >> KMAP["q6_hshift"]) & 3) << 4)
        dl = d * sc
        y = dl[:, np.arange(256) // 16] * (q.astype(np.float32) - np.float32(32))
    elif t == IQ4_XS:
        d = _f16(b[:, 0:2])
        sh = np.ascontiguousarray(b[:, 2:4]).view("<u2").astype(np.uint32)  # (nb, 1)
        ib = np.arange(8)
        lo = (b[:, 4 + ib // 2] >> (4 * (ib % 2))) & 15
        hi = ((sh >> (2 * ib).astype(np.uint32)) & 3).astype(np.uint8)
        ls = (lo | (hi << 4)).astype(np.float32) - np.float32(32)
        dl = d * ls
        qs = b[:, 8:136]
        q = (qs[:, KMAP["iq4xs_byte"]] >> KMAP["iq4xs_shift"]) & 15
        y = dl[:, np.arange(256) // 32] * IQ4_GRID[q].astype(np.float32)
    else:
        raise NotImplementedError("ggml type %s" % type_name(t))
    assert y.dtype == np.float32, (type_name(t), y.dtype)
    return y.reshape(nb * GGML_TYPES[t][1])[:n]


# ----------------------------------------------------------------------------------------------------------
# quantizers: plain round-to-nearest per block (no search for the best scales, as llama.cpp does).
# Whatever they choose, the bytes are a valid block of the type, and every reference is computed from
# dequantize() of what was written.

def _to_f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _f16bytes(h):
    return np.ascontiguousarray(h.astype("<f2")).view(np.uint8).reshape(h.shape[0], -1)


def _inv(d):
    d = np.asarray(d, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _signed_absmax(x, axis=-1):
    i = np.abs(x).argmax(axis=axis)
    return np.take_along_axis(x, np.expand_dims(i, axis), axis=axis)


def _pack_nib32(q):
    """(nb, 32) values 0..15 -> (nb, 16) bytes: value j in the low nibble of byte j, value j+16 high."""
    q = q.astype(np.uint8)
    return (q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)


def _nearest_grid(v):
    """index of the IQ4 grid value nearest to v (ties to the lower index)."""
    g = IQ4_GRID.astype(np.float32)
    return np.abs(v[..., None] - g).argmin(axis=-1).astype(np.uint8)


def quantize(t, x):
    """Quantize float32 values x (length a multiple of the block size) to ggml type t; returns bytes."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if t == F32:
        return x.astype("<f4").tobytes()
    if t == F16:
        return x.astype("<f2").tobytes()
    if t == BF16:  # round to nearest even (no NaNs in our data)
        u = x.view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
    _, bs, ts = GGML_TYPES[t]
    if x.size % bs:
        raise ValueError("%d values is not a whole number of %s blocks" % (x.size, type_name(t)))
    xb = x.reshape(-1, bs)
    nb = xb.shape[0]
    if t in (Q4_0, Q5_0, Q8_0, IQ4_NL):
        mx = _signed_absmax(xb)  # (nb, 1)
        if t == Q8_0:
            dh = _to_f16(np.abs(mx) / np.float32(127))
        elif t == IQ4_NL:
            dh = _to_f16(mx / np.float32(-127))
        else:
            dh = _to_f16(mx / np.float32(-8 if t == Q4_0 else -16))
        idv = _inv(dh.astype(np.float32))
        v = xb * idv
        if t == Q8_0:
            q = np.clip(np.rint(v), -127, 127).astype(np.int8).view(np.uint8)
            return np.concatenate([_f16bytes(dh), q], axis=1).tobytes()
        if t == IQ4_NL:
            return np.concatenate([_f16bytes(dh), _pack_nib32(_nearest_grid(v))], axis=1).tobytes()
        if t == Q4_0:
            q = np.clip(np.rint(v) + 8, 0, 15).astype(np.uint8)
            return np.concatenate([_f16bytes(dh), _pack_nib32(q)], axis=1).tobytes()
        q = np.clip(np.rint(v) + 16, 0, 31).astype(np.uint8)  # Q5_0
        qh = (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
        qh = qh.astype("<u4").view(np.uint8).reshape(nb, 4)
        return np.concatenate([_f16bytes(dh), qh, _pack_nib32(q & 15)], axis=1).tobytes()
    if t in (Q4_1, Q5_1):
        nmax = 15 if t == Q4_1 else 31
        lo, hi = xb.min(axis=1, keepdims=True), xb.max(axis=1, keepdims=True)
        dh = _to_f16((hi - lo) / np.float32(nmax))
        mh = _to_f16(lo)
        q = np.clip(np.rint((xb - mh.astype(np.float32)) * _inv(dh.astype(np.float32))), 0, nmax).astype(np.uint8)
        parts = [_f16bytes(dh), _f16bytes(mh)]
        if t == Q5_1:
            qh = (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
            parts.append(qh.astype("<u4").view(np.uint8).reshape(nb, 4))
        parts.append(_pack_nib32(q & 15))
        return np.concatenate(parts, axis=1).tobytes()
    if t == IQ4_XS:
        sb = xb.reshape(nb, 8, 32)
        s = (_signed_absmax(sb) / np.float32(-127))[..., 0]  # ideal scale per sub-block, (nb, 8)
        smax = _signed_absmax(s)  # (nb, 1)
        dh = _to_f16(smax / np.float32(-32))
        ls = np.clip(np.rint(s * _inv(dh.astype(np.float32))), -32, 31).astype(np.int16)
        dl = dh.astype(np.float32) * ls.astype(np.float32)  # exactly what dequantize computes
        q = _nearest_grid(sb * _inv(dl)[..., None]).reshape(nb, 256)
        L = (ls + 32).astype(np.uint8)  # 6-bit biased scales
        sl = (L[:, 0::2] & 15) | ((L[:, 1::2] & 15) << 4)  # (nb, 4)
        shv = ((L >> 4).astype(np.uint32) << (2 * np.arange(8, dtype=np.uint32))).sum(axis=1, dtype=np.uint32)
        sh = shv.astype("<u2").view(np.uint8).reshape(nb, 2)
        qs = _scatter_nibbles(q, KMAP["iq4xs_byte"], KMAP["iq4xs_shift"], 128)
        return np.concatenate([_f16bytes(dh), sh, sl, qs], axis=1).tobytes()
    if t in (Q4_K, Q5_K):
        nmax = 15 if t == Q4_K else 31
        sb = xb.reshape(nb, 8, 32)
        mn = np.minimum(sb.min(axis=2), 0)  # (nb, 8), <= 0
        hi = np.maximum(sb.max(axis=2), mn)
        sc_f = (hi - mn) / np.float32(nmax)
        mn_f = -mn
        dh = _to_f16(sc_f.max(axis=1, keepdims=True) / np.float32(63))
        mh = _to_f16(mn_f.max(axis=1, keepdims=True) / np.float32(63))
        sc = np.clip(np.rint(sc_f * _inv(dh.astype(np.float32))), 0, 63).astype(np.uint8)
        m = np.clip(np.rint(mn_f * _inv(mh.astype(np.float32))), 0, 63).astype(np.uint8)
        dl = dh.astype(np.float32) * sc.astype(np.float32)
        ml = mh.astype(np.float32) * m.astype(np.float32)
        q = np.clip(np.rint((sb + ml[..., None]) * _inv(dl)[..., None]), 0, nmax).astype(np.uint8).reshape(nb, 256)
        parts = [_f16bytes(dh), _f16bytes(mh), pack_scale_min_k4(sc, m)]
        if t == Q5_K:
            parts.append(_scatter_bits(q >> 4, KMAP["q5_hbyte"], KMAP["q5_hbit"], 32))
        parts.append(_scatter_nibbles(q & 15, KMAP["q4_byte"], KMAP["q4_shift"], 128))
        return np.concatenate(parts, axis=1).tobytes()
    if t == Q2_K:  # runs of 16: q in 0..3, each run's 4-bit scale and 4-bit min (x ~ d*sc*q - dmin*m)
        sb = xb.reshape(nb, 16, 16)
        mn = np.minimum(sb.min(axis=2), 0)  # (nb, 16), <= 0
        hi = np.maximum(sb.max(axis=2), mn)
        sc_f, mn_f = (hi - mn) / np.float32(3), -mn
        dh = _to_f16(sc_f.max(axis=1, keepdims=True) / np.float32(15))
        mh = _to_f16(mn_f.max(axis=1, keepdims=True) / np.float32(15))
        sc = np.clip(np.rint(sc_f * _inv(dh.astype(np.float32))), 0, 15).astype(np.uint8)
        m = np.clip(np.rint(mn_f * _inv(mh.astype(np.float32))), 0, 15).astype(np.uint8)
        dl = dh.astype(np.float32) * sc.astype(np.float32)  # what dequantize computes
        ml = mh.astype(np.float32) * m.astype(np.float32)
        q = np.clip(np.rint((sb + ml[..., None]) * _inv(dl)[..., None]), 0, 3).astype(np.uint8).reshape(nb, 256)
        qs = _scatter_nibbles(q, KMAP["q2_byte"], KMAP["q2_shift"], 64)
        return np.concatenate([sc | (m << 4), qs, _f16bytes(dh), _f16bytes(mh)], axis=1).tobytes()
    if t == Q3_K:  # runs of 16: q in -4..3 stored as q + 4 (2 low bits, a high bit), 6-bit signed scales
        sb = xb.reshape(nb, 16, 16)
        s = (_signed_absmax(sb) / np.float32(-4))[..., 0]  # (nb, 16): the run's largest |x| at q = -4
        dh = _to_f16(_signed_absmax(s) / np.float32(-32))
        ls = np.clip(np.rint(s * _inv(dh.astype(np.float32))), -32, 31).astype(np.int16)
        dl = dh.astype(np.float32) * ls.astype(np.float32)
        u = (np.clip(np.rint(sb * _inv(dl)[..., None]), -4, 3) + 4).astype(np.uint8).reshape(nb, 256)
        hmask = _scatter_bits(u >> 2, KMAP["q3_hbyte"], KMAP["q3_hbit"], 32)
        qs = _scatter_nibbles(u & 3, KMAP["q2_byte"], KMAP["q2_shift"], 64)
        L = (ls + 32).astype(np.uint8)  # unpack_scales_q3k's layout
        sc12 = np.zeros((nb, 12), dtype=np.uint8)
        for j in range(16):
            sc12[:, j % 8] |= ((L[:, j] & 15) << (4 * (j // 8))).astype(np.uint8)
            sc12[:, 8 + j % 4] |= ((L[:, j] >> 4) << (2 * (j // 4))).astype(np.uint8)
        assert np.array_equal(unpack_scales_q3k(sc12), L)
        return np.concatenate([hmask, qs, sc12, _f16bytes(dh)], axis=1).tobytes()
    if t == Q6_K:
        sb = xb.reshape(nb, 16, 16)
        s = (_signed_absmax(sb) / np.float32(-32))[..., 0]  # (nb, 16)
        dh = _to_f16(np.abs(s).max(axis=1, keepdims=True) / np.float32(127))
        sc = np.clip(np.rint(s * _inv(dh.astype(np.float32))), -127, 127).astype(np.int8)
        dl = dh.astype(np.float32) * sc.astype(np.float32)
        q = (np.clip(np.rint(sb * _inv(dl)[..., None]), -32, 31) + 32).astype(np.uint8).reshape(nb, 256)
        ql = _scatter_nibbles(q & 15, KMAP["q6_lbyte"], KMAP["q6_lshift"], 128)
        qh = _scatter_nibbles(q >> 4, KMAP["q6_hbyte"], KMAP["q6_hshift"], 64)
        return np.concatenate([ql, qh, sc.view(np.uint8), _f16bytes(dh)], axis=1).tobytes()
    raise NotImplementedError("quantize to %s" % type_name(t))


def _scatter_nibbles(vals, byte_idx, shift, nbytes):
    """OR small fields vals[:, e] << shift[e] into byte byte_idx[e] of each row (fields must not overlap)."""
    out = np.zeros((vals.shape[0], nbytes), dtype=np.uint8)
    for s in np.unique(shift):
        sel = shift == s
        # within one shift value every byte index occurs once, so plain fancy assignment is safe
        out[:, byte_idx[sel]] |= (vals[:, sel].astype(np.uint8) << np.uint8(s)).astype(np.uint8)
    return out


def _scatter_bits(vals, byte_idx, bit, nbytes):
    return _scatter_nibbles(vals & 1, byte_idx, bit, nbytes)


# ----------------------------------------------------------------------------------------------------------
# GGUF reader / writer

GGUF_MAGIC = b"GGUF"
# metadata value types
VT_U8, VT_I8, VT_U16, VT_I16, VT_U32, VT_I32, VT_F32, VT_BOOL, VT_STR, VT_ARR, VT_U64, VT_I64, VT_F64 = range(13)
VT_FMT = {VT_U8: "<B", VT_I8: "<b", VT_U16: "<H", VT_I16: "<h", VT_U32: "<I", VT_I32: "<i", VT_F32: "<f",
          VT_BOOL: "<B", VT_U64: "<Q", VT_I64: "<q", VT_F64: "<d"}
VT_NP = {VT_U8: "<u1", VT_I8: "<i1", VT_U16: "<u2", VT_I16: "<i2", VT_U32: "<u4", VT_I32: "<i4", VT_F32: "<f4",
         VT_BOOL: "<u1", VT_U64: "<u8", VT_I64: "<i8", VT_F64: "<f8"}


class Metadata(dict):
    """dict key -> value; .types[key] = value type, or (VT_ARR, element type) for arrays; .version."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.types = {}
        self.version = 3

    def set(self, key, value, vtype):
        self[key] = value
        self.types[key] = vtype


class _Buf:
    def __init__(self, data):
        self.d = data
        self.p = 0

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("truncated GGUF (need %d bytes at %d of %d)" % (n, self.p, len(self.d)))
        s = self.d[self.p:self.p + n]
        self.p += n
        return s

    def u(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.u("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="surrogateescape")


def _read_value(buf, vt):
    if vt == VT_STR:
        return buf.string(), VT_STR
    if vt == VT_ARR:
        et = buf.u("<I")
        n = buf.u("<Q")
        if et == VT_STR:
            return [buf.string() for _ in range(n)], (VT_ARR, VT_STR)
        if et == VT_ARR:  # arrays of arrays: allowed by the spec, not used by llama.cpp models
            return [_read_value(buf, VT_ARR)[0] for _ in range(n)], (VT_ARR, VT_ARR)
        if et not in VT_NP:
            raise ValueError("bad array element type %d" % et)
        a = np.frombuffer(buf.take(n * np.dtype(VT_NP[et]).itemsize), dtype=VT_NP[et]).copy()
        if et == VT_BOOL:
            a = a.astype(bool)
        return a, (VT_ARR, et)
    if vt not in VT_FMT:
        raise ValueError("bad metadata value type %d" % vt)
    v = buf.u(VT_FMT[vt])
    return (bool(v) if vt == VT_BOOL else v), vt


def read_gguf(path_or_bytes):
    """-> (Metadata, {name: (ggml_type_id, ne list, raw bytes)}) in file order."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    buf = _Buf(memoryview(data))
    if bytes(buf.take(4)) != GGUF_MAGIC:
        raise ValueError("not a GGUF file")
    version = buf.u("<I")
    if version not in (2, 3):
        raise ValueError("GGUF version %d not supported (2 and 3 are)" % version)
    n_tensors, n_kv = buf.u("<Q"), buf.u("<Q")
    meta = Metadata()
    meta.version = version
    for _ in range(n_kv):
        key = buf.string()
        vt = buf.u("<I")
        val, full_t = _read_value(buf, vt)
        meta.set(key, val, full_t)
    infos = []
    for _ in range(n_tensors):
        name = buf.string()
        nd = buf.u("<I")
        ne = [buf.u("<Q") for _ in range(nd)]
        t = buf.u("<I")
        off = buf.u("<Q")
        infos.append((name, ne, t, off))
    align = int(meta.get("general.alignment", 32))
    data_start = (buf.p + align - 1) // align * align
    tensors = {}
    for name, ne, t, off in infos:
        n = int(np.prod(ne)) if ne else 1
        nbytes = tensor_nbytes(t, n) if t in GGML_TYPES else None
        if nbytes is None:
            raise ValueError("tensor %s: unknown ggml type %d" % (name, t))
        a = data_start + off
        if off % align or a + nbytes > len(data):
            raise ValueError("tensor %s: bad offset %d" % (name, off))
        tensors[name] = (t, ne, data[a:a + nbytes])
    return meta, tensors


def _default_vtype(v):
    if isinstance(v, bool):
        return VT_BOOL
    if isinstance(v, str):
        return VT_STR
    if isinstance(v, int):
        return VT_U32 if 0 <= v < 2 ** 32 else VT_I64
    if isinstance(v, float):
        return VT_F32
    if isinstance(v, np.ndarray):
        inv = {np.dtype(d).str: k for k, d in VT_NP.items() if k != VT_BOOL}
        return (VT_ARR, VT_BOOL if v.dtype == bool else inv[v.dtype.newbyteorder("<").str])
    if isinstance(v, (list, tuple)):
        return (VT_ARR, _default_vtype(v[0]) if v else VT_U32)
    raise TypeError("no GGUF type for %r" % (v,))


def _enc_str(s):
    b = s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _enc_value(v, vt):
    if vt == VT_STR:
        return _enc_str(v)
    if isinstance(vt, tuple):
        et = vt[1]
        out = [struct.pack("<IQ", et, len(v))]
        if et == VT_STR:
            out += [_enc_str(s) for s in v]
        elif et == VT_ARR:
            out += [_enc_value(x, _default_vtype(x)) for x in v]
        else:
            out.append(np.asarray(v).astype(VT_NP[et]).tobytes())
        return b"".join(out)
    return struct.pack(VT_FMT[vt], int(v) if vt in (VT_BOOL,) else v)


def write_gguf(path, meta, tensors, align=None):
    """Write a GGUF v3 file. meta: dict (a Metadata keeps its value types); tensors: {name: (type, ne, raw)}
    in the order to write. Tensor data is aligned to general.alignment (32 when absent)."""
    if align is None:
        align = int(meta.get("general.alignment", 32))
    types = getattr(meta, "types", {})
    out = [GGUF_MAGIC, struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for k, v in meta.items():
        vt = types[k] if k in types else _default_vtype(v)
        out.append(_enc_str(k))
        out.append(struct.pack("<I", vt[0] if isinstance(vt, tuple) else vt))
        out.append(_enc_value(v, vt))
    off = 0
    layout = []
    for name, (t, ne, raw) in tensors.items():
        n = int(np.prod(ne))
        if len(raw) != tensor_nbytes(t, n):
            raise ValueError("tensor %s: %d bytes, %s %s needs %d" % (name, len(raw), type_name(t), ne,
                                                                      tensor_nbytes(t, n)))
        out.append(_enc_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
                   + struct.pack("<IQ", t, off))
        layout.append((off, raw))
        off = (off + len(raw) + align - 1) // align * align
    head = b"".join(out)
    pad = (-len(head)) % align if tensors else 0  # a vocab-only file ends right after its metadata
    with open(path, "wb") as f:
        f.write(head + b"\0" * pad)
        pos = 0
        for o, raw in layout:
            f.write(b"\0" * (o - pos))
            f.write(raw)
            pos = o + len(raw)
        f.write(b"\0" * ((-pos) % align))


# ----------------------------------------------------------------------------------------------------------
# forward pass (float64)
#
# What llama.cpp computes for each architecture, written from its sources (ggml-org/llama.cpp):
#   src/llama-model.cpp @ 00342301d01add50835550e8a916f12097d94517: load_hparams (the arch cases), load_tensors,
#       llama_model_rope_type (NORM for llama; NEOX for qwen2, qwen3, phi3, gemma2, gemma3), get_rope_freq_base /
#       get_rope_freq_scale (SWA layers use rope_freq_base_train_swa / rope_freq_scale_train_swa), get_rope_factors
#       (rope_freqs if loaded, else rope_long when n_ctx_per_seq > n_ctx_orig_yarn, else rope_short), build_graph
#       (llama -> llm_build_llama, which has no sliding window; gemma2 -> llm_build_gemma2_iswa; gemma3 ->
#       llm_build_gemma3_iswa; phi3 -> llm_build_phi3<iswa=false> since its SWA is switched off at load).
#   src/models/{qwen3,phi3,gemma2-iswa,gemma3_iswa,gemma3}.cpp: the graph builders (identical math to the
#       builders inside llama-model.cpp at 00342301).
#   src/llama-hparams.{h,cpp}: set_swa_pattern(n): layer il is SWA iff il % n < n - 1; is_masked_swa(STANDARD):
#       key p0 is hidden from query p1 iff p1 - p0 >= n_swa; defaults f_attn_logit_softcapping 50,
#       f_final_logit_softcapping 30, rope_freq_base_train_swa 10000, rope_freq_scale_train_swa 1, rope_attn_factor 1.
#   src/llama-graph.cpp build_attn_mha: kq = k*q; if attn_soft_cap: kq = c*tanh(kq/c); softmax(kq*kq_scale + mask).
#   src/llama-context.cpp: cparams.yarn_attn_factor *= hparams.rope_attn_factor; ext_factor = 0 unless YaRN;
#       rope_freq_scale = 1 when the scaling type is "none".
#   ggml rope (ggml-cpu ops.cpp rope_yarn with ext_factor 0): angle = freq_scale * pos * base^(-2i/n_rot) / ff[i],
#       cos and sin both multiplied by attn_factor (mscale); dims n_rot.. of a head pass through unchanged.
#   ggml-cpu vec.h defines GGML_GELU_FP16: the CPU GELU rounds its input to fp16 and reads an fp16 table of the
#       tanh-GELU; forward(ggml_gelu_f16=True) reproduces that, the default is the exact tanh formula.

ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")


def tensor_f64(tensors, name):
    t, ne, raw = tensors[name]
    a = dequantize(t, raw, int(np.prod(ne))).astype(np.float64)
    return a.reshape(list(reversed(ne))) if len(ne) > 1 else a


def _rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _f32(x):
    """a constant as llama.cpp holds it (a C float)."""
    return float(np.float32(x))


def _rope(x, pos, n_rot, theta, freq_factors, neox, freq_scale=1.0, mscale=1.0):
    """x: [T, H, hd], rotated in place on its first n_rot dims (ggml_rope_ext with ext_factor 0)."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    freq = theta ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        freq = freq / freq_factors[: n_rot // 2]
    ang = pos[:, None].astype(np.float64) * freq[None, :]  # [T, n_rot/2]
    if freq_scale != 1.0:
        ang = ang * freq_scale
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if mscale != 1.0:
        c, s = c * mscale, s * mscale
    if neox:
        a, b = x[..., : n_rot // 2].copy(), x[..., n_rot // 2: n_rot].copy()
        x[..., : n_rot // 2] = a * c - b * s
        x[..., n_rot // 2: n_rot] = a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
        x[..., 0:n_rot:2] = a * c - b * s
        x[..., 1:n_rot:2] = a * s + b * c
    return x


def _gelu(x, ggml_f16=False):
    """tanh-GELU (ggml_gelu / HF gelu_pytorch_tanh). ggml_f16: as ggml's CPU backend evaluates it
    (GGML_GELU_FP16: x <= -10 -> 0, x >= 10 -> x, else fp16(table[fp16(x)]), the table made in float32)."""
    c = np.sqrt(2.0 / np.pi)
    if not ggml_f16:
        return 0.5 * x * (1.0 + np.tanh(c * x * (1.0 + 0.044715 * x * x)))
    xf = x.astype(np.float32)
    h = xf.astype(np.float16).astype(np.float32)
    g = (np.float32(0.5) * h * (np.float32(1) + np.tanh(np.float32(0.7978845608028654) * h *
                                                        (np.float32(1) + np.float32(0.044715) * h * h))))
    y = g.astype(np.float16).astype(np.float64)
    return np.where(xf <= -10, 0.0, np.where(xf >= 10, x, y))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def swa_pattern(n_layer, pattern):
    """llama_hparams::set_swa_pattern(n, dense_first=false): layer il is SWA iff n == 0 or il % n < n - 1.
    An array (one flag per layer, as get_key_or_arr reads one) gives the flags directly."""
    if isinstance(pattern, (list, tuple, np.ndarray)):
        if len(pattern) != n_layer:
            raise ValueError("sliding_window_pattern array of %d for %d layers" % (len(pattern), n_layer))
        return [bool(v) for v in pattern]
    n = int(pattern)
    return [n == 0 or (il % n) < (n - 1) for il in range(n_layer)]


def swa_visible(T, n_swa):
    """[query, key] booleans: llama.cpp's causal mask with STANDARD sliding window n_swa (0 = none): the query
    at position p1 sees the keys p0 with p0 <= p1 and p1 - p0 < n_swa, i.e. itself and the n_swa - 1 before it."""
    p1, p0 = np.arange(T)[:, None], np.arange(T)[None, :]
    vis = p0 <= p1
    if n_swa > 0:
        vis &= (p1 - p0) < n_swa
    return vis


def hparams(meta, n_ctx=4096, llama_swa=False):
    """The hyper-parameters llama.cpp derives from a GGUF's metadata (load_hparams + llama_context), as a dict.

    n_ctx: the context size llama.cpp runs with (llama.cpp's common default -c 4096); it only picks Phi-3's
    LongRoPE factors: rope_factors_long when n_ctx > {arch}.rope.scaling.original_context_length (default
    {arch}.context_length), else rope_factors_short. (llama.cpp compares n_ctx per sequence after padding it to
    a multiple of 256; pass the padded value.)
    llama_swa: honour llama.attention.sliding_window (all layers, standard window). llama.cpp does NOT: its llama
    load_hparams never reads the key and llm_build_llama has no SWA mask (and convert_hf_to_gguf.py does not
    write it for MistralForCausalLM); Hugging Face transformers does apply Mistral 7B v0.1's window 4096."""
    arch = meta["general.architecture"]
    if arch not in ARCHS:
        raise NotImplementedError("arch %s" % arch)
    g = lambda k, d=None: meta.get("%s.%s" % (arch, k), d)

    def scalar(k, d=None):
        v = g(k, d)
        if isinstance(v, (list, np.ndarray)):  # get_key_or_arr: per-layer arrays are allowed; we need them equal
            if len(set(int(a) for a in v)) != 1:
                raise NotImplementedError("per-layer %s.%s" % (arch, k))
            v = v[0]
        return v

    n_embd, n_layer = int(g("embedding_length")), int(g("block_count"))
    n_head = int(scalar("attention.head_count"))
    n_kv = int(scalar("attention.head_count_kv", n_head))
    hd = int(g("attention.key_length", n_embd // n_head))
    hd_v = int(g("attention.value_length", n_embd // n_head))
    if hd_v != hd:
        raise NotImplementedError("key_length %d != value_length %d" % (hd, hd_v))
    n_rot = int(g("rope.dimension_count", hd))
    eps = float(g("attention.layer_norm_rms_epsilon", 1e-5))
    base = float(g("rope.freq_base", 10000.0))
    stype = g("rope.scaling.type", "linear")
    factor = float(g("rope.scaling.factor", g("rope.scale_linear", 0.0)))
    freq_scale = 1.0 if factor == 0.0 else _f32(np.float32(1) / np.float32(factor))
    if stype == "none":
        freq_scale = 1.0
    elif stype not in ("linear", "longrope", "yarn"):
        raise ValueError("rope scaling type %r" % stype)
    n_ctx_train = int(g("context_length", 0))
    hp = dict(arch=arch, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_kv=n_kv, head_dim=hd, n_rot=n_rot,
              eps=eps, neox=arch != "llama", freq_base=base, freq_scale=freq_scale,
              attn_factor=float(g("rope.scaling.attn_factor", 1.0)), n_ctx=n_ctx,
              n_ctx_orig=int(g("rope.scaling.original_context_length", n_ctx_train)),
              n_swa=0, swa_layers=[False] * n_layer, freq_base_swa=base, freq_scale_swa=freq_scale,
              attn_scale=None, attn_softcap=None, final_softcap=None, embd_scale=None,
              act="gelu" if arch in ("gemma2", "gemma3") else "silu")
    if arch == "llama":
        n_swa = int(g("attention.sliding_window", 0))
        if llama_swa and n_swa > 0:
            hp.update(n_swa=n_swa, swa_layers=[True] * n_layer)
    elif arch in ("qwen3", "phi3"):
        # qwen3.cpp: kq_scale 1.0f/sqrtf(n_embd_head); phi3.cpp: Q scaled by 1.0f/sqrtf(n_embd_head), kq_scale 1.
        # phi3: "Phi SWA is currently disabled" -- a phi3.attention.sliding_window > 0 is read and then dropped.
        hp["attn_scale"] = _f32(np.float32(1) / np.sqrt(np.float32(hd)))
        if arch == "qwen3" and n_rot != hd:
            raise ValueError("qwen3 needs n_rot == head_dim (GGML_ASSERT in llm_build_qwen3)")
    elif arch in ("gemma2", "gemma3"):
        if arch == "gemma2":
            # SWA layers keep the global rope base and scale (the load_hparams defaults)
            n_swa = int(g("attention.sliding_window", 4096))  # default value of gemma 2
            pattern, big = 2, 46
            hp.update(attn_softcap=float(g("attn_logit_softcapping", 50.0)),
                      final_softcap=float(g("final_logit_softcapping", 30.0)))
        else:
            # llama.cpp @00342301 requires gemma3.attention.sliding_window and uses pattern 6, SWA rope base
            # 10000 and SWA freq scale 1; newer llama.cpp treats an absent/0 window as "no SWA" and reads the
            # optional gemma3.attention.sliding_window_pattern and gemma3.rope.freq_base_swa.
            n_swa = int(g("attention.sliding_window", 0))
            pattern, big = g("attention.sliding_window_pattern", 6), 62
            hp.update(freq_base_swa=float(g("rope.freq_base_swa", 10000.0)), freq_scale_swa=1.0)
            # llm_build_gemma3_iswa (00342301) has no final soft-cap; the converter writes the key only when
            # the HF config has a non-null final_logit_softcapping (no released Gemma 3 does). We apply it
            # when the key is present.
            if g("final_logit_softcapping") is not None and float(g("final_logit_softcapping")) > 0:
                hp["final_softcap"] = float(g("final_logit_softcapping"))
        if n_swa > 0:
            hp.update(n_swa=n_swa, swa_layers=swa_pattern(n_layer, pattern))
        # f_attention_scale: the 27B models (46 / 62 layers) use 1/sqrt(n_embd / n_head) (integer division), all
        # others 1/sqrt(head_dim); gemma*.attention.* has no key for it (query_pre_attn_scalar is not written).
        q = n_embd // n_head if n_layer == big else hd
        hp["attn_scale"] = _f32(np.float32(1) / np.sqrt(np.float32(q)))
        hp["embd_scale"] = _f32(np.sqrt(np.float32(n_embd)))  # ggml_scale(inpL, sqrtf(n_embd))
    return hp


def forward(meta, tensors, token_ids, n_ctx=4096, llama_swa=False, ggml_gelu_f16=False):
    """Logits [T, n_vocab] (float64) of the GGUF model for token_ids at positions 0..T-1, as llama.cpp computes
    them (see hparams() for n_ctx and llama_swa; ggml_gelu_f16 see _gelu)."""
    if meta.get("%s.rope.scaling.type" % meta["general.architecture"]) == "yarn":  # (hparams reads it for the loader's checks)
        raise NotImplementedError("YaRN rope scaling: llama.cpp's rope_yarn ramp is not emulated here")
    hp = hparams(meta, n_ctx=n_ctx, llama_swa=llama_swa)
    arch = hp["arch"]
    legacy = arch in ("llama", "qwen2")  # the original code path, kept operation for operation
    n_layer, n_head, n_kv, hd = hp["n_layer"], hp["n_head"], hp["n_kv"], hp["head_dim"]
    n_rot, eps = hp["n_rot"], hp["eps"]
    cache = {}

    def W(n):
        if n not in cache:
            cache[n] = tensor_f64(tensors, n)
        return cache[n]

    opt = lambda n: W(n) if n in tensors else None
    ff = None
    if legacy and "rope_freqs.weight" in tensors:
        ff = W("rope_freqs.weight")
    elif arch == "phi3":
        ff = opt("rope_factors_long.weight" if hp["n_ctx"] > hp["n_ctx_orig"] else "rope_factors_short.weight")

    toks = np.asarray(token_ids, dtype=np.int64)
    T = len(toks)
    pos = np.arange(T)
    emb = W("token_embd.weight")  # [n_vocab, n_embd]
    x = emb[toks].copy()
    if hp["embd_scale"] is not None:
        x = x * hp["embd_scale"]
    masks = {False: np.where(swa_visible(T, 0), 0.0, -np.inf)}
    if any(hp["swa_layers"]):
        masks[True] = np.where(swa_visible(T, hp["n_swa"]), 0.0, -np.inf)
    group = n_head // n_kv
    for L in range(n_layer):
        p = "blk.%d." % L
        swa = hp["swa_layers"][L]
        h = _rmsnorm(x, W(p + "attn_norm.weight"), eps)
        if p + "attn_qkv.weight" in tensors:  # phi3: fused [q; k; v] rows
            qkv = h @ W(p + "attn_qkv.weight").T
            q, k, v = np.split(qkv, [n_head * hd, n_head * hd + n_kv * hd], axis=1)
        else:
            q, k, v = h @ W(p + "attn_q.weight").T, h @ W(p + "attn_k.weight").T, h @ W(p + "attn_v.weight").T
        for name, arr in (("attn_q.bias", q), ("attn_k.bias", k), ("attn_v.bias", v)):
            bias = opt(p + name)
            if bias is not None:
                arr += bias
        q, k, v = q.reshape(T, n_head, hd), k.reshape(T, n_kv, hd), v.reshape(T, n_kv, hd)
        if p + "attn_q_norm.weight" in tensors:  # qwen3, gemma3: per-head RMSNorm before RoPE
            q = _rmsnorm(q, W(p + "attn_q_norm.weight"), eps)
            k = _rmsnorm(k, W(p + "attn_k_norm.weight"), eps)
        base = hp["freq_base_swa"] if swa else hp["freq_base"]
        fscale = hp["freq_scale_swa"] if swa else hp["freq_scale"]
        q = _rope(q, pos, n_rot, base, ff, hp["neox"], fscale, hp["attn_factor"])
        k = _rope(k, pos, n_rot, base, ff, hp["neox"], fscale, hp["attn_factor"])
        if not legacy:
            q = q * hp["attn_scale"]
        mask = masks[swa]
        att = np.empty((T, n_head, hd))
        for hh in range(n_head):
            kh = hh // group
            if legacy:
                s = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(hd) + mask
            else:
                s = q[:, hh, :] @ k[:, kh, :].T
                if hp["attn_softcap"] is not None:
                    c = hp["attn_softcap"]
                    s = np.tanh(s * _f32(np.float32(1) / np.float32(c))) * c
                s = s + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            att[:, hh, :] = s @ v[:, kh, :]
        o = att.reshape(T, n_head * hd) @ W(p + "attn_output.weight").T
        if p + "attn_output.bias" in tensors:
            o = o + W(p + "attn_output.bias")
        if p + "post_attention_norm.weight" in tensors:  # gemma2/3
            o = _rmsnorm(o, W(p + "post_attention_norm.weight"), eps)
        x = x + o
        h = _rmsnorm(x, W(p + "ffn_norm.weight"), eps)
        if p + "ffn_gate.weight" in tensors:
            gt, up = h @ W(p + "ffn_gate.weight").T, h @ W(p + "ffn_up.weight").T
        else:  # phi3: ffn_up holds [gate; up]; ggml_swiglu applies silu to the first half
            gu = h @ W(p + "ffn_up.weight").T
            gt, up = np.split(gu, 2, axis=1)
        if hp["act"] == "gelu":
            f = _gelu(gt, ggml_gelu_f16) * up
        else:
            f = gt / (1.0 + np.exp(-gt)) * up
        f = f @ W(p + "ffn_down.weight").T
        if p + "post_ffw_norm.weight" in tensors:
            f = _rmsnorm(f, W(p + "post_ffw_norm.weight"), eps)
        x = x + f
    x = _rmsnorm(x, W("output_norm.weight"), eps)
    out = W("output.weight") if "output.weight" in tensors else emb
    logits = x @ out.T
    if "output.bias" in tensors:
        logits = logits + W("output.bias")
    if hp["final_softcap"] is not None:
        c = hp["final_softcap"]
        logits = np.tanh(logits * _f32(np.float32(1) / np.float32(c))) * c
    return logits


# ----------------------------------------------------------------------------------------------------------
# what llama.cpp's convert_hf_to_gguf.py writes for a Hugging Face folder, and which tensors llama.cpp loads
#
# Written from ggml-org/llama.cpp's converter (the split converter: conversion/base.py TextModel.set_gguf_parameters,
# conversion/llama.py LlamaModel @0274f0fc, conversion/qwen.py Qwen2Model/Qwen3Model, conversion/gemma.py
# Gemma2Model/Gemma3Model @2bbcf7fc, conversion/phi.py Phi3MiniModel @051139f5; the same classes as in the older
# single-file convert_hf_to_gguf.py), gguf-py/gguf/constants.py (TENSOR_NAMES) and tensor_mapping.py.
#
# Per architecture:
#   llama (LlamaForCausalLM, MistralForCausalLM): TextModel keys + llama.vocab_size + llama.rope.dimension_count
#       (head_dim or hidden_size / num_attention_heads). q_proj (weight and bias) rows permuted per head with
#       n_head, k_proj with n_head_kv: rows (i, i + hd/2) of a head become rows (2i, 2i + 1), because llama.cpp
#       rotates adjacent pairs (rope type NORM). No sliding window key, even for Mistral 7B v0.1.
#   qwen2 / qwen3: TextModel keys only (qwen3 configs carry head_dim, so qwen3.attention.key_length /
#       value_length are written); no permutation (rope type NEOX). qwen3: self_attn.q_norm / k_norm ->
#       blk.N.attn_q_norm / attn_k_norm [head_dim], unchanged. Tied embeddings: no lm_head in the checkpoint, so
#       no output.weight; llama.cpp then uses token_embd.
#   gemma2: its own key list (no TextModel keys, so no rope.freq_base: llama.cpp's default 10000 applies):
#       context_length, embedding_length, block_count, feed_forward_length, attention.head_count,
#       attention.head_count_kv, attention.layer_norm_rms_epsilon, attention.key_length, attention.value_length,
#       attn_logit_softcapping, final_logit_softcapping, attention.sliding_window. lm_head is skipped (llama.cpp
#       gemma2 never loads output.weight: it would be an unexpected tensor). Every tensor whose HF name ends in
#       "norm.weight" gets +1 (HF's Gemma RMSNorm multiplies by 1 + w): input_layernorm,
#       post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm, model.norm.
#       post_attention_layernorm -> blk.N.post_attention_norm, pre_feedforward_layernorm -> blk.N.ffn_norm,
#       post_feedforward_layernorm -> blk.N.post_ffw_norm. query_pre_attn_scalar is not written (see hparams()).
#   gemma3 (text): TextModel keys, then overrides with defaults: context_length (max_position_embeddings, 131072),
#       attention.head_count (8), attention.layer_norm_rms_epsilon (1e-6), attention.key_length / value_length
#       (head_dim, 256), rope.freq_base (rope_theta, 1e6: the global layers), final_logit_softcapping (only if
#       set), attention.sliding_window (unless sliding_window_pattern == 1), attention.head_count_kv (4); linear
#       rope_scaling (4B/12B/27B: factor 8) -> rope.scaling.type "linear", rope.scaling.factor (llama.cpp applies
#       it to the global layers only). Not written: rope_local_base_freq (llama.cpp hard-codes 10000 for the SWA
#       layers), sliding_window_pattern (llama.cpp uses 6), query_pre_attn_scalar. +1 on every "norm.weight"
#       including self_attn.q_norm / k_norm. token_embd rows cut to the tokenizer's real vocabulary
#       (len(tokenizer.model) pieces, or tokenizer.json vocab + added_tokens): pass n_vocab_real.
#   phi3: its own key list: context_length, rope.scaling.original_context_length, embedding_length,
#       feed_forward_length, block_count, attention.head_count, attention.head_count_kv,
#       attention.layer_norm_rms_epsilon, rope.dimension_count = int(partial_rotary_factor * hidden_size) //
#       num_attention_heads, rope.freq_base, attention.sliding_window (0 when the config has none; llama.cpp
#       ignores it), and with LongRoPE (rope_scaling long_factor / short_factor, type "longrope" or "su")
#       rope.scaling.attn_factor = sqrt(1 + ln(s) / ln(orig)) for s = max_position_embeddings / orig > 1 (else 1)
#       plus the F32 tensors rope_factors_long.weight, rope_factors_short.weight [n_rot / 2]. qkv_proj ->
#       blk.N.attn_qkv ([q; k; v] rows as in HF), gate_up_proj -> blk.N.ffn_up ([gate; up] rows: llama.cpp's
#       swiglu applies silu to the first half), no permutation (NEOX).
# 1-D tensors (norms, biases, rope factors) are written as F32 whatever the output type; bf16 checkpoints are
# converted to float32 before modify_tensors, so Gemma's w + 1 is a float32 sum.

HF_ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
            "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
            "Phi3ForCausalLM": "phi3"}


def _hf_arch(hf_config):
    a = (hf_config.get("architectures") or [None])[0]
    if a not in HF_ARCHS:
        raise NotImplementedError("HF architecture %r" % a)
    return HF_ARCHS[a]


def _first(c, keys, default=None):
    return next((c[k] for k in keys if k in c), default)


def _rope_params(c):
    """the converter's rope_parameters: config rope_parameters, else rope_scaling plus rope_theta."""
    rp = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    rp = dict(rp.get("full_attention", rp))
    if "rope_theta" not in rp and "rope_theta" in c:
        rp["rope_theta"] = c["rope_theta"]
    if "rope_type" not in rp and "type" in rp:
        rp["rope_type"] = rp["type"]
    return rp


def _head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def _phi3_rope(c):
    """-> (n_rot, original context, long factors, short factors, attn_factor or None) as Phi3MiniModel computes."""
    rp = _rope_params(c)
    n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
    n_rot = int(c.get("partial_rotary_factor", rp.get("partial_rotary_factor", 1.0)) * n_embd) // n_head
    max_pos = _first(c, ("n_positions", "max_position_embeddings"))
    orig = rp.get("original_max_position_embeddings", c.get("original_max_position_embeddings", max_pos))
    long_f, short_f = rp.get("long_factor"), rp.get("short_factor")
    if not long_f:
        return n_rot, orig, None, None, None
    scale = max_pos / orig
    kind = (rp.get("rope_type") or "").lower()
    if kind in ("su", "longrope"):
        af = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
    elif kind == "yarn":
        af = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
    else:
        raise NotImplementedError("phi3 rope scaling type %r" % kind)
    if short_f is None or len(long_f) != len(short_f) or len(long_f) != n_rot / 2:
        raise ValueError("phi3 long/short factors must both have n_rot / 2 = %d values" % (n_rot // 2))
    return n_rot, orig, long_f, short_f, af


def _textmodel_keys(c, arch, m):
    """conversion/base.py TextModel.set_gguf_parameters."""
    a = arch
    m.set("%s.block_count" % a, int(c["num_hidden_layers"]), VT_U32)
    v = _first(c, ("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                   "model_max_length"))
    if v is not None:
        m.set("%s.context_length" % a, int(v), VT_U32)
    for key, names in (("embedding_length", ("hidden_size", "n_embd", "dim")),
                       ("feed_forward_length", ("intermediate_size", "n_inner", "hidden_dim")),
                       ("attention.head_count", ("num_attention_heads", "n_head", "n_heads")),
                       ("attention.head_count_kv", ("num_key_value_heads", "n_kv_heads"))):
        v = _first(c, names)
        if v is not None:
            m.set("%s.%s" % (a, key), int(v), VT_U32)
    rp = _rope_params(c)
    kind, factor = rp.get("rope_type"), rp.get("factor")
    if kind == "linear" and factor is not None:
        m.set("%s.rope.scaling.type" % a, "linear", VT_STR)
        m.set("%s.rope.scaling.factor" % a, _f32(factor), VT_F32)
    elif kind == "yarn" and factor is not None:
        m.set("%s.rope.scaling.type" % a, "yarn", VT_STR)
        m.set("%s.rope.scaling.factor" % a, _f32(factor), VT_F32)
        m.set("%s.rope.scaling.original_context_length" % a, int(rp["original_max_position_embeddings"]), VT_U32)
    elif kind in ("su", "longrope"):
        m.set("%s.rope.scaling.type" % a, "longrope", VT_STR)
    if rp.get("rope_theta") is not None:
        m.set("%s.rope.freq_base" % a, _f32(rp["rope_theta"]), VT_F32)
    v = _first(c, ("rms_norm_eps", "norm_eps"))
    if v is not None:
        m.set("%s.attention.layer_norm_rms_epsilon" % a, _f32(v), VT_F32)
    v = _first(c, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))
    if v is not None:
        m.set("%s.attention.layer_norm_epsilon" % a, _f32(v), VT_F32)
    if c.get("head_dim") is not None:
        m.set("%s.attention.key_length" % a, int(c["head_dim"]), VT_U32)
        m.set("%s.attention.value_length" % a, int(c["head_dim"]), VT_U32)


def expected_keys(hf_config):
    """Metadata (values + GGUF value types in .types) of the model keys convert_hf_to_gguf.py writes for this
    config.json dict: general.architecture and the {arch}.* hyper-parameters. Not included: general.file_type,
    general.name and the other general.* descriptions, tokenizer.* keys."""
    arch, c = _hf_arch(hf_config), hf_config
    m = Metadata()
    m.set("general.architecture", arch, VT_STR)
    if arch in ("llama", "qwen2", "qwen3"):
        _textmodel_keys(c, arch, m)
        if arch == "llama":
            m.set("llama.vocab_size", int(c["vocab_size"]), VT_U32)
            m.set("llama.rope.dimension_count", int(_head_dim(c)), VT_U32)
    elif arch == "gemma2":
        for key, val in (("context_length", c["max_position_embeddings"]), ("embedding_length", c["hidden_size"]),
                         ("block_count", c["num_hidden_layers"]), ("feed_forward_length", c["intermediate_size"]),
                         ("attention.head_count", c["num_attention_heads"]),
                         ("attention.head_count_kv", c.get("num_key_value_heads", c["num_attention_heads"]))):
            m.set("gemma2.%s" % key, int(val), VT_U32)
        m.set("gemma2.attention.layer_norm_rms_epsilon", _f32(c["rms_norm_eps"]), VT_F32)
        m.set("gemma2.attention.key_length", int(c["head_dim"]), VT_U32)
        m.set("gemma2.attention.value_length", int(c["head_dim"]), VT_U32)
        m.set("gemma2.attn_logit_softcapping", _f32(c["attn_logit_softcapping"]), VT_F32)
        m.set("gemma2.final_logit_softcapping", _f32(c["final_logit_softcapping"]), VT_F32)
        m.set("gemma2.attention.sliding_window", int(c["sliding_window"]), VT_U32)
    elif arch == "gemma3":
        _textmodel_keys(c, arch, m)
        rp = _rope_params(c)
        m.set("gemma3.context_length", int(c.get("max_position_embeddings", 131072)), VT_U32)
        m.set("gemma3.attention.head_count", int(c.get("num_attention_heads", 8)), VT_U32)
        m.set("gemma3.attention.layer_norm_rms_epsilon", _f32(c.get("rms_norm_eps", 1e-6)), VT_F32)
        m.set("gemma3.attention.key_length", int(c.get("head_dim", 256)), VT_U32)
        m.set("gemma3.attention.value_length", int(c.get("head_dim", 256)), VT_U32)
        m.set("gemma3.rope.freq_base", _f32(rp.get("rope_theta", 1000000.0)), VT_F32)
        if c.get("attn_logit_softcapping") is not None:
            raise ValueError("gemma3 with attn_logit_softcapping (the converter asserts it is None)")
        if c.get("final_logit_softcapping"):
            m.set("gemma3.final_logit_softcapping", _f32(c["final_logit_softcapping"]), VT_F32)
        if c.get("sliding_window_pattern") != 1:
            m.set("gemma3.attention.sliding_window", int(c["sliding_window"]), VT_U32)
        m.set("gemma3.attention.head_count_kv", int(c.get("num_key_value_heads", 4)), VT_U32)
    elif arch == "phi3":
        n_rot, orig, long_f, _, af = _phi3_rope(c)
        rp = _rope_params(c)
        m.set("phi3.context_length", int(_first(c, ("n_positions", "max_position_embeddings"))), VT_U32)
        m.set("phi3.rope.scaling.original_context_length", int(orig), VT_U32)
        m.set("phi3.embedding_length", int(c["hidden_size"]), VT_U32)
        m.set("phi3.feed_forward_length", int(c["intermediate_size"]), VT_U32)
        m.set("phi3.block_count", int(c["num_hidden_layers"]), VT_U32)
        m.set("phi3.attention.head_count", int(c["num_attention_heads"]), VT_U32)
        m.set("phi3.attention.head_count_kv", int(c.get("num_key_value_heads", c["num_attention_heads"])), VT_U32)
        m.set("phi3.attention.layer_norm_rms_epsilon", _f32(c["rms_norm_eps"]), VT_F32)
        m.set("phi3.rope.dimension_count", int(n_rot), VT_U32)
        m.set("phi3.rope.freq_base", _f32(rp.get("rope_theta", 10000.0)), VT_F32)
        m.set("phi3.attention.sliding_window", int(c.get("sliding_window") or 0), VT_U32)
        if long_f:
            m.set("phi3.rope.scaling.attn_factor", _f32(af), VT_F32)
    return m


def _gguf_tensor_name(arch, hf_name):
    """llama.cpp's GGUF name for an HF tensor of this arch, or None where the converter drops it."""
    import re
    gemma = arch in ("gemma2", "gemma3")
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    if hf_name == "lm_head.weight":
        return None if arch == "gemma2" else "output.weight"
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    mt = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", hf_name)
    table = {"input_layernorm": "attn_norm", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "post_attention_norm" if gemma else "ffn_norm",
             "mlp.down_proj": "ffn_down"}
    if arch == "phi3":
        table.update({"self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"})
    else:
        table.update({"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                      "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up"})
    if arch in ("qwen3", "gemma3"):
        table.update({"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"})
    if gemma:
        table.update({"pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"})
    if not mt or mt.group(2) not in table:
        raise ValueError("convert_hf_to_gguf.py cannot map %r for arch %s" % (hf_name, arch))
    return "blk.%s.%s.%s" % (mt.group(1), table[mt.group(2)], mt.group(3))


def _llama_permute(w, n_head, n_head_kv):
    """LlamaModel.permute: per head, rows (i, i + hd/2) -> (2i, 2i + 1)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    w = np.asarray(w)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_tensors(hf_config, hf_tensors, n_vocab_real=None):
    """The tensors convert_hf_to_gguf.py writes, from HF tensors {name: array in PyTorch layout [out, in]}:
    {gguf name: float32 array in the same row-major layout} (so a GGUF's ne is the reversed shape). Applies
    llama.cpp's transforms: llama q/k permutation, Gemma's +1 on norm weights (in float32), Gemma 3's token_embd
    cut to n_vocab_real rows, Phi-3's LongRoPE factor tensors (first, as generate_extra_tensors yields them)."""
    arch, c = _hf_arch(hf_config), hf_config
    out = {}
    if arch == "phi3":
        n_rot, _, long_f, short_f, _ = _phi3_rope(c)
        if long_f:
            out["rope_factors_long.weight"] = np.asarray(long_f, dtype=np.float32)
            out["rope_factors_short.weight"] = np.asarray(short_f, dtype=np.float32)
    elif arch == "llama":
        rp = _rope_params(c)
        if (rp.get("rope_type") or "").lower() == "llama3":
            out["rope_freqs.weight"] = _llama3_rope_factors(c, rp)
    n_head = c["num_attention_heads"]
    n_kv = c.get("num_key_value_heads", n_head)
    for hf_name, w in hf_tensors.items():
        name = _gguf_tensor_name(arch, hf_name)
        if name is None:
            continue
        w = np.asarray(w, dtype=np.float32)
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            w = _llama_permute(w, n_head, n_head)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            w = _llama_permute(w, n_head, n_kv)
        if arch in ("gemma2", "gemma3") and hf_name.endswith("norm.weight"):
            w = (w + np.float32(1)).astype(np.float32)
        if arch == "gemma3" and name == "token_embd.weight" and n_vocab_real is not None:
            w = w[:n_vocab_real]
        out[name] = np.ascontiguousarray(w)
    return out


def _llama3_rope_factors(c, rp):
    """LlamaModel.generate_extra_tensors for rope_type llama3 (float32 frequencies, as torch computes them)."""
    base = rp.get("rope_theta", 10000.0)
    dim = _head_dim(c)
    freqs = np.float32(1) / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor, lo, hi = rp.get("factor", 8.0), rp.get("low_freq_factor", 1.0), rp.get("high_freq_factor", 4.0)
    old = c.get("original_max_position_embeddings", rp.get("original_max_position_embeddings", 8192))
    lo_wl, hi_wl = old / lo, old / hi
    f = []
    for fr in freqs.tolist():
        wl = 2 * math.pi / fr
        if wl < hi_wl:
            f.append(1)
        elif wl > lo_wl:
            f.append(factor)
        else:
            sm = (old / wl - lo) / (hi - lo)
            f.append(1 / ((1 - sm) / factor + sm))
    return np.asarray(f, dtype=np.float32)


def expected_layout(hf_config, arch_tensors_hf, n_vocab_real=None):
    """-> (keys, tensors): keys as expected_keys(hf_config) (a Metadata: values, and GGUF value types in
    keys.types); tensors {gguf name: ne (GGUF order, i.e. the reversed PyTorch shape)} for the HF tensors
    {name: PyTorch shape} of a Hugging Face folder, in the order convert_hf_to_gguf.py writes them. See
    hf_to_gguf_tensors for the values; n_vocab_real: Gemma 3's tokenizer size (token_embd rows)."""
    arch = _hf_arch(hf_config)
    shapes = {}
    if arch == "phi3":
        n_rot, _, long_f, _, _ = _phi3_rope(hf_config)
        if long_f:
            shapes["rope_factors_long.weight"] = [n_rot // 2]
            shapes["rope_factors_short.weight"] = [n_rot // 2]
    elif arch == "llama" and (_rope_params(hf_config).get("rope_type") or "").lower() == "llama3":
        shapes["rope_freqs.weight"] = [_head_dim(hf_config) // 2]
    for hf_name, shape in arch_tensors_hf.items():
        name = _gguf_tensor_name(arch, hf_name)
        if name is None:
            continue
        shape = list(shape)
        if arch == "gemma3" and name == "token_embd.weight" and n_vocab_real is not None:
            shape[0] = min(shape[0], n_vocab_real)
        shapes[name] = list(reversed(shape))
    return expected_keys(hf_config), shapes


def llama_cpp_tensor_problems(meta, tensors):
    """What llama.cpp's load_tensors (src/llama-model.cpp @00342301) would refuse in this GGUF: a required tensor
    missing, a shape (ne) other than the one it creates, or a tensor it does not load at all ("wrong number of
    tensors"). -> list of strings, empty when llama.cpp would load the tensors."""
    hp = hparams(meta)
    arch, E, hd = hp["arch"], hp["n_embd"], hp["head_dim"]
    nq, nkv = hd * hp["n_head"], hd * hp["n_kv"]
    n_vocab = tensors["token_embd.weight"][1][1] if "token_embd.weight" in tensors else None
    ffn = int(meta.get("%s.feed_forward_length" % arch, 0))
    spec = {"token_embd.weight": ([E, n_vocab], True), "output_norm.weight": ([E], True)}  # name: (ne, required)
    if arch != "gemma2":
        spec["output.weight"] = ([E, n_vocab], False)
    if arch == "phi3":
        spec["rope_factors_long.weight"] = ([hp["n_rot"] // 2], False)
        spec["rope_factors_short.weight"] = ([hp["n_rot"] // 2], False)
    if arch == "llama":
        spec["rope_freqs.weight"] = ([hp["n_rot"] // 2], False)
    for i in range(hp["n_layer"]):
        p = "blk.%d." % i
        s = {"attn_norm.weight": ([E], True), "ffn_norm.weight": ([E], True), "ffn_down.weight": ([ffn, E], True)}
        if arch == "phi3":
            s.update({"attn_qkv.weight": ([E, E + 2 * nkv], True), "attn_output.weight": ([E, E], True),
                      "ffn_up.weight": ([E, 2 * ffn], True)})
        else:
            s.update({"attn_q.weight": ([E, nq], True), "attn_k.weight": ([E, nkv], True),
                      "attn_v.weight": ([E, nkv], True), "attn_output.weight": ([nq, E], True),
                      "ffn_gate.weight": ([E, ffn], True), "ffn_up.weight": ([E, ffn], True)})
        if arch == "llama":
            s.update({"attn_q.bias": ([nq], False), "attn_k.bias": ([nkv], False), "attn_v.bias": ([nkv], False),
                      "attn_output.bias": ([E], False)})
        if arch == "qwen2":  # llama.cpp @00342301 creates the qwen2 biases as required
            s.update({"attn_q.bias": ([nq], True), "attn_k.bias": ([nkv], True), "attn_v.bias": ([nkv], True)})
        if arch in ("qwen3", "gemma3"):
            s.update({"attn_q_norm.weight": ([hd], True), "attn_k_norm.weight": ([hd], True)})
        if arch in ("gemma2", "gemma3"):
            s.update({"post_attention_norm.weight": ([E], True), "post_ffw_norm.weight": ([E], True)})
        spec.update({p + k: v for k, v in s.items()})
    problems = []
    for name, (ne, req) in spec.items():
        if name not in tensors:
            if req:
                problems.append("missing %s" % name)
        elif list(tensors[name][1]) != ne:
            problems.append("%s has ne %s, llama.cpp creates %s" % (name, list(tensors[name][1]), ne))
    problems += ["%s is not loaded by llama.cpp's %s (wrong number of tensors)" % (n, arch)
                 for n in tensors if n not in spec]
    return problems


# ----------------------------------------------------------------------------------------------------------
# Hugging Face transformers' forward pass (float64), for the self-checks: what modeling_{llama,mistral,qwen2,
# qwen3,gemma2,gemma3,phi3}.py compute from the HF tensors (eager attention, float32 weights). It differs from
# llama.cpp (forward) where noted in the report: Gemma's attention scale comes from query_pre_attn_scalar here and
# from the layer count in llama.cpp; Phi-3 picks long/short factors by the sequence length here and by n_ctx in
# llama.cpp, and applies its sliding_window here only; Mistral's sliding_window is applied here only.

def hf_forward(hf_config, hf_tensors, token_ids, longrope="auto"):
    """longrope: "auto" (HF: long factors when the sequence is longer than original_max_position_embeddings),
    "long" or "short"."""
    arch, c = _hf_arch(hf_config), hf_config
    T = len(token_ids)
    toks = np.asarray(token_ids, dtype=np.int64)
    W = lambda n: np.asarray(hf_tensors[n], dtype=np.float64)
    gemma = arch in ("gemma2", "gemma3")
    n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
    n_kv = c.get("num_key_value_heads", n_head)
    hd = _head_dim(c)
    eps = c["rms_norm_eps"]
    n_layer = c["num_hidden_layers"]

    def norm(x, name):  # Gemma*RMSNorm: x * (1 + w) with 1 + w in float32; others w * x
        w = (np.float32(1) + np.asarray(hf_tensors[name], np.float32)).astype(np.float64) if gemma else W(name)
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    x = W("model.embed_tokens.weight")[toks]
    if gemma:
        x = x * float(np.float32(n_embd ** 0.5))  # normalizer in the model dtype
    rp = _rope_params(c)
    theta = rp.get("rope_theta", 10000.0)
    rot = int(hd * c.get("partial_rotary_factor", 1.0))
    inv = 1.0 / theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    inv_local = 1.0 / c.get("rope_local_base_freq", 10000.0) ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    ascale = 1.0
    kind = (rp.get("rope_type") or "default").lower()
    if kind == "linear":
        inv = inv / rp["factor"]
    elif kind in ("longrope", "su"):
        orig = c.get("original_max_position_embeddings", rp.get("original_max_position_embeddings"))
        factor = c["max_position_embeddings"] / orig
        af = rp.get("attention_factor")
        if af is None:
            af = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        ascale = float(np.float32(af))
        use_long = T > orig if longrope == "auto" else longrope == "long"
        inv = inv / np.asarray(rp["long_factor" if use_long else "short_factor"], dtype=np.float64)
    elif kind != "default":
        raise NotImplementedError("HF rope type %r" % kind)
    window = c.get("sliding_window")
    if arch == "gemma2":
        sliding = [(i + 1) % 2 != 0 for i in range(n_layer)]
    elif arch == "gemma3":
        if c.get("layer_types"):
            sliding = [t == "sliding_attention" for t in c["layer_types"]]
        else:
            pat = c.get("sliding_window_pattern", 6)
            sliding = [bool((i + 1) % pat) for i in range(n_layer)]
    elif arch in ("qwen2", "qwen3"):
        sliding = [bool(c.get("use_sliding_window")) and i >= c.get("max_window_layers", n_layer)
                   for i in range(n_layer)]
    else:  # Mistral / Llama with a window, Phi-3
        sliding = [bool(window)] * n_layer
    qscale = c["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    qscale = float(np.float32(qscale))
    softcap = c.get("attn_logit_softcapping") if arch == "gemma2" else None
    posf = np.arange(T, dtype=np.float64)

    def rope(t, invf):  # rotate_half on the first rot dims; cos/sin times the attention scaling
        ang = posf[:, None] * invf[None, :]
        cs = np.concatenate([np.cos(ang), np.cos(ang)], axis=1)[:, None, :] * ascale
        sn = np.concatenate([np.sin(ang), np.sin(ang)], axis=1)[:, None, :] * ascale
        r, rest = t[..., :rot], t[..., rot:]
        half = np.concatenate([-r[..., rot // 2:], r[..., :rot // 2]], axis=-1)
        return np.concatenate([r * cs + half * sn, rest], axis=-1)

    for L in range(n_layer):
        p = "model.layers.%d." % L
        h = norm(x, p + "input_layernorm.weight")
        if arch == "phi3":
            qkv = h @ W(p + "self_attn.qkv_proj.weight").T
            q, k, v = np.split(qkv, [n_head * hd, n_head * hd + n_kv * hd], axis=1)
        else:
            q, k, v = (h @ W(p + "self_attn.%s_proj.weight" % n).T for n in "qkv")
            q, k, v = [a + W(p + "self_attn.%s_proj.bias" % n) if p + "self_attn.%s_proj.bias" % n in hf_tensors
                       else a for a, n in zip((q, k, v), "qkv")]
        q, k, v = q.reshape(T, n_head, hd), k.reshape(T, n_kv, hd), v.reshape(T, n_kv, hd)
        if arch in ("qwen3", "gemma3"):
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
        invf = inv_local if (arch == "gemma3" and sliding[L]) else inv
        q, k = rope(q, invf), rope(k, invf)
        w = window if sliding[L] else 0  # HF: key j visible to query i iff j <= i and i - j < sliding_window
        vis = np.tril(np.ones((T, T), dtype=bool)) & (np.triu(np.ones((T, T), dtype=bool), 1 - w) if w else True)
        att = np.empty((T, n_head, hd))
        for hh in range(n_head):
            kh = hh // (n_head // n_kv)
            s = q[:, hh, :] @ k[:, kh, :].T * qscale
            if softcap:
                s = np.tanh(s / softcap) * softcap
            s = np.where(vis, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh, :]
        o = att.reshape(T, n_head * hd) @ W(p + "self_attn.o_proj.weight").T
        if gemma:
            x = x + norm(o, p + "post_attention_layernorm.weight")
            h = norm(x, p + "pre_feedforward_layernorm.weight")
        else:
            x = x + o
            h = norm(x, p + "post_attention_layernorm.weight")
        if arch == "phi3":
            gt, up = np.split(h @ W(p + "mlp.gate_up_proj.weight").T, 2, axis=1)
        else:
            gt, up = h @ W(p + "mlp.gate_proj.weight").T, h @ W(p + "mlp.up_proj.weight").T
        f = ((_gelu(gt) if gemma else _silu(gt)) * up) @ W(p + "mlp.down_proj.weight").T
        if gemma:
            f = norm(f, p + "post_feedforward_layernorm.weight")
        x = x + f
    x = norm(x, "model.norm.weight")
    lm = W("lm_head.weight") if ("lm_head.weight" in hf_tensors and not gemma) else W("model.embed_tokens.weight")
    logits = x @ lm.T
    cap = c.get("final_logit_softcapping")
    if gemma and cap:
        logits = np.tanh(logits / cap) * cap
    return logits


# ----------------------------------------------------------------------------------------------------------
# self-checks of the architectures: tiny random Hugging Face models, converted as llama.cpp's converter does,
# written and read back as GGUF; forward (llama.cpp's math) against hf_forward (transformers' math)

TINY_CONFIGS = {
    "llama": {"architectures": ["MistralForCausalLM"], "hidden_size": 32, "intermediate_size": 48,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 40,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64, "sliding_window": None},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "hidden_size": 32, "head_dim": 16, "intermediate_size": 48,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 40,
              "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 64,
              "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None},
    "gemma2": {"architectures": ["Gemma2ForCausalLM"], "hidden_size": 32, "head_dim": 16, "intermediate_size": 48,
               "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 40,
               "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64,
               "query_pre_attn_scalar": 16, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
               "sliding_window": 3},
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], "hidden_size": 32, "head_dim": 16, "intermediate_size": 48,
               "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 7, "vocab_size": 40,
               "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 64,
               "query_pre_attn_scalar": 16, "attn_logit_softcapping": None, "final_logit_softcapping": None,
               "sliding_window": 3, "sliding_window_pattern": 6},
    "phi3": {"architectures": ["Phi3ForCausalLM"], "hidden_size": 32, "intermediate_size": 48,
             "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 40,
             "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
             "max_position_embeddings": 128, "original_max_position_embeddings": 16, "sliding_window": None,
             "rope_scaling": {"type": "longrope", "long_factor": [1.5, 3.0], "short_factor": [1.25, 2.0]}},
}


def tiny_hf_tensors(hf_config, seed=0):
    """random float32 HF tensors {name: array [out, in]} for a (tiny) config of one of HF_ARCHS."""
    arch, c = _hf_arch(hf_config), hf_config
    rng = np.random.default_rng(seed)
    E, H, F, V = c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["vocab_size"]
    KV, hd = c.get("num_key_value_heads", H), _head_dim(c)
    gemma = arch in ("gemma2", "gemma3")
    r = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)
    nw = lambda n: ((rng.standard_normal(n) * 0.1) + (0.0 if gemma else 1.0)).astype(np.float32)
    t = {"model.embed_tokens.weight": r(V, E) * 3}
    for L in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % L
        t[p + "input_layernorm.weight"] = nw(E)
        if arch == "phi3":
            t[p + "self_attn.qkv_proj.weight"] = r(H * hd + 2 * KV * hd, E)
        else:
            t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"] = r(H * hd, E), r(KV * hd, E)
            t[p + "self_attn.v_proj.weight"] = r(KV * hd, E)
        if arch == "qwen2":
            for n, d in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                t[p + "self_attn.%s_proj.bias" % n] = r(d)
        t[p + "self_attn.o_proj.weight"] = r(E, H * hd)
        if arch in ("qwen3", "gemma3"):
            t[p + "self_attn.q_norm.weight"], t[p + "self_attn.k_norm.weight"] = nw(hd), nw(hd)
        t[p + "post_attention_layernorm.weight"] = nw(E)
        if gemma:
            t[p + "pre_feedforward_layernorm.weight"] = nw(E)
            t[p + "post_feedforward_layernorm.weight"] = nw(E)
        if arch == "phi3":
            t[p + "mlp.gate_up_proj.weight"] = r(2 * F, E)
        else:
            t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"] = r(F, E), r(F, E)
        t[p + "mlp.down_proj.weight"] = r(E, F)
    t["model.norm.weight"] = nw(E)
    if not (gemma or c.get("tie_word_embeddings")):
        t["lm_head.weight"] = r(V, E)
    return t


def gguf_from_hf(hf_config, hf_tensors, path, extra_keys=None):
    """write (F32) what llama.cpp's converter would write for this HF model; returns read_gguf(path)."""
    keys = expected_keys(hf_config)
    for k, (v, vt) in (extra_keys or {}).items():
        keys.set(k, v, vt)
    conv = hf_to_gguf_tensors(hf_config, hf_tensors)
    write_gguf(path, keys, {n: (F32, list(reversed(a.shape)), quantize(F32, a)) for n, a in conv.items()})
    return read_gguf(path)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def arch_selftest(tmpdir):
    """-> number of failed checks; prints one line per check."""
    bad = 0
    toks = [3, 17, 5, 39, 0, 22, 8, 31]  # T = 8 (> every tiny sliding window, < phi3's original context 16)

    def report(what, ok, detail=""):
        nonlocal bad
        bad += not ok
        print("%-58s %s%s" % (what, "OK" if ok else "FAIL", ("  " + detail) if detail else ""))

    for arch, cfg in TINY_CONFIGS.items():
        hf = tiny_hf_tensors(cfg)
        path = os.path.join(tmpdir, "tiny-%s.gguf" % arch)
        meta, tens = gguf_from_hf(cfg, hf, path)
        keys, shapes = expected_layout(cfg, {n: a.shape for n, a in hf.items()})
        okl = shapes == {n: ne for n, (_, ne, _) in tens.items()} and list(shapes) == list(tens)
        report("%s: expected_layout = converted tensors" % arch, okl)
        probs = llama_cpp_tensor_problems(meta, tens)
        report("%s: llama.cpp would load the tensors" % arch, not probs, "; ".join(probs[:3]))
        n_ctx = 16 if arch == "phi3" else 4096  # phi3: n_ctx <= original context -> short factors, as HF for T <= 16
        got, want = forward(meta, tens, toks, n_ctx=n_ctx), hf_forward(cfg, hf, toks)
        report("%s: llama.cpp forward = transformers forward" % arch, _rel(got, want) <= 1e-6,
               "rel %.2e" % _rel(got, want))

        if arch == "llama":  # Mistral v0.1's window: llama.cpp ignores it, transformers applies it
            cfg_w = dict(cfg, sliding_window=3)
            want_w = hf_forward(cfg_w, hf, toks)
            m2 = Metadata(meta)
            m2.types = dict(meta.types)
            m2.set("llama.attention.sliding_window", 3, VT_U32)
            report("llama: sliding window 3 ignored by llama.cpp (differs from HF)",
                   _rel(forward(m2, tens, toks), got) == 0.0 and _rel(forward(m2, tens, toks), want_w) > 1e-3)
            report("llama: llama_swa=True = HF Mistral with window 3",
                   _rel(forward(m2, tens, toks, llama_swa=True), want_w) <= 1e-6)
        if arch == "qwen3":  # attn_q_norm is there: scaling W_q changes nothing (up to eps)
            t2 = dict(tens)
            for L in range(cfg["num_hidden_layers"]):
                n = "blk.%d.attn_q.weight" % L
                t2[n] = (F32, tens[n][1], quantize(F32, tensor_f64(tens, n) * 4))
            report("qwen3: per-head q norm (4 * W_q gives the same logits)", _rel(forward(meta, t2, toks), got) < 1e-5)
        if arch in ("gemma2", "gemma3"):
            base = forward(meta, tens, toks)

            def with_window(w):
                m2 = Metadata(meta)
                m2.types = dict(meta.types)
                m2.set("%s.attention.sliding_window" % arch, w, VT_U32)
                return forward(m2, tens, toks)
            full, exact = with_window(10 ** 6), with_window(len(toks))
            report("%s: window >= T is full attention; window 3 is not" % arch,
                   _rel(exact, full) == 0.0 and _rel(base, full) > 1e-3)
            hp = hparams(meta)
            want_swa = [(i % (2 if arch == "gemma2" else 6)) < (1 if arch == "gemma2" else 5)
                        for i in range(cfg["num_hidden_layers"])]
            report("%s: SWA layers %s" % (arch, "".join("S" if s else "G" for s in hp["swa_layers"])),
                   hp["swa_layers"] == want_swa)
            gl = forward(meta, tens, toks, ggml_gelu_f16=True)
            report("%s: ggml fp16 GELU table close to exact GELU" % arch, 0 < _rel(gl, base) < 1e-2,
                   "rel %.2e" % _rel(gl, base))
            # the 27B rule: f_attention_scale from n_embd / n_head, not head_dim
            m2 = Metadata(meta)
            m2.types = dict(meta.types)
            m2.set("%s.block_count" % arch, 46 if arch == "gemma2" else 62, VT_U32)
            s27, s = hparams(m2)["attn_scale"], hparams(meta)["attn_scale"]
            report("%s: 27B attention scale 1/sqrt(n_embd/n_head)" % arch,
                   s27 == _f32(1 / np.sqrt(np.float32(8))) and s == _f32(1 / np.sqrt(np.float32(16))))
        if arch == "gemma3":  # no sliding window at all (sliding_window_pattern 1): all layers global
            cfg_g = dict(cfg, sliding_window_pattern=1)
            mg, tg = gguf_from_hf(cfg_g, hf, os.path.join(tmpdir, "tiny-gemma3-global.gguf"))
            report("gemma3: no sliding_window key -> all global = HF pattern 1",
                   "gemma3.attention.sliding_window" not in mg and
                   _rel(forward(mg, tg, toks), hf_forward(cfg_g, hf, toks)) <= 1e-6)
        if arch == "phi3":
            lg = forward(meta, tens, toks, n_ctx=4096)
            report("phi3: n_ctx 4096 > 16 -> long factors = HF long", _rel(lg, hf_forward(cfg, hf, toks, "long")) <= 1e-6
                   and _rel(lg, got) > 1e-3)
            t2 = {}
            for n, v in tens.items():  # newer llama.cpp also takes separate attn_q / attn_k / attn_v
                if n.endswith("attn_qkv.weight"):
                    w = tensor_f64(tens, n)
                    pre = n[:-len("attn_qkv.weight")]
                    for part, a in zip(("attn_q", "attn_k", "attn_v"), np.split(w, [32, 48], axis=0)):
                        t2[pre + part + ".weight"] = (F32, [a.shape[1], a.shape[0]], quantize(F32, a))
                else:
                    t2[n] = v
            report("phi3: fused attn_qkv = split q/k/v", _rel(forward(meta, t2, toks, n_ctx=16), got) <= 1e-12)
            m2 = Metadata(meta)
            m2.types = dict(meta.types)
            m2.set("phi3.attention.sliding_window", 3, VT_U32)
            report("phi3: sliding_window is ignored (llama.cpp disables Phi SWA)",
                   _rel(forward(m2, tens, toks, n_ctx=16), got) == 0.0)
    # the STANDARD mask rule, spelled out: query p1 sees p0 iff p0 <= p1 and p1 - p0 < n_swa
    vis = swa_visible(6, 3)
    rule = all(vis[p1, p0] == (p0 <= p1 and p1 - p0 < 3) for p1 in range(6) for p0 in range(6))
    report("swa_visible(T, 3): p0 <= p1 and p1 - p0 < 3", rule and int(vis.sum()) == 15)
    return bad


# ----------------------------------------------------------------------------------------------------------
# command line

SHIPPED = "/work/shared/models/gguf"


def read_tokens(path):
    with open(path) as f:
        return [int(s) for s in f.read().split()]


def read_logits(path):
    """-> (values [n_pos, n_vocab] float64, the unit of each value's last printed digit)."""
    from decimal import Decimal
    rows, ulps = [], []
    with open(path) as f:
        for line in f:
            toks = line.split()
            if not toks:
                continue
            rows.append([float(s) for s in toks])
            ulps.append([10.0 ** Decimal(s).as_tuple().exponent for s in toks])
    return np.array(rows, dtype=np.float64), np.array(ulps, dtype=np.float64)


def write_logits(path, logits):
    with open(path, "w") as f:
        for row in logits:
            f.write(" ".join("%.17g" % v for v in row.tolist()))
            f.write("\n")


def compare(logits, ref):
    rel = float(np.max(np.abs(logits - ref)) / np.max(np.abs(ref)))
    top = int(np.sum(np.argmax(logits, axis=1) == np.argmax(ref, axis=1)))
    return rel, top


def cmd_check(path, refpath, tokpath):
    meta, tensors = read_gguf(path)
    t0 = time.time()
    logits = forward(meta, tensors, read_tokens(tokpath))
    ref, ulp = read_logits(refpath)
    if ref.shape != logits.shape:
        print("%s: shape %s, reference %s" % (path, logits.shape, ref.shape))
        return 1
    rel, top = compare(logits, ref)
    # the reference is printed with few digits (%.7g): measure the error in units of each value's last
    # printed digit too; <= 0.5 means every value rounds to exactly the reference's text
    digits = float(np.max(np.abs(logits - ref) / ulp))
    ok = rel <= 1e-6
    print("%-24s rel_max %.3e  argmax %d/%d  max err %.4f of the last printed digit  %s  (%.2fs)" % (
        os.path.basename(path), rel, top, len(ref), digits, "OK" if ok else "FAIL", time.time() - t0))
    return 0 if ok else 1


def quantized_copy(meta, tensors, pick):
    """Every 2-D tensor re-encoded as pick(name) (from its float32 values); 1-D tensors stay F32."""
    out = {}
    for name, (t, ne, raw) in tensors.items():
        if len(ne) == 2:
            qt = pick(name)
            out[name] = (qt, list(ne), quantize(qt, dequantize(t, raw, ne[0] * ne[1])))
        else:
            out[name] = (F32, list(ne), quantize(F32, dequantize(t, raw, int(np.prod(ne)))))
    return out


def mixed_type(name):
    """spm-mixed.gguf: different types per tensor kind and per layer."""
    if name == "token_embd.weight":
        return IQ4_XS
    if name == "output.weight":
        return Q5_1
    layer = int(name.split(".")[1])
    kind = name.split(".")[2]
    if layer == 0:
        return Q4_1 if kind.startswith("attn") else Q5_0
    return {"attn_q": Q5_1, "attn_k": IQ4_XS, "attn_v": Q8_0, "attn_output": Q5_0,
            "ffn_gate": IQ4_XS, "ffn_up": Q4_1, "ffn_down": Q6_K}[kind]


def cmd_make(outdir):
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    meta, tensors = read_gguf(os.path.join(SHIPPED, "spm-F32.gguf"))
    toks = read_tokens(os.path.join(SHIPPED, "spm.tokens.txt"))
    ref_f32 = forward(meta, tensors, toks)
    jobs = [("spm-%s" % type_name(t), (lambda n, t=t: t)) for t in (Q4_1, Q5_0, Q5_1, IQ4_XS)]
    jobs.append(("spm-mixed", mixed_type))
    for base, pick in jobs:
        qt = quantized_copy(meta, tensors, pick)
        path = os.path.join(outdir, base + ".gguf")
        write_gguf(path, meta, qt)
        m2, t2 = read_gguf(path)  # the reference is computed from what the file holds
        assert list(t2) == list(qt) and all(t2[n][0] == qt[n][0] and t2[n][2] == qt[n][2] for n in qt)
        logits = forward(m2, t2, toks)
        write_logits(os.path.join(outdir, base + ".ref64.txt"), logits)
        rel, top = compare(logits, ref_f32)
        kinds = sorted({type_name(v[0]) for v in qt.values()})
        print("%-16s %8d bytes  types %-32s vs F32 logits: rel_max %.3e argmax %d/%d" % (
            base + ".gguf", os.path.getsize(path), ",".join(kinds), rel, top, len(toks)))
    print("make: %.2fs" % (time.time() - t0))
    return 0


def cmd_rows(path, name, row0, nrows):
    _, tensors = read_gguf(path)
    t, ne, raw = tensors[name]
    if len(ne) != 2:
        raise SystemExit("%s is not 2-D (ne %s)" % (name, ne))
    if row0 < 0 or nrows < 0 or row0 + nrows > ne[1]:
        raise SystemExit("rows %d..%d out of range (%d rows)" % (row0, row0 + nrows - 1, ne[1]))
    rb = tensor_nbytes(t, ne[0])
    vals = dequantize(t, raw[row0 * rb:(row0 + nrows) * rb], nrows * ne[0]).reshape(nrows, ne[0])
    lines = [" ".join("%.9g" % v for v in row.tolist()) for row in vals]
    sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    return 0


def cmd_info(path):
    meta, tensors = read_gguf(path)
    print("GGUF v%d, %d metadata keys, %d tensors" % (meta.version, len(meta), len(tensors)))
    for k, v in meta.items():
        s = repr(v if not isinstance(v, (list, np.ndarray)) else "[%d] %s" % (len(v), list(v[:4])))
        print("  %-44s %s" % (k, s[:100]))
    for name, (t, ne, raw) in tensors.items():
        print("  %-28s %-7s %-14s %d bytes" % (name, type_name(t), ne, len(raw)))
    return 0


def _dequant_scalar(t, raw, n):
    """Slow per-element decoder written from ggml's scalar dequantize_row_* loops, used only to cross-check
    the vectorised dequantize() for the types no shipped file holds (Q4_1, Q5_0, Q5_1, IQ4_XS)."""
    _, bs, ts = GGML_TYPES[t]
    f16 = lambda b, o: np.float32(np.frombuffer(bytes(b[o:o + 2]), dtype="<f2")[0])
    y = []
    for i in range(n // bs):
        b = raw[i * ts:(i + 1) * ts]
        if t in (Q4_1, Q5_0, Q5_1):
            d = f16(b, 0)
            m = f16(b, 2) if t != Q5_0 else None
            qh = int.from_bytes(bytes(b[2:6] if t == Q5_0 else b[4:8]), "little") if t != Q4_1 else 0
            qs = b[-16:]
            vals = [0] * 32
            for j in range(16):
                vals[j] = (qs[j] & 15) | (((qh >> j) & 1) << 4)
                vals[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)
            for v in vals:
                y.append(np.float32(v - 16) * d if t == Q5_0 else np.float32(v) * d + m)
        elif t == IQ4_XS:
            d = f16(b, 0)
            sh = b[2] | (b[3] << 8)
            qs = b[8:]
            for ib in range(8):
                ls = ((b[4 + ib // 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4)
                dl = d * np.float32(ls - 32)
                blk = qs[16 * ib:16 * ib + 16]
                y += [dl * np.float32(IQ4_GRID[q & 15]) for q in blk] + [dl * np.float32(IQ4_GRID[q >> 4]) for q in blk]
        else:
            raise NotImplementedError
    return np.array(y, dtype=np.float32)


def cmd_selftest():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(256 * 64) * 0.02).astype(np.float32)
    x[:32] = 0  # an all-zero block
    x[32:64] = 0.5  # a constant block
    x[64:96] = -np.abs(x[64:96])  # all negative
    bad = 0
    for t in (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K):
        raw = quantize(t, x)
        assert len(raw) == tensor_nbytes(t, x.size)
        y = dequantize(t, raw, x.size)
        err = float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2)))
        again = quantize(t, y)  # quantizing what came out should be stable or nearly so
        drift = float(np.max(np.abs(dequantize(t, again, x.size) - y)))
        lim = {F32: 0, F16: 1e-3, BF16: 5e-3, Q8_0: 1e-2, Q6_K: 3e-2, Q5_0: 5e-2, Q5_1: 5e-2, Q5_K: 5e-2, Q3_K: 0.15, Q2_K: 0.3}.get(t, 0.12)
        ok = err <= lim
        bad += not ok
        print("%-7s %4d bytes/256  rms rel err %.4f (limit %.3g)  requantize drift %.2e  %s" % (
            type_name(t), len(raw) * 256 // x.size, err, lim, drift, "OK" if ok else "FAIL"))
    # nibble/bit placement: a ramp of 16 levels must survive in order where the scale is exact in fp16
    ramp = np.tile(np.arange(16, dtype=np.float32) - 8, 16 * 16)
    for t in (Q4_0, Q4_1, Q5_0, Q6_K):  # steps 1 / 1 / 0.5 / 0.25*... exactly representable
        y = dequantize(t, quantize(t, ramp), ramp.size)
        okr = np.allclose(y, ramp, atol=1e-3)
        bad += not okr
        print("ramp %-7s %s" % (type_name(t), "OK" if okr else "FAIL max err %g" % np.max(np.abs(y - ramp))))
    # vectorised vs scalar decoding on random blocks (fp16 scales kept finite)
    for t in (Q4_1, Q5_0, Q5_1, IQ4_XS):
        _, bs, ts = GGML_TYPES[t]
        nbk = 16 if bs == 32 else 4
        raw = rng.integers(0, 256, size=(nbk, ts), dtype=np.uint8)
        nsc = 4 if t in (Q4_1, Q5_1) else 2  # d (and m) at the start of the block
        raw[:, 1:nsc:2] &= 0x3B  # fp16 high bytes: |value| < 1, no inf/nan
        raw = raw.tobytes()
        a, b = dequantize(t, raw, nbk * bs), _dequant_scalar(t, raw, nbk * bs)
        oks = np.array_equal(a, b)
        bad += not oks
        print("scalar cross-check %-7s %s" % (type_name(t), "OK" if oks else "FAIL"))
    # write / read round trip with every metadata type
    import tempfile
    m = Metadata()
    vals = [("a.u8", 200, VT_U8), ("a.i8", -5, VT_I8), ("a.u16", 60000, VT_U16), ("a.i16", -300, VT_I16),
            ("a.u32", 4000000000, VT_U32), ("a.i32", -7, VT_I32), ("a.f32", 0.5, VT_F32), ("a.b", True, VT_BOOL),
            ("a.s", "h\u00e9llo \u2581x", VT_STR), ("a.u64", 2 ** 40, VT_U64), ("a.i64", -2 ** 40, VT_I64),
            ("a.f64", 1e-300, VT_F64), ("a.arr_s", ["", "x", "\u4f60\u597d"], (VT_ARR, VT_STR)),
            ("a.arr_f", np.array([1.5, -2], dtype="<f4"), (VT_ARR, VT_F32)),
            ("a.arr_b", np.array([True, False]), (VT_ARR, VT_BOOL)),
            ("a.arr_i", np.array([1, -2, 3], dtype="<i4"), (VT_ARR, VT_I32)), ("general.alignment", 64, VT_U32)]
    for k, v, vt in vals:
        m.set(k, v, vt)
    tens = {"w": (Q4_1, [32, 3], quantize(Q4_1, x[:96])), "b": (F32, [5], quantize(F32, x[:5]))}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.gguf")
        write_gguf(p, m, tens)
        m2, t2 = read_gguf(p)
        badk = [k for k, v, vt in vals if not (m2.types[k] == vt and (
            np.array_equal(m2[k], v) if isinstance(v, np.ndarray) else m2[k] == v))]
        okm = not badk and list(m2) == [k for k, _, _ in vals]
        if badk:
            print("metadata mismatch:", [(k, m2[k], m2.types[k]) for k in badk])
        okt = all(t2[n][0] == tens[n][0] and t2[n][1] == tens[n][1] and t2[n][2] == tens[n][2] for n in tens)
        with open(p, "rb") as f:
            data = f.read()
        # re-writing what was read gives the same bytes
        write_gguf(p, m2, t2)
        with open(p, "rb") as f:
            same = f.read() == data
        # v2 has the same layout as v3 (v3 only added big-endian files, which this reader does not take)
        m3, t3 = read_gguf(data[:4] + struct.pack("<I", 2) + data[8:])
        okv2 = m3.version == 2 and list(m3) == list(m2) and all(t3[n][2] == t2[n][2] for n in t2)
    for what, ok in (("metadata round trip", okm), ("tensor round trip", okt), ("rewrite identical", same),
                     ("GGUF v2 read", okv2)):
        bad += not ok
        print("%-20s %s" % (what, "OK" if ok else "FAIL"))
    # the architectures: llama.cpp's conversion + forward against transformers' forward on tiny random models
    with tempfile.TemporaryDirectory() as d:
        bad += arch_selftest(d)
    print("selftest: %s" % ("OK" if not bad else "%d FAILED" % bad))
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "check" and len(argv) == 5:
        return cmd_check(argv[2], argv[3], argv[4])
    if len(argv) >= 2 and argv[1] == "make" and len(argv) == 3:
        return cmd_make(argv[2])
    if len(argv) >= 2 and argv[1] == "rows" and len(argv) == 6:
        return cmd_rows(argv[2], argv[3], int(argv[4]), int(argv[5]))
    if len(argv) >= 2 and argv[1] == "info" and len(argv) == 3:
        return cmd_info(argv[2])
    if len(argv) >= 2 and argv[1] == "selftest":
        return cmd_selftest()
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
