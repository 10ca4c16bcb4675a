#!/usr/bin/env python3
"""export.py's refusals, group sizes and --check, each run as a user runs it:

    /usr/bin/python3 tests/test_export.py TMPDIR        (from the repository root; test_all.c runs it)

Every check runs `/usr/bin/python3 export.py ...` in a subprocess on tiny Hugging Face-style folders
written here, and prints `ok   <what>`, `FAIL <what>: <details>` or `skip <what> (skipped: <why>)`,
then `done N passed, M failed`; the exit status is 0 whenever the script ran to its end. A refusal
must exit with status 1 and print exactly one line, "export.py: ...", with no traceback and no file
left behind. EXPORT_PY=FILE tests another copy of export.py, e.g. the committed one to see the
checks fail before a fix: git show HEAD:export.py > /tmp/export_orig.py.
"""
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.environ.get("EXPORT_PY", "export.py")  # relative to the repository root, where the checks run
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
counts = {"ok": 0, "FAIL": 0}


def report(ok, what, details=""):
    counts["ok" if ok else "FAIL"] += 1
    print(f"ok   {what}" if ok else f"FAIL {what}: {details}", flush=True)


def skip(what, why):
    print(f"skip {what} (skipped: {why})", flush=True)


def export(*args, env=None, preexec=None, wrapper=None):
    """Runs /usr/bin/python3 export.py ARGS (or python3 -c WRAPPER export.py ARGS) in the repository root."""
    cmd = [PY] + (["-c", wrapper] if wrapper else []) + [EXPORT] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, preexec_fn=preexec, timeout=300)


def short(text, n=300):
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= n else text[:n] + "..."


def refuses(what, args, words, absent=(), watch=None, midway=False, **kw):
    """export.py exits with 1 and one line on stderr, "export.py: ..." containing every one of words
    (case-insensitive) and none of absent, with no traceback and no new file in the watched folder.
    midway: a failure once the conversion has started, so its progress lines come before that one line."""
    watch = watch or OUT
    before = set(os.listdir(watch))
    r = export(*args, **kw)
    left = sorted(set(os.listdir(watch)) - before)
    lines = r.stderr.splitlines()
    errors = [l for l in lines if l.startswith("export.py")]
    problems = [p for p, bad in (
        (f"exit status {r.returncode}, expected 1", r.returncode != 1),
        (f"{len(lines)} lines on stderr, expected 1", len(lines) != 1 and not midway),
        ("a traceback", "Traceback" in r.stderr),
        ("its last line does not start with 'export.py: '", not lines or not lines[-1].startswith("export.py: ")),
        (f"{len(errors)} lines start with 'export.py', expected 1", len(errors) != 1),
        (f"left {left} in {watch}", bool(left))) if bad]
    message = lines[-1] if lines else ""
    problems += [f"no {w!r}" for w in words if w.lower() not in message.lower()]
    problems += [f"says {w!r}" for w in absent if w.lower() in r.stderr.lower()]
    for f in left:
        path = os.path.join(watch, f)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    report(not problems, what, "; ".join(problems) + f" -- stderr: {short(r.stderr)}")
    return r


def converts(what, args, out, words=(), group=None, group_at=80):
    """export.py exits with 0, writes out and nothing else, says every one of words, and (group) writes
    that group size into the header at byte group_at; returns stderr."""
    before = set(os.listdir(OUT)) - {os.path.basename(out)}
    r = export(*args)
    left = sorted(set(os.listdir(OUT)) - before - {os.path.basename(out)})
    problems = [p for p, bad in ((f"exit status {r.returncode}", r.returncode != 0), ("a traceback", "Traceback" in r.stderr),
                                 (f"no {out}", not os.path.isfile(out)), (f"left {left}", bool(left))) if bad]
    problems += [f"no {w!r}" for w in words if w.lower() not in r.stderr.lower()]
    if group is not None and os.path.isfile(out):
        with open(out, "rb") as f:
            got = struct.unpack_from("<i", f.read(256), group_at)[0]
        if got != group:
            problems.append(f"group size {got} in the header, expected {group}")
    report(not problems, what, "; ".join(problems) + f" -- stderr: {short(r.stderr, 600)}")
    return r.stderr


# ----------------------------------------------------------------------------
# Fixtures: tiny Hugging Face folders (config.json + safetensors written with tests/hf_models.py's writer)

def hf_folder(name, dim=64, hidden=128, heads=4, kv_heads=2, layers=2, vocab=96, config=None, edit=None, shards=1):
    folder = os.path.join(WORK, name)
    os.makedirs(folder)
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": dim, "intermediate_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
           "vocab_size": vocab, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu"}
    for k, v in (config or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(sum(map(ord, name)))
    hs = dim // heads
    shapes = {"model.embed_tokens.weight": (vocab, dim), "model.norm.weight": (dim,), "lm_head.weight": (vocab, dim)}
    for l in range(layers):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (dim,), p + "post_attention_layernorm.weight": (dim,),
                       p + "self_attn.q_proj.weight": (heads * hs, dim), p + "self_attn.k_proj.weight": (kv_heads * hs, dim),
                       p + "self_attn.v_proj.weight": (kv_heads * hs, dim), p + "self_attn.o_proj.weight": (dim, heads * hs),
                       p + "mlp.gate_proj.weight": (hidden, dim), p + "mlp.up_proj.weight": (hidden, dim),
                       p + "mlp.down_proj.weight": (dim, hidden)})
    w = {k: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.05 * rng.standard_normal(s)).astype(np.float32)
         for k, s in shapes.items()}
    if edit:
        edit(w)
    names = list(w)
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), w, "F32")
    else:
        index = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = names[s::shards]
            write_safetensors(os.path.join(folder, fname), {n: w[n] for n in part}, "F32")
            index.update({n: fname for n in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": index}, f)
    return folder


def symmetric_groups(w):
    """Every group of 32 in the embedding holds a and -a, the values of largest magnitude, with a / 8 just
    above an fp16 number: q4_0's fp16 scale rounds towards zero, so -a lands past 7 steps and clamps to 7,
    1 + 8 * 3e-4 steps from its value (a correct file that a 1.0001-step limit refused)."""
    d = float(np.float16(0.01))
    a = np.float32(8 * d * (1 + 3e-4))
    e = w["model.embed_tokens.weight"]
    e[:] = np.clip(e, -0.9 * a, 0.9 * a)
    e[:, 0::32], e[:, 1::32] = a, -a


NO_NUMPY = "raise ImportError(\"No module named 'numpy'\")\n"

# A disk that fills after 4 KiB: export.py run with open() wrapped for its temporary output file, and
# statvfs saying FREE_BLOCKS blocks of 4 KiB are free.
DISK_FULL = r'''
import builtins, errno, os, runpy, sys
os.statvfs = lambda path: os.statvfs_result((4096, 4096, 1 << 30, FREE_BLOCKS, FREE_BLOCKS, 1000, 1000, 1000, 0, 255))
real_open = builtins.open
class Full:
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, b):
        self.n += len(b)
        if self.n > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(b)
    def __getattr__(self, name):
        return getattr(self.f, name)
def fake_open(file, mode="r", *args, **kw):
    f = real_open(file, mode, *args, **kw)
    return Full(f) if "w" in mode and ".tmp-" in str(file) else f
builtins.open = fake_open
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

# export.py with one byte of the written file flipped between writing and --check (its first tensor's
# first byte: two 4-bit values of tok_embeddings, each moved by 8 steps).
CORRUPT = r'''
import importlib.util, struct, sys
sys.dont_write_bytecode = True  # no __pycache__ beside export.py
spec = importlib.util.spec_from_file_location("export", sys.argv[1])
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)
write_v3 = export.write_v3
def corrupted(m, out, *args, **kw):
    result = write_v3(m, out, *args, **kw)
    with open(out, "r+b") as f:
        off = struct.unpack_from("<Q", f.read(256), 104)[0]
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x88]))
    return result
export.write_v3 = corrupted
sys.exit(export.main(sys.argv[2:]))
'''


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


# ----------------------------------------------------------------------------

def main():
    good = hf_folder("good")
    out = os.path.join(OUT, "good.bin")

    # what still works, and says what it chose
    err = converts("a tiny Llama folder converts (default q8_0), saying its groups of 64", [out, "--hf", good], out,
                   ["groups of 64"], group=64)
    etas = re.findall(r"ETA\s*(\S+)s", err)
    report(etas and not any(e.startswith("-") for e in etas), "the progress never shows a negative ETA (not even -0s)",
           f"ETAs {' '.join(etas)}")
    h = export("--help")
    report(h.returncode == 0 and "%%" not in h.stdout and "1%" in h.stdout, "--help shows 1%, not a literal 1%%",
           short(h.stdout[-400:]))
    converts("--version 2 writes llama2.c's Q8_0 in groups of 64 (--dtype q8_0 agrees)",
             [out, "--hf", good, "--version", "2", "--dtype", "q8_0"], out, ["groups of 64"], group=64, group_at=37)
    odd = hf_folder("odd", dim=64, hidden=172)
    converts("hidden_dim 172: q8_0 groups of 4 (the largest that divides), with a note on the cost and bf16",
             [out, "--hf", odd], out, ["note", "groups of 4", "hidden_dim 172", "bytes per weight", "bf16"], group=4)
    converts("hidden_dim 172: q4_0 groups of 4, with a note", [out, "--hf", odd, "--dtype", "q4_0"], out,
             ["note", "groups of 4", "bf16"], group=4)
    h96 = hf_folder("h96", dim=64, hidden=96)
    converts("hidden_dim 96: q8_0 groups of 32 (not smaller), and the summary says so", [out, "--hf", h96], out,
             ["groups of 32"], group=32)
    d48 = hf_folder("d48", dim=48, hidden=96, heads=4, kv_heads=2)
    converts("dim 48: q8_0 groups of 48 (divides every row, though not the fast kernels' 32), with a note",
             [out, "--hf", d48], out, ["note", "groups of 48"], group=48)
    converts("q8_0 --check passes on a good file", [out, "--hf", good, "--check"], out, ["check:"])
    converts("bf16 --check passes on a good file", [out, "--hf", good, "--dtype", "bf16", "--check"], out, ["check:"])
    sym = hf_folder("sym", edit=symmetric_groups)
    converts("q4_0 --check passes on a good file whose fp16 scales round towards zero (1.0024 steps)",
             [out, "--hf", sym, "--dtype", "q4_0", "--check"], out, ["check:"])
    converts("q4_0 --check passes on a random model", [out, "--hf", good, "--dtype", "q4_0", "--check"], out, ["check:"])
    if os.path.exists(out):
        os.remove(out)
    refuses("q4_0 --check refuses a file with a corrupted byte, and removes it",
            [os.path.join(OUT, "corrupt.bin"), "--hf", good, "--dtype", "q4_0", "--check"],
            ["--check", "tok_embeddings", "does not match", "removed"], wrapper=CORRUPT, midway=True)
    refuses("q8_0 --check refuses a file with a corrupted byte", [os.path.join(OUT, "corrupt.bin"), "--hf", good, "--check"],
            ["--check", "tok_embeddings", "does not match"], wrapper=CORRUPT, midway=True)

    # flags
    never = os.path.join(OUT, "never.bin")
    refuses("--version 2 --dtype q4_0 (llama2.c's v2 is Q8_0 only)", [never, "--hf", good, "--version", "2", "--dtype", "q4_0"],
            ["--version 2", "q8_0", "q4_0"])
    refuses("--version 0 --dtype q8_0 (v0 is fp32)", [never, "--hf", good, "--version", "0", "--dtype", "q8_0"],
            ["--version 0", "fp32"])
    refuses("--group-size 48 that does not divide the rows, naming them", [never, "--hf", good, "--group-size", "48"],
            ["--group-size 48", "dim 64", "hidden_dim 128"])
    refuses("--version 2 --group-size 48 that does not divide dim 64", [never, "--hf", good, "--version", "2", "--group-size", "48"],
            ["--group-size 48", "dim 64"])
    refuses("a negative --seq-len", [never, "--hf", good, "--seq-len", "-5"], ["--seq-len"])
    refuses("an unknown option", [never, "--hf", good, "--frobnicate"], ["--frobnicate"])

    # inputs
    refuses("python3 without numpy", [never, "--hf", good], ["needs numpy", "apt-get install python3-numpy", "/usr/bin/python3"],
            env=dict(os.environ, PYTHONPATH=NUMPYLESS))
    refuses("--hf with a folder that does not exist", [never, "--hf", os.path.join(WORK, "nope")],
            ["--hf", "nope", "no such folder"], absent=["config.json"])
    empty = os.path.join(WORK, "empty")
    os.makedirs(empty)
    refuses("--hf with a folder without config.json", [never, "--hf", empty], ["no config.json"])
    refuses("empty architectures", [never, "--hf", hf_folder("noarch", config={"architectures": []})],
            ["architectures", "LlamaForCausalLM", "Qwen2ForCausalLM"], absent=["architecture  is"])
    refuses("no architectures entry", [never, "--hf", hf_folder("noarch2", config={"architectures": None})],
            ["architectures", "LlamaForCausalLM"])
    refuses("an unsupported architecture (the message test_all.c expects)",
            [never, "--hf", hf_folder("gpt2", config={"architectures": ["GPT2LMHeadModel"]})],
            ["architecture GPT2LMHeadModel is not supported"])
    bad_json = hf_folder("badjson")
    with open(os.path.join(bad_json, "config.json"), "w") as f:
        f.write('{"architectures": ["LlamaForCausalLM"],')
    refuses("a config.json that is not JSON", [never, "--hf", bad_json], ["config.json", "JSON"])
    refuses("a config.json without hidden_size", [never, "--hf", hf_folder("nodim", config={"hidden_size": None})],
            ["hidden_size"])
    sharded = hf_folder("sharded", shards=2)
    converts("a folder of 2 shards with an index converts", [out, "--hf", sharded], out)
    os.remove(os.path.join(sharded, "model-00002-of-00002.safetensors"))
    refuses("a shard listed in the index is missing", [never, "--hf", sharded],
            ["model-00002-of-00002.safetensors", "index", "missing"])
    trunc = hf_folder("trunc")
    with open(os.path.join(trunc, "model.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) - 1000)
    refuses("a truncated .safetensors", [never, "--hf", trunc], ["model.safetensors", "truncated", "download"])
    garbage = hf_folder("garbage")
    with open(os.path.join(garbage, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 40) + b"{not json at all, not at all, not at all}")
    refuses("a .safetensors whose header is not JSON", [never, "--hf", garbage], ["model.safetensors", "header"])
    refuses("a tensor missing from the safetensors (before writing)",
            [never, "--hf", hf_folder("missing", edit=lambda w: w.pop("model.layers.1.mlp.up_proj.weight"))],
            ["model.layers.1.mlp.up_proj.weight", "missing"])
    refuses("a tensor of the wrong shape (before writing)",
            [never, "--hf", hf_folder("shape", edit=lambda w: w.update(
                {"model.layers.1.mlp.up_proj.weight": np.zeros((8, 8), np.float32)}))],
            ["layers.1.w3", "shape", "(8, 8)", "(128, 64)"])
    refuses("--tokenizer nope.model (alone)", [never, "--tokenizer", os.path.join(WORK, "nope.model")],
            ["--tokenizer", "nope.model", "no such file"])
    refuses("--tokenizer nope.model with a model", [never, "--hf", good, "--tokenizer", os.path.join(WORK, "nope.model")],
            ["--tokenizer", "nope.model", "no such file"])
    damaged = os.path.join(WORK, "damaged.model")
    with open(damaged, "wb") as f:
        f.write(b"\x0a\xff")
    refuses("a damaged tokenizer.model", [never, "--tokenizer", damaged], ["damaged.model", "SentencePiece"])

    # outputs
    refuses("an output folder that does not exist", [os.path.join(WORK, "nodir", "x.bin"), "--hf", good],
            ["nodir", "does not exist"], absent=[".tmp-"])
    refuses("an output that is a folder (before converting)", [OUT, "--hf", good], ["folder", OUT])
    fifo = os.path.join(OUT, "fifo")
    os.mkfifo(fifo)
    refuses("an output that exists and is not a regular file (a FIFO)", [fifo, "--hf", good], ["not a regular file"])
    report(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is left as it was", "replaced")
    os.remove(fifo)
    readonly = os.path.join(WORK, "readonly")
    os.makedirs(readonly)
    os.chmod(readonly, 0o555)
    preexec = None
    if os.geteuid() == 0:  # root writes anywhere: run that check as nobody, where it can read export.py
        probe = subprocess.run([PY, "-c", f"import numpy; open({EXPORT!r}).close(); import os; os.listdir({readonly!r})"],
                               cwd=REPO, capture_output=True, preexec_fn=as_nobody)
        preexec = as_nobody if probe.returncode == 0 else False
    if preexec is False:
        skip("an output folder that is not writable", "running as root, and user nobody cannot read export.py or the "
             f"scratch folder {WORK}")
    else:
        refuses("an output folder that is not writable", [os.path.join(readonly, "x.bin"), "--hf", good],
                ["readonly", "not writable"], absent=[".tmp-"], watch=readonly, preexec=preexec)
    refuses("a disk without room for the output (before converting)", [never, "--hf", good],
            ["never.bin", "MiB free", "free some space"], absent=[".tmp-"], wrapper=DISK_FULL.replace("FREE_BLOCKS", "1"))
    refuses("a disk that fills up while writing (ENOSPC)", [never, "--hf", good],
            ["never.bin", "no space left", "free some space"], absent=[".tmp-"], midway=True,
            wrapper=DISK_FULL.replace("FREE_BLOCKS", "1 << 30"))
    try:
        import resource

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))
        refuses("a file size limit hit while writing (ulimit -f, EFBIG)", [never, "--hf", good], ["never.bin", "file too large"],
                absent=[".tmp-"], preexec=small_files, midway=True)
    except ImportError:
        skip("a file size limit hit while writing", "no resource module on this platform")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: /usr/bin/python3 tests/test_export.py TMPDIR (an existing scratch folder)")
    WORK = os.path.join(os.path.abspath(sys.argv[1]), "test_export")
    OUT = os.path.join(WORK, "out")
    if os.path.isdir(WORK):
        for root, dirs, _ in os.walk(WORK):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        shutil.rmtree(WORK)
    os.makedirs(OUT)
    sys.dont_write_bytecode = True  # importing tests/hf_models.py leaves no __pycache__
    try:
        import numpy as np
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from hf_models import write_safetensors
    except ImportError:
        skip("export.py's checks", "no numpy for this Python: apt-get install python3-numpy and run /usr/bin/python3")
    else:
        NUMPYLESS = os.path.join(WORK, "numpyless")
        os.makedirs(NUMPYLESS)
        with open(os.path.join(NUMPYLESS, "numpy.py"), "w") as f:
            f.write(NO_NUMPY)
        main()
    print(f"done {counts['ok']} passed, {counts['FAIL']} failed", flush=True)
