#!/usr/bin/env python3
"""Fails on a reference to a file the repository does not hold.

Reads every tracked source and Markdown file and picks out the file names it mentions in
comments and prose (code comments, Markdown outside code blocks; a string in code is data, not
a reference): `name.rs`, `dir/name.md`, paths ending in a known extension. A name with a directory must exist relative to the repository root, the mentioning
file's folder or its crate; a bare name must exist somewhere in the mentioning file's crate (its
top-level folder) or at the root. Names of files outside the repository (system headers, other
projects' paths) are listed in ALLOWED below with the reason.
"""
import os
import re
import subprocess
import sys

ROOT = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                      check=True).stdout.strip()
EXT = r"(?:rs|md|sh|toml|py|php|c|h|ini|conf|txt|json|yml|yaml)"
TOKEN = re.compile(r"(?<![\w/.$-])((?:[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\." + EXT + r")(?![\w/])")
# Outside the repository on purpose, each with why.
ALLOWED = {
    "Cargo.toml", "Cargo.lock", "build.rs", "lib.rs", "main.rs", "mod.rs",  # generic Rust names
    "php.ini", "php-fpm.conf", "www.conf", "resolv.conf", "nsswitch.conf",  # system files
    "event.json", "config.json", "package.json",  # formats and other tools' names
    "pthread.h", "stdio.h", "stdlib.h", "string.h", "unistd.h", "signal.h", "time.h",
    "errno.h", "stdint.h", "stddef.h", "stdbool.h", "dlfcn.h", "netdb.h", "stdatomic.h",
    "sys/wait.h", "sys/types.h", "sys/mman.h", "sys/time.h", "sys/syscall.h", "sys/stat.h",
    "fcntl.h", "inttypes.h", "sched.h", "limits.h", "assert.h", "poll.h", "spawn.h",
    "Python.h", "php.h", "zend.h", "main/php.h", "mach/vm_inherit.h",
}
SKIP_DIRS = ("target/", "proptest-regressions/")


def tracked():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return [f for f in out if f and not f.startswith(SKIP_DIRS)
            and re.search(r"\.(rs|md|sh|c|h|py|php|toml)$|^ci/[^.]*$", f)]


def exists_for(mentioned, in_file, names_by_top):
    here = os.path.dirname(in_file)
    top = in_file.split("/", 1)[0] if "/" in in_file else ""
    if "/" in mentioned:
        for base in (ROOT, os.path.join(ROOT, here), os.path.join(ROOT, top)):
            if os.path.exists(os.path.join(base, mentioned)):
                return True
        # "crate/src/x.rs" written from inside another folder of the same tree
        return any(f.endswith("/" + mentioned) or f == mentioned for f in names_by_top["*"])
    name = mentioned
    if not top or not os.path.exists(os.path.join(ROOT, top, "Cargo.toml")):
        # prose outside a crate (README, docs/, ci/) names files of any crate
        return any(os.path.basename(f) == name for f in names_by_top["*"])
    return name in names_by_top.get(top, set()) or name in names_by_top.get("", set())


def prose_lines(path, text):
    """Each line's comment or prose part, None where the line has none."""
    out = []
    if path.endswith(".md"):
        fenced = False
        for line in text.split("\n"):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                out.append(None)
            else:
                out.append(None if fenced else line)
        return out
    hash_comments = path.endswith((".sh", ".py", ".toml")) or path.startswith("ci/")
    in_block = False
    for line in text.split("\n"):
        s = line.strip()
        if hash_comments:
            i = line.find("#")
            out.append(line[i:] if i >= 0 and (s.startswith("#") or " #" in line) else None)
            continue
        if in_block:
            out.append(line)
            if "*/" in line:
                in_block = False
            continue
        if "/*" in line and "*/" not in line.split("/*", 1)[1]:
            in_block = True
            out.append(line.split("/*", 1)[1])
            continue
        i = line.find("//")
        out.append(line[i:] if i >= 0 else None)
    return out


def main():
    files = tracked()
    all_files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    names_by_top = {"*": all_files}
    for f in all_files:
        top = f.split("/", 1)[0] if "/" in f else ""
        names_by_top.setdefault(top, set()).add(os.path.basename(f))
    bad = []
    for f in files:
        if f == "ci/check-paths.py":
            continue
        try:
            text = open(os.path.join(ROOT, f), encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for n, line in enumerate(prose_lines(f, text), 1):
            if line is None:
                continue
            for m in TOKEN.finditer(line):
                ref = m.group(1)
                ref = ref[2:] if ref.startswith("./") else ref
                if ref in ALLOWED or ref.startswith(("http", "www.", "target/")) or "*" in ref:
                    continue
                if not exists_for(ref, f, names_by_top):
                    bad.append(f"{f}:{n}: {ref}")
    if bad:
        print("references to files the repository does not hold:")
        print("\n".join(bad))
        print(f"{len(bad)} dangling reference(s): name a file that exists, or say it in words")
        return 1
    print(f"check-paths: {len(files)} files read, every file they name exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
