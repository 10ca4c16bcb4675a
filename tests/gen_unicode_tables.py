#!/usr/bin/env python3
"""Writes the Unicode letter (L*) and number (N*) ranges that run.c's byte-level pre-tokenizers need
(the \\p{L} and \\p{N} of the Llama 3 / Qwen2 / GPT-2 split patterns) into run.c, from the Unicode
Character Database of Debian's unicode-data package (the newest Unicode Debian ships: 15.0.0 in
bookworm; Hugging Face's tokenizers follow the newest Unicode, so the tables should too):
    apt-get install unicode-data && /usr/bin/python3 tests/gen_unicode_tables.py [UCD_DIR]
"""
import os, re, sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
RUN_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "run.c")


def version():
    with open(os.path.join(UCD, "DerivedAge.txt"), encoding="utf-8") as f:
        return re.search(r"DerivedAge-([0-9.]+)\.txt", f.readline()).group(1)


def categories():
    """(code point, general category) for every assigned code point; First/Last pairs are ranges."""
    out, first = [], None
    with open(os.path.join(UCD, "UnicodeData.txt"), encoding="utf-8") as f:
        for line in f:
            fields = line.split(";")
            cp, name, cat = int(fields[0], 16), fields[1], fields[2]
            if name.endswith(", First>"):
                first = cp
            elif name.endswith(", Last>"):
                out.extend((c, cat) for c in range(first, cp + 1))
            else:
                out.append((cp, cat))
    return out


def ranges(cats, major):
    out = []
    for cp, cat in cats:
        if cat[0] != major:
            continue
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def table(name, major, rs, ver):
    lines = [f"static const uint32_t {name}[][2] = {{ // Unicode {ver}, category {major}*, {len(rs)} ranges"]
    line = "   "
    for a, b in rs:
        item = f" {{0x{a:X},0x{b:X}}},"
        if len(line) + len(item) > 110:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    lines.append("};")
    return "\n".join(lines)


def main():
    ver, cats = version(), categories()
    src = open(RUN_C, encoding="utf-8").read()
    for name, major in (("run_unicode_letters", "L"), ("run_unicode_numbers", "N")):
        pattern = re.compile(r"static const uint32_t " + name + r"\[\]\[2\] = \{.*?\n\};", re.S)
        assert pattern.search(src), f"{name} not found in run.c"
        src = pattern.sub(lambda m: table(name, major, ranges(cats, major), ver), src)
    open(RUN_C, "w", encoding="utf-8").write(src)
    print(f"run.c: Unicode {ver} tables written")


main()
