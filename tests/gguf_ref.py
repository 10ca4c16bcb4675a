#!/usr/bin/env python3
"""Independent GGUF reference for run.c's tests: reader/writer, ggml dequantizers and simple quantizers,
and a float64 forward pass (arch llama / qwen2), in Python 3 + numpy only.

    gguf_ref.py check FILE.gguf REF64.txt TOKENS.txt   # forward(FILE) vs a float64 reference; exit 0 if rel <= 1e-6
    gguf_ref.py make OUT_DIR                           # spm-{Q4_1,Q5_0,Q5_1,IQ4_XS,mixed}.gguf + .ref64.txt
    gguf_ref.py rows FILE.gguf TENSOR ROW0 NROWS       # dequantized rows of a 2-D tensor, %.9g
    gguf_ref.py info FILE.gguf                         # metadata (abridged) and tensor table
    gguf_ref.py selftest                               # quantize/dequantize and write/read round trips

Dequantization follows ggml's block layouts and evaluates every product in float32 in the order ggml's
dequantize_row_* does (d*scale first, then times the quant, then minus the min), so the values equal
ggml's to_float bit for bit; the forward pass then runs in float64 on those values:
RMSNorm, RoPE (arch llama: adjacent pairs (2i, 2i+1), since the converter permuted q/k; qwen2: halves
(i, i+n_rot/2)), angle = pos * theta^(-2i/n_rot) / rope_freqs[i], GQA q head h -> kv head h/(n_head/n_kv),
causal softmax with 1/sqrt(head_dim), SwiGLU FFN, optional q/k/v biases, output = token_embd when
output.weight is absent.
"""
import os, struct, sys, time

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
# quantizers: plain round-to-nearest per block. Whatever they choose, the bytes are a valid block of the
# type, and every reference is computed from dequantize() of what was written.

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

def tensor_f64(tensors, name):
    t, ne, raw = tensors[name]
    a = dequantize(t, raw, int(np.prod(ne))).astype(np.float64)
    return a.reshape(list(reversed(ne))) if len(ne) > 1 else a


def _rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, n_rot, theta, freq_factors, neox):
    """x: [T, H, hd], rotated in place on its first n_rot dims."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    freq = theta ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        freq = freq / freq_factors[: n_rot // 2]
    ang = pos[:, None].astype(np.float64) * freq[None, :]  # [T, n_rot/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : n_rot // 2].copy(), x[..., n_rot // 2: n_rot].copy()
        x[..., : n_rot // 2] = a * c - b * s
        x[..., n_rot // 2: n_rot] = a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
        x[..., 0:n_rot:2] = a * c - b * s
        x[..., 1:n_rot:2] = a * s + b * c
    return x


def forward(meta, tensors, token_ids):
    arch = meta["general.architecture"]
    if arch not in ("llama", "qwen2"):
        raise NotImplementedError("arch %s" % arch)
    g = lambda k, d=None: meta.get("%s.%s" % (arch, k), d)
    n_embd, n_layer = int(g("embedding_length")), int(g("block_count"))
    n_head = int(g("attention.head_count"))
    n_kv = int(g("attention.head_count_kv", n_head))
    hd = int(g("attention.key_length", n_embd // n_head))
    n_rot = int(g("rope.dimension_count", hd))
    theta = float(g("rope.freq_base", 10000.0))
    eps = float(g("attention.layer_norm_rms_epsilon", 1e-5))
    neox = arch == "qwen2"
    ff = tensor_f64(tensors, "rope_freqs.weight") if "rope_freqs.weight" in tensors else None
    W = lambda n: tensor_f64(tensors, n)
    opt = lambda n: W(n) if n in tensors else None

    toks = np.asarray(token_ids, dtype=np.int64)
    T = len(toks)
    pos = np.arange(T)
    emb = W("token_embd.weight")  # [n_vocab, n_embd]
    x = emb[toks].copy()
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    group = n_head // n_kv
    for L in range(n_layer):
        p = "blk.%d." % L
        h = _rmsnorm(x, W(p + "attn_norm.weight"), eps)
        q, k, v = h @ W(p + "attn_q.weight").T, h @ W(p + "attn_k.weight").T, h @ W(p + "attn_v.weight").T
        for name, arr in (("attn_q.bias", q), ("attn_k.bias", k), ("attn_v.bias", v)):
            bias = opt(p + name)
            if bias is not None:
                arr += bias
        q = _rope(q.reshape(T, n_head, hd), pos, n_rot, theta, ff, neox)
        k = _rope(k.reshape(T, n_kv, hd), pos, n_rot, theta, ff, neox)
        v = v.reshape(T, n_kv, hd)
        att = np.empty((T, n_head, hd))
        for hh in range(n_head):
            kh = hh // group
            s = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            att[:, hh, :] = s @ v[:, kh, :]
        x = x + att.reshape(T, n_head * hd) @ W(p + "attn_output.weight").T
        h = _rmsnorm(x, W(p + "ffn_norm.weight"), eps)
        gt, up = h @ W(p + "ffn_gate.weight").T, h @ W(p + "ffn_up.weight").T
        x = x + (gt / (1.0 + np.exp(-gt)) * up) @ W(p + "ffn_down.weight").T
    x = _rmsnorm(x, W("output_norm.weight"), eps)
    out = W("output.weight") if "output.weight" in tensors else emb
    return x @ out.T


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
    for t in (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q4_K, Q5_K, Q6_K):
        raw = quantize(t, x)
        assert len(raw) == tensor_nbytes(t, x.size)
        y = dequantize(t, raw, x.size)
        err = float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2)))
        again = quantize(t, y)  # quantizing what came out should be stable or nearly so
        drift = float(np.max(np.abs(dequantize(t, again, x.size) - y)))
        lim = {F32: 0, F16: 1e-3, BF16: 5e-3, Q8_0: 1e-2, Q6_K: 3e-2, Q5_0: 5e-2, Q5_1: 5e-2, Q5_K: 5e-2}.get(t, 0.12)
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
