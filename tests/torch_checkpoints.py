#!/usr/bin/env python3
"""Rewrites a llama2.c v0 checkpoint (fp32, unshared classifier) as the PyTorch files export.py reads:
a llama2.c training checkpoint (ckpt.pt: model_args + a compiled model's state dict) and a Meta folder
(params.json + consolidated.00.pth / .01.pth split as model-parallel shards).
    /usr/bin/python3 tests/torch_checkpoints.py MODEL_V0.bin OUT_DIR
"""
import json, os, struct, sys
import numpy as np
import torch

def main(src, out):
    data = open(src, "rb").read()
    d, h, L, nh, nkv, vocab, seq = struct.unpack("<7i", data[:28])
    assert vocab < 0, "expects an unshared classifier"
    vocab, kv, hs = -vocab, d // nh * nkv, d // nh
    x = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0
    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = x[pos:pos + n].reshape(shape)
        pos += n
        return t
    emb, rms_att = take(vocab, d), take(L, d)
    wq, wk, wv, wo = take(L, d, d), take(L, kv, d), take(L, kv, d), take(L, d, d)
    rms_ffn, w1, w2, w3 = take(L, d), take(L, h, d), take(L, d, h), take(L, h, d)
    norm = take(d)
    take(seq, hs)  # freq_cis
    out_w = take(vocab, d)
    sd = {"tok_embeddings.weight": emb, "norm.weight": norm, "output.weight": out_w}
    for l in range(L):
        sd.update({f"layers.{l}.attention.wq.weight": wq[l], f"layers.{l}.attention.wk.weight": wk[l],
                   f"layers.{l}.attention.wv.weight": wv[l], f"layers.{l}.attention.wo.weight": wo[l],
                   f"layers.{l}.feed_forward.w1.weight": w1[l], f"layers.{l}.feed_forward.w2.weight": w2[l],
                   f"layers.{l}.feed_forward.w3.weight": w3[l], f"layers.{l}.attention_norm.weight": rms_att[l],
                   f"layers.{l}.ffn_norm.weight": rms_ffn[l]})
    sd = {k: torch.tensor(np.array(v)) for k, v in sd.items()}
    os.makedirs(os.path.join(out, "meta"), exist_ok=True)
    args = dict(dim=d, n_layers=L, n_heads=nh, n_kv_heads=nkv, vocab_size=vocab, multiple_of=32, max_seq_len=seq)
    torch.save({"model_args": args, "model": {"_orig_mod." + k: v for k, v in sd.items()}}, os.path.join(out, "ckpt.pt"))
    json.dump(dict(dim=d, n_layers=L, n_heads=nh, n_kv_heads=nkv, norm_eps=1e-5, vocab_size=-1),
              open(os.path.join(out, "meta", "params.json"), "w"))
    cat_dim1 = ("tok_embeddings.weight", ".wo.weight", ".w2.weight")
    for shard in range(2):  # model parallel: halves along the output dim, or the input dim for these
        part = {}
        for k, v in sd.items():
            if v.ndim == 1:
                part[k] = v
            else:
                axis = 1 if k.endswith(cat_dim1) else 0
                part[k] = torch.chunk(v, 2, dim=axis)[shard].clone()
        torch.save(part, os.path.join(out, "meta", f"consolidated.{shard:02d}.pth"))
    print(f"wrote {out}/ckpt.pt and {out}/meta/", file=sys.stderr)

if __name__ == "__main__":
    main(*sys.argv[1:3])
