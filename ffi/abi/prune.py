#!/usr/bin/env python3
"""Keeps from `abidw`'s description of libforkprof only what its callers see.

libabigail reads Rust's debug info as a language it does not know, so `abidw` writes out every
type of every crate linked in (about 1.2 MB), most of them unreachable from the C ABI. This
keeps the exported `forkprof_*` functions, the types they reach, and the scopes (abi-instr,
namespaces) that hold them; `abidiff` reads the result like any abidw output.

Usage: prune.py IN.abi OUT.abi
"""

import re
import sys
import xml.etree.ElementTree as ET

TYPE_REF = re.compile(r"type-id-\d+")


def main(src, dst):
    tree = ET.parse(src)
    root = tree.getroot()
    parent = {child: node for node in root.iter() for child in node}
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}

    def refs(el):
        """Type ids an element and everything inside it refer to (not the ids it defines)."""
        found = set()
        for node in el.iter():
            for name, value in node.attrib.items():
                if name != "id" and TYPE_REF.fullmatch(value):
                    found.add(value)
        return found

    keep = set()
    todo = []
    for fn in root.iter("function-decl"):
        sym = fn.get("elf-symbol-id")
        if sym and sym.startswith("forkprof_") and parent[fn].tag != "class-decl":
            keep.add(fn)
            todo.extend(refs(fn))
    seen = set()
    while todo:
        tid = todo.pop()
        if tid in seen or tid not in by_id:
            continue
        seen.add(tid)
        el = by_id[tid]
        keep.add(el)
        todo.extend(refs(el))
    # Everything kept needs its enclosing scopes; a kept element keeps all it contains.
    needed = set(keep)
    for el in keep:
        p = parent.get(el)
        while p is not None and p is not root:
            needed.add(p)
            p = parent.get(p)

    def prune(node):
        for child in list(node):
            if child in keep:
                continue
            if child in needed:
                prune(child)
            elif child.tag.startswith("abi-instr") or child.tag in (
                "namespace-decl",
                "function-decl",
                "class-decl",
                "union-decl",
                "enum-decl",
                "typedef-decl",
                "type-decl",
                "pointer-type-def",
                "reference-type-def",
                "qualified-type-def",
                "array-type-def",
                "function-type",
                "var-decl",
                "subrange",
            ):
                node.remove(child)

    for instr in list(root):
        if instr.tag == "abi-instr":
            if instr in needed:
                prune(instr)
            else:
                root.remove(instr)
    ET.indent(tree, space="  ")
    tree.write(dst, encoding="unicode")
    with open(dst, "a") as f:
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
