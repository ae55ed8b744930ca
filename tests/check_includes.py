#!/usr/bin/env python3
"""Checks the include arrows between the library's folders (DESIGN.md: core is the base, ops and
optim build on it, nn and data on those, cuda implements the kernel tables of core, ops and optim)
and that no public header includes an internal one (so the installed headers compile alone).

Usage: check_includes.py SOURCE_DIR [INTERNAL_HEADER ...]
Prints every offending file:line and exits 1 when there is one.
"""
import pathlib
import re
import sys

# folder -> the folders its files may include from (itself included).
ALLOWED = {
    "core": {"core"},
    "ops": {"core", "ops"},
    "optim": {"core", "ops", "optim"},
    "nn": {"core", "ops", "optim", "nn"},
    "data": {"core", "ops", "data"},
    "cuda": {"core", "ops", "optim", "cuda"},
}
FOLDERS = set(ALLOWED)
SUFFIXES = {".h", ".cpp", ".cu", ".cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]')


def target_folder(path: str, here: str):
    """The library folder an include names, or None for a system or generated header."""
    if path.startswith("lsgrad/"):
        parts = path.split("/")
        return parts[1] if len(parts) > 2 and parts[1] in FOLDERS else None
    if path.startswith("../"):
        parts = path.split("/")
        return parts[1] if len(parts) > 2 and parts[1] in FOLDERS else None
    # A bare "file.h" include resolves beside the including file.
    return here if "/" not in path and path.endswith((".h", ".cuh")) else None


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    root = pathlib.Path(sys.argv[1])
    internal = set(sys.argv[2:])
    problems = []
    for folder, allowed in sorted(ALLOWED.items()):
        for f in sorted((root / folder).glob("*")):
            if f.suffix not in SUFFIXES:
                continue
            rel = f"{folder}/{f.name}"
            public_header = f.suffix == ".h" and folder != "cuda" and rel not in internal
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                inc = m.group(1)
                if inc == "lsgrad/lsgrad.h":
                    problems.append(f"{rel}:{n}: includes the umbrella header; include what it uses")
                    continue
                dep = target_folder(inc, folder)
                if dep is not None and dep not in allowed:
                    problems.append(f"{rel}:{n}: includes {inc}: {folder}/ may include only from "
                                    f"{', '.join(sorted(allowed))}/")
                named = inc[len("lsgrad/"):] if inc.startswith("lsgrad/") else None
                if public_header and named in internal:
                    problems.append(f"{rel}:{n}: public header includes internal {named}, "
                                    "which is not installed")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} include(s) break the dependency rules")
        return 1
    print("include arrows hold for " + ", ".join(sorted(ALLOWED)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
