#!/usr/bin/env python3
"""Where a Wasm module's bytes go: code bytes per crate (and the largest functions), read from
the module's code section and its `name` section (function names, demangled as far as the crate
path). Use it on cargo's raw output, which still has names (wasm-opt strips them):

    .venv/bin/python tools/wasm_size_profile.py target/wasm32-wasip1/release/deps/fapi_guard.wasm [--top 25]

Prints two markdown tables: bytes per crate (the first path segment of each function's name)
and the largest functions. Data and other sections are listed too. No dependencies."""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path


def leb(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return n, i


def sections(b: bytes):
    if b[:4] != b"\0asm":
        raise ValueError("not a Wasm module")
    i = 8
    while i < len(b):
        sid = b[i]
        size, j = leb(b, i + 1)
        yield sid, b[j:j + size]
        i = j + size


def function_names(payload: bytes) -> dict[int, str]:
    name_len, i = leb(payload, 0)
    if payload[i:i + name_len] != b"name":
        return {}
    i += name_len
    out = {}
    while i < len(payload):
        kind = payload[i]
        size, j = leb(payload, i + 1)
        if kind == 1:  # function names
            count, k = leb(payload, j)
            for _ in range(count):
                idx, k = leb(payload, k)
                ln, k = leb(payload, k)
                out[idx] = payload[k:k + ln].decode("utf-8", "replace")
                k += ln
        i = j + size
    return out


def path_of(name: str) -> list[str]:
    """The item path of a (legacy-mangled) function name: `_ZN15fapi_guard_core4fhir6decide..`
    → [`fapi_guard_core`, `fhir`, `decide`, ...]; for `<A as B>::f` the path of A."""
    parts = []
    m = re.match(r"_ZN", name)
    i = 3 if m else 0
    while m and i < len(name):
        d = re.match(r"(\d+)", name[i:])
        if not d:
            break
        n = int(d.group(1))
        i += len(d.group(1))
        parts.append(name[i:i + n])
        i += n
    if parts and parts[0].startswith("_$LT$"):
        rest = parts[0][len("_$LT$"):]
        for prefix in ("$RF$", "mut$u20$", "dyn$u20$", "impl$u20$"):
            rest = rest.removeprefix(prefix)
        if re.match(r"[A-Z]\$", rest) and "$u20$as$u20$" in rest:
            # `<T as Trait>`: a generic type; the trait's crate holds the code.
            rest = rest.split("$u20$as$u20$", 1)[1]
        return re.split(r"\$", rest, maxsplit=1)[0].split("..")
    if name.startswith("_R"):
        # v0 mangling (the standard library's prebuilt code): the first crate root `C..<n><name>`.
        m = re.search(r"C(?:s[0-9A-Za-z]*_)?(\d+)", name)
        if m:
            n = int(m.group(1))
            return [name[m.end():m.end() + n]]
    return parts


def crate_of(name: str) -> str:
    """`_ZN4core3fmt5write17h…E` or `core::fmt::write` or `<serde_json::… as …>` → `core`."""
    path = path_of(name)
    if path and path[0]:
        return path[0]
    m = re.match(r"_ZN(\d+)", name)
    if m:
        n = int(m.group(1))
        name = name[len(m.group(0)):len(m.group(0)) + n]
        if not name.startswith("_$LT$"):
            return name
    if name.startswith("_$LT$"):  # `<A as B>::f`, legacy-mangled: the crate of A
        rest = name[len("_$LT$"):]
        for prefix in ("$RF$", "mut$u20$", "dyn$u20$", "impl$u20$", "$u5b$", "$LP$"):
            rest = rest.removeprefix(prefix)
        return re.split(r"\.\.|\$", rest, maxsplit=1)[0] or "(unnamed)"
    name = name.lstrip("<&*")
    for prefix in ("impl ", "dyn ", "mut "):
        name = name.removeprefix(prefix)
    return re.split(r"::|<|\s", name, maxsplit=1)[0] or "(unnamed)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--crate", default="fapi_guard_core", help="also break this crate down by module")
    a = ap.parse_args(argv)
    b = Path(a.module).read_bytes()
    imported = 0
    bodies: list[int] = []
    names: dict[int, str] = {}
    other = Counter()
    for sid, payload in sections(b):
        if sid == 2:  # imports: functions among them shift the indexes
            count, i = leb(payload, 0)
            for _ in range(count):
                for _ in range(2):
                    ln, i = leb(payload, i)
                    i += ln
                kind = payload[i]
                i += 1
                if kind == 0:
                    imported += 1
                    _, i = leb(payload, i)
                elif kind == 1:
                    i += 1
                    flags, i = leb(payload, i)
                    _, i = leb(payload, i)
                    if flags & 1:
                        _, i = leb(payload, i)
                elif kind == 2:
                    flags, i = leb(payload, i)
                    _, i = leb(payload, i)
                    if flags & 1:
                        _, i = leb(payload, i)
                else:
                    i += 2
        elif sid == 10:
            count, i = leb(payload, 0)
            for _ in range(count):
                size, j = leb(payload, i)
                bodies.append(size + (j - i))
                i = j + size
        elif sid == 0:
            ln, i = leb(payload, 0)
            label = payload[i:i + ln].decode("utf-8", "replace")
            if label == "name":
                names = function_names(payload)
            other[f"custom `{label}`"] += len(payload)
        else:
            other[{1: "types", 3: "functions", 4: "tables", 5: "memory", 6: "globals", 7: "exports",
                   9: "elements", 11: "data", 12: "data count"}.get(sid, f"section {sid}")] += len(payload)
    per_crate = Counter()
    per_module = Counter()
    funcs = []
    for n, size in enumerate(bodies):
        name = names.get(imported + n, f"func[{imported + n}]")
        per_crate[crate_of(name)] += size
        path = path_of(name)
        if path[:1] == [a.crate]:
            per_module["::".join(path[:2])] += size
        funcs.append((size, name))
    total = len(b)
    print(f"{a.module}: {total:,} bytes; code {sum(bodies):,} in {len(bodies):,} functions\n")
    print("| crate | code bytes | share of the file |\n|---|---:|---:|")
    for crate, size in per_crate.most_common(a.top):
        print(f"| `{crate}` | {size:,} | {100 * size / total:.1f} % |")
    print(f"\n| module of `{a.crate}` | code bytes |\n|---|---:|")
    for module, size in per_module.most_common(a.top):
        print(f"| `{module}` | {size:,} |")
    print("\n| other section | bytes |\n|---|---:|")
    for label, size in other.most_common():
        print(f"| {label} | {size:,} |")
    print(f"\n| largest function | bytes |\n|---|---:|")
    for size, name in sorted(funcs, reverse=True)[:a.top]:
        print(f"| `{name[:110]}` | {size:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
