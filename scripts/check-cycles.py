#!/usr/bin/env python3
"""Fails when modules under src/ import each other in a circle.

Every `crate::`, `super::` and `self::` path in a module's source (in `use` items and inline)
is an edge from that module's file to the deepest module file the path names. One kind of
circle is allowed: a folder's `mod.rs` with its own children (a child reaching `super::Thing`
defined in its parent), so edges from a file to the `mod.rs` of a folder containing it are
left out. Every other strongly connected component of two or more files is reported with
one import that closes each of its edges.

`--self-test` checks the checker on small trees written to a temporary folder.
"""

import os
import re
import sys
import tempfile

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blanks comments, string and char literals so paths inside them are not read as imports."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"[A-Za-z0-9_]", text[i - 1 : i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]) or (c == "'" and text.startswith("'\\", i)):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", text[i:])
            i += len(m.group(0)) if m else 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """Expands a `use` tree such as `crate::{a::{b, c}, d}` into its full paths."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0]]
    prefix, body = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand_use(prefix + part)]


class Tree:
    def __init__(self, src):
        self.src = src
        self.files = {}
        for root, _, names in os.walk(src):
            for name in names:
                if name.endswith(".rs"):
                    path = os.path.join(root, name)
                    self.files[self.module_of(path)] = os.path.relpath(path, src)

    def module_of(self, path):
        rel = os.path.relpath(path, self.src)[: -len(".rs")].split(os.sep)
        if rel[-1] == "mod" or (len(rel) == 1 and rel[0] in ("lib", "main")):
            rel = rel[:-1]
        return tuple(rel)

    def resolve(self, segments):
        """The deepest module file that `segments` (from the crate root) names, or None."""
        for k in range(len(segments), -1, -1):
            if tuple(segments[:k]) in self.files:
                return tuple(segments[:k])
        return None

    def edges(self):
        found = {}
        for module, rel in self.files.items():
            text = strip_comments_and_strings(open(os.path.join(self.src, rel), encoding="utf-8").read())
            is_dir_module = os.path.basename(rel) in ("mod.rs", "lib.rs", "main.rs")
            # `super` of a file is its folder's module; of a mod.rs, the folder above.
            here = list(module) if is_dir_module else list(module[:-1])
            paths = []
            for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text):
                paths.extend(expand_use(m.group(1)))
            paths.extend(m.group(0) for m in re.finditer(r"(?<![:\w])(?:crate|super|self)(?:::(?:super|%s))+" % IDENT, text))
            for path in paths:
                segs = [s for s in path.split("::") if s]
                if not segs:
                    continue
                if segs[0] == "crate":
                    base, segs = [], segs[1:]
                elif segs[0] == "self":
                    base, segs = list(module), segs[1:]
                else:
                    # The first `super` is `here`; each further one climbs a folder.
                    base, segs = list(here), segs[1:]
                    while segs and segs[0] == "super":
                        base, segs = base[:-1], segs[1:]
                target = self.resolve(base + [s for s in segs if re.fullmatch(IDENT, s)])
                if target is None or target == module:
                    continue
                # A child reaching into an enclosing folder's mod.rs is the allowed circle.
                if len(target) < len(module) and module[: len(target)] == target:
                    continue
                found.setdefault((module, target), path)
        return found


def strongly_connected(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    adj = {n: [] for n in nodes}
    for a, b in edges:
        adj[a].append(b)
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def check(src):
    tree = Tree(src)
    edges = tree.edges()
    cycles = strongly_connected(list(tree.files), edges)
    report = []
    for comp in cycles:
        members = set(comp)
        report.append("import cycle among %d files:" % len(comp))
        for (a, b), path in sorted(edges.items()):
            if a in members and b in members:
                report.append("  %s -> %s  (%s)" % (tree.files[a], tree.files[b], path))
    return report


def self_test():
    cases = {
        "a parent with its children is allowed": (
            {"lib.rs": "mod a;", "a/mod.rs": "use self::x::X; mod x;", "a/x.rs": "use super::Y;"},
            0,
        ),
        "two top-level modules importing each other is a cycle": (
            {"lib.rs": "", "a.rs": "use crate::b::B;", "b.rs": "fn f() { crate::a::g(); }"},
            1,
        ),
        "a cycle through a parent and an outside module is found": (
            {"lib.rs": "", "a/mod.rs": "use self::x::X;", "a/x.rs": "use crate::b;", "b.rs": "use crate::a::Z;"},
            1,
        ),
        "siblings importing each other is a cycle": (
            {"lib.rs": "", "a/mod.rs": "", "a/x.rs": "use super::y::Y;", "a/y.rs": "use super::x::X;"},
            1,
        ),
        "paths in comments and strings are not imports": (
            {"lib.rs": "", "a.rs": "// crate::b\nconst S: &str = \"crate::b::B\";", "b.rs": "use crate::a::A;"},
            0,
        ),
        "grouped use items are expanded": (
            {"lib.rs": "", "a.rs": "use crate::{c, b::{B, D}};", "b.rs": "use crate::a;", "c.rs": ""},
            1,
        ),
    }
    failed = 0
    for name, (files, want) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(text)
            got = sum(1 for line in check(d) if line.startswith("import cycle"))
            if got != want:
                failed += 1
                print("self-test failed: %s: %d cycles, want %d" % (name, got, want))
    print("check-cycles self-test: %d of %d cases pass" % (len(cases) - failed, len(cases)))
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    report = check(src)
    if report:
        print("\n".join(report))
        return 1
    print("no import cycles in %s" % os.path.normpath(src))
    return 0


if __name__ == "__main__":
    sys.exit(main())
