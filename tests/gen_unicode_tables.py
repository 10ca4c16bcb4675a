#!/usr/bin/env python3
"""Prints the Unicode letter (L*) and number (N*) ranges that run.c's byte-level pre-tokenizers need
(the \\p{L} and \\p{N} of the Llama 3 / Qwen2 / GPT-2 split patterns), from Python's unicodedata.
    python3 tests/gen_unicode_tables.py      # then paste over the tables in run.c
"""
import unicodedata

def ranges(major):
    out, start = [], None
    for cp in range(0x110000):
        ok = unicodedata.category(chr(cp))[0] == major
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1)); start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out

for name, major in (("lm_unicode_letters", "L"), ("lm_unicode_numbers", "N")):
    rs = ranges(major)
    print(f"static const uint32_t {name}[][2] = {{ // Unicode {unicodedata.unidata_version}, category {major}*, {len(rs)} ranges")
    line = "   "
    for a, b in rs:
        item = f" {{0x{a:X},0x{b:X}}},"
        if len(line) + len(item) > 110:
            print(line); line = "   "
        line += item
    print(line)
    print("};")
