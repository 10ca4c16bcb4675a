#!/usr/bin/env python3
"""Writes a llama2.c v0 checkpoint with deterministic random weights, for speed measurements.

    python3 tests/random_checkpoint.py OUT.bin --dim 768 --hidden 2048 --layers 12 --heads 12 \
        --kv-heads 12 --vocab 32000 --seq-len 1024          # the stories110M shape
Weights stream to the file one tensor at a time, so any size fits in memory.
"""
import argparse, struct, sys
import numpy as np

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    for name, default in [("dim", 768), ("hidden", 2048), ("layers", 12), ("heads", 12), ("kv-heads", 12),
                          ("vocab", 32000), ("seq-len", 1024), ("seed", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    d, h, L, kv = a.dim, a.hidden, a.layers, a.dim // a.heads * a.kv_heads
    hs = d // a.heads

    def rand(*shape, scale=0.02, offset=0.0):
        return (offset + scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    with open(a.out, "wb") as f:
        # negative vocab: an unshared classifier (a shared one makes a random model repeat its input)
        f.write(struct.pack("7i", d, h, L, a.heads, a.kv_heads, -a.vocab, a.seq_len))
        tensors = [("token_embedding", (a.vocab, d), 1.0), ("rms_att", (L, d), None), ("wq", (L, d, d), 0.02),
                   ("wk", (L, kv, d), 0.02), ("wv", (L, kv, d), 0.02), ("wo", (L, d, d), 0.02),
                   ("rms_ffn", (L, d), None), ("w1", (L, h, d), 0.02), ("w2", (L, d, h), 0.02),
                   ("w3", (L, h, d), 0.02), ("rms_final", (d,), None), ("freq_cis", (2, a.seq_len, hs // 2), 0.0),
                   ("wcls", (a.vocab, d), 0.02)]
        for name, shape, scale in tensors:
            t = rand(*shape, scale=0.1, offset=1.0) if scale is None else rand(*shape, scale=scale)
            f.write(t.tobytes())
            print(f"  {name:16s} {str(shape):22s}", file=sys.stderr)
    print(f"wrote {a.out}", file=sys.stderr)

if __name__ == "__main__":
    main()
