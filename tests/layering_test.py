#!/usr/bin/env python3
"""The folders' dependencies point one way (docs/ARCHITECTURE.md, section 2): a folder includes
only folders below it in LAYERS, lbctl knows only the control protocol and the log format, lbload
nothing of the server's logic, and bpf/ nothing of user space. Fails naming each include that
points the wrong way."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first: each may include the ones before it.
LAYERS = ["common", "sandbox", "net", "logs", "metrics", "control", "steering", "worker", "config", "supervisor"]
ALLOWED = {f"userspace/{layer}": set(LAYERS[:i + 1]) for i, layer in enumerate(LAYERS)}
ALLOWED["tools/lbctl"] = {"common", "control", "logs", "lbctl"}
# lbload links nothing of the server: only header-only helpers (RAII, ring set-up) it shares.
ALLOWED["tools/lbload"] = {"common", "lbload"}
ALLOWED["bpf"] = set()

INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/', re.MULTILINE)


def main():
    wrong = []
    for folder, allowed in sorted(ALLOWED.items()):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith((".h", ".cpp", ".c")):
                    continue
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    for target in INCLUDE.findall(f.read()):
                        if target not in allowed:
                            wrong.append(f"{os.path.relpath(path, ROOT)} includes {target}/")
    if wrong:
        print("includes that point the wrong way:\n  " + "\n  ".join(wrong))
        return 1
    print(f"layering: {len(ALLOWED)} folders, every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
