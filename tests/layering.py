#!/usr/bin/python3
"""Checks the include layering of the tree (make layering, part of make check).

Each directory is a layer; a file may include headers of its own layer and of the layers
listed for it below, nothing else. The table is a DAG, so there are no circles between
layers. Exit 1, naming every offending include, when the tree breaks it."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE_DIRS = ["common", "proto", "brokerd", "client"]  # the Makefile's -I, in order

# layer -> the layers it may include (besides itself)
ALLOWED = {
    "common": [],
    "common/grantlog": ["common"],
    "proto": ["common"],
    "brokerd/runtime": ["common"],
    "brokerd/identity": ["common", "common/grantlog", "brokerd/runtime"],
    "brokerd/keys": ["common", "common/grantlog", "brokerd/runtime"],
    "brokerd/policy": ["common", "proto", "brokerd/identity", "brokerd/keys"],
    "brokerd/federation": ["common", "brokerd/runtime", "brokerd/keys", "brokerd/policy"],
    "brokerd/issuance": ["common", "common/grantlog", "brokerd/runtime", "brokerd/identity",
                         "brokerd/keys", "brokerd/policy", "brokerd/federation"],
    "brokerd/transport": ["common", "proto", "brokerd/runtime", "brokerd/identity"],
    "brokerd/daemon": ["common", "common/grantlog", "proto", "brokerd/runtime",
                       "brokerd/identity", "brokerd/keys", "brokerd/policy",
                       "brokerd/federation", "brokerd/issuance", "brokerd/transport"],
    "brokerd": ["common", "proto", "brokerd/daemon", "brokerd/identity", "brokerd/keys",
                "brokerd/policy", "brokerd/transport"],  # main.c: wiring only
    "client": ["common", "common/grantlog", "proto"],
}


def layer_of(path):
    d = os.path.dirname(path)
    if d not in ALLOWED:
        return None
    return d


def resolve(src, name):
    """Where a quoted #include lands: the including file's directory, then the -I list."""
    for d in [os.path.dirname(src)] + INCLUDE_DIRS:
        p = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(os.path.join(ROOT, p)):
            return p
    return None


def acyclic(graph):
    state = {}

    def visit(n, stack):
        if state.get(n) == 1:
            return stack[stack.index(n):] + [n]
        if state.get(n) == 2:
            return None
        state[n] = 1
        for m in graph.get(n, []):
            c = visit(m, stack + [n])
            if c:
                return c
        state[n] = 2
        return None

    for n in graph:
        c = visit(n, [])
        if c:
            return c
    return None


def main():
    problems = []
    cycle = acyclic(ALLOWED)
    if cycle:
        problems.append("the layer table itself has a circle: " + " -> ".join(cycle))
    sources = []
    for top in ("common", "proto", "brokerd", "client"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    sources.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    used = {}
    for src in sorted(sources):
        layer = layer_of(src)
        if layer is None:
            problems.append(f"{src}: lies in no layer (add its directory to tests/layering.py)")
            continue
        with open(os.path.join(ROOT, src), encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                if not m:
                    continue
                target = resolve(src, m.group(1))
                if target is None:
                    problems.append(f"{src}:{lineno}: \"{m.group(1)}\" is not in the tree")
                    continue
                tl = layer_of(target)
                if tl != layer:
                    used.setdefault(layer, set()).add(tl)
                if tl != layer and tl not in ALLOWED[layer]:
                    problems.append(f"{src}:{lineno}: {layer} may not include {target} "
                                    f"(layer {tl})")
    cycle = acyclic({k: sorted(v) for k, v in used.items()})
    if cycle:
        problems.append("layers include each other in a circle: " + " -> ".join(cycle))
    for p in problems:
        print("layering: " + p, file=sys.stderr)
    if not problems:
        print(f"layering: {len(sources)} files in {len(ALLOWED)} layers, no include breaks "
              "the table")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
