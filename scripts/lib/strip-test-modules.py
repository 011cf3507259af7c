"""Drops inline `#[cfg(test)] mod name { ... }` blocks from every .rs file below the current
directory, so scripts/dup-count.sh counts only code that ships (unit tests kept beside their
code are tests, like the `*_tests.rs` files the script already leaves out)."""
import os
import re

MOD = re.compile(r"\s*(pub(\([\w:]+\))? )?mod \w+\s*\{\s*$")

for root, _, files in os.walk("."):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(root, name)
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        out, i, changed = [], 0, False
        while i < len(lines):
            if lines[i].strip().startswith("#[cfg(test)]"):
                j = i + 1
                while j < len(lines) and lines[j].strip().startswith("#["):
                    j += 1
                if j < len(lines) and MOD.match(lines[j]):
                    depth, k = 0, j
                    while k < len(lines):
                        depth += lines[k].count("{") - lines[k].count("}")
                        if depth <= 0:
                            break
                        k += 1
                    i, changed = k + 1, True
                    continue
            out.append(lines[i])
            i += 1
        if changed:
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(out))
