#!/usr/bin/env python3
"""Draws forkprof's crate graph and the engine's module graph from the code, and fails on an
import cycle or an upward edge.

Crates: the workspace's path dependencies (`cargo metadata`), normal dependencies only.
Modules: for each top-level module of forkprof-core (a file or folder under core/src), the
other top-level modules its non-test code names as `crate::name` (in `use` lines or paths);
`#[cfg(test)]` modules are left out, since tests may reach anywhere.

Usage: ci/graph.py            prints docs/architecture.md's two graphs (Markdown)
       ci/graph.py --check    exits 1 on a cycle, or when docs/architecture.md's graphs are
                              not what the code says (rewrite them with --write)
       ci/graph.py --write    rewrites the graphs in docs/architecture.md
"""
import json
import os
import re
import subprocess
import sys

ROOT = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                      check=True).stdout.strip()
CORE = os.path.join(ROOT, "core", "src")


def crate_graph():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    names = {p["name"] for p in meta["packages"]}
    edges = {}
    for p in meta["packages"]:
        deps = set()
        for d in p["dependencies"]:
            if d["name"] in names and d.get("kind") is None:
                deps.add(d["name"])
        edges[p["name"]] = sorted(deps)
    return edges


def strip_tests(text):
    """The text without `#[cfg(test)]` items (a module or fn and its braces)."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if k < 0 or (0 <= semi < k):
            i = semi + 1  # `#[cfg(test)] mod x;` or `use ...;`
            continue
        depth, m = 0, k
        while m < len(text):
            if text[m] == "{":
                depth += 1
            elif text[m] == "}":
                depth -= 1
                if depth == 0:
                    break
            m += 1
        i = m + 1


def module_graph():
    mods = {}
    for entry in sorted(os.listdir(CORE)):
        path = os.path.join(CORE, entry)
        if entry == "lib.rs":
            continue
        if entry.endswith(".rs"):
            mods[entry[:-3]] = [path]
        elif os.path.isdir(path):
            files = []
            for dp, _, fs in os.walk(path):
                files += [os.path.join(dp, f) for f in fs if f.endswith(".rs")]
            mods[entry] = files
    edges = {}
    for m, files in mods.items():
        deps = set()
        for f in files:
            text = strip_tests(open(f, encoding="utf-8").read())
            text = re.sub(r"//[^\n]*", "", text)
            for n in re.findall(r"\bcrate::(\w+)", text):
                if n in mods and n != m:
                    deps.add(n)
            # `use crate::{a, b::c}` groups
            for grp in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
                for n in re.findall(r"(?:^|,)\s*(\w+)", grp):
                    if n in mods and n != m:
                        deps.add(n)
        edges[m] = sorted(deps)
    return edges


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def levels(edges):
    """Level 0: depends on nothing listed; level k: on levels below k only."""
    lvl = {}
    def depth(v, seen=()):
        if v in lvl:
            return lvl[v]
        if v in seen:
            return 0
        d = 1 + max((depth(w, seen + (v,)) for w in edges.get(v, [])), default=-1)
        lvl[v] = d
        return d
    for v in edges:
        depth(v)
    return lvl


def render(title, edges):
    lvl = levels(edges)
    rows = [f"### {title}", "", "| level | name | depends on |", "|---|---|---|"]
    for v in sorted(edges, key=lambda v: (lvl[v], v)):
        rows.append(f"| {lvl[v]} | `{v}` | {', '.join(f'`{w}`' for w in edges[v]) or '—'} |")
    return "\n".join(rows)


DOC = os.path.join(ROOT, "docs", "architecture.md")
BEGIN, END = "<!-- graph:begin -->\n", "<!-- graph:end -->"


def main():
    crates, mods = crate_graph(), module_graph()
    bad = [("crates", c) for c in cycles(crates)] + [("core modules", c) for c in cycles(mods)]
    text = (render("Crates (normal dependencies inside the workspace)", crates) + "\n\n"
            + render("Engine modules (`forkprof-core`, non-test code)", mods) + "\n")
    if "--check" in sys.argv or "--write" in sys.argv:
        for what, c in bad:
            print(f"import cycle among {what}: {' -> '.join(c)}")
        doc = open(DOC, encoding="utf-8").read()
        a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        if "--write" in sys.argv:
            open(DOC, "w", encoding="utf-8").write(doc[:a] + text + doc[b:])
        elif doc[a:b] != text:
            print("docs/architecture.md's graphs differ from the code: run python3 ci/graph.py --write")
            return 1
        if bad:
            return 1
        print(f"graph: {len(crates)} crates, {len(mods)} engine modules, no cycle, docs current")
        return 0
    print(text, end="")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
