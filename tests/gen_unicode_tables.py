#!/usr/bin/env python3
"""Writes the Unicode ranges that run.c's byte-level pre-tokenizers need into run.c's table section:
letters (L*) and numbers (N*) for the \\p{L} and \\p{N} of the GPT-2 / Llama 3 / Qwen2 / GPT-4o split
patterns, and for GPT-4o's case classes [\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}] and [\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]
the marks (M*), the cased letters (Lu Ll Lt) and the upper- and titlecase ones (Lu Lt); Ll is a cased
letter that is not Lu or Lt. The tables come from the Unicode Character Database of Debian's
unicode-data package (the newest Unicode Debian ships: 15.0.0 in bookworm; Hugging Face's tokenizers
follow the newest Unicode, so the tables should too):
    apt-get install unicode-data && /usr/bin/python3 tests/gen_unicode_tables.py [UCD_DIR]
"""
import os, re, sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
RUN_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "run.c")
# (name in run.c, general categories, how the table's comment names them)
TABLES = [
    ("run_unicode_letters", {"Lu", "Ll", "Lt", "Lm", "Lo"}, "category L*"),
    ("run_unicode_numbers", {"Nd", "Nl", "No"}, "category N*"),
    ("run_unicode_marks", {"Mn", "Mc", "Me"}, "category M*"),
    ("run_unicode_cased", {"Lu", "Ll", "Lt"}, "categories Lu Ll Lt"),
    ("run_unicode_upper", {"Lu", "Lt"}, "categories Lu Lt"),
]


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


def ranges(cats, wanted):
    """The code points of the wanted categories as [first, last] ranges, adjacent ones merged."""
    out = []
    for cp, cat in cats:
        if cat not in wanted:
            continue
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def table(name, what, rs, ver):
    lines = [f"static const uint32_t {name}[][2] = {{ // Unicode {ver}, {what}, {len(rs)} ranges"]
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
    # the section: from its first table to the end of its last one, before the next section's rule
    section = re.compile(r"(// Unicode tables for the pre-tokenizers \(made by tests/gen_unicode_tables.py\)\n\n)"
                         r"static const uint32_t run_unicode_.*?\n\};\n(?=\n// -{10})", re.S)
    assert section.search(src), "run.c's Unicode table section not found"
    tables = "\n".join(table(name, what, ranges(cats, wanted), ver) for name, wanted, what in TABLES)
    src = section.sub(lambda m: m.group(1) + tables + "\n", src)
    open(RUN_C, "w", encoding="utf-8").write(src)
    print(f"run.c: Unicode {ver} tables written ({', '.join(name for name, _, _ in TABLES)})")


main()
