#!/usr/bin/env python3
"""Finds import cycles between the files of every crate in the workspace.

Why: a newcomer should be able to follow a request downward through files
that never import back (docs/architecture.md, "what each layer may import").
A cycle means two files cannot be read, tested or moved apart. Rust itself
allows cycles between modules, so nothing else catches them.

    hack/check-cycles.py            every crate the workspace's cargo metadata lists
    hack/check-cycles.py --graph    also print every edge (file -> file, first line)

The graph: one node per file (a file is a module; inline modules such as
`mod tests { .. }` belong to their file). An edge A -> B for each path in A
that starts with `crate::`, `super::` or `self::` (in `use` trees and in
expressions alike) and names an item of B's module or below it, resolved to the
longest module prefix that is a file. A module's use of its own submodules is
not an edge: the parent declares its children, so parent -> child is downward
by construction, while child -> parent (`super::Manager`) is an edge like any
other. Comments and string literals are skipped.

Prints every elementary cycle (Johnson's algorithm) with the line of each
edge, and exits 1 if any cycle is not in ALLOWED below. An ALLOWED entry that
is no longer a cycle also fails, so the list only ever shrinks.
Only the Python standard library is used.
"""

import json
import os
import re
import subprocess
import sys

# Cycles other work in flight is removing (issue 19): each is listed exactly
# as this script prints it, so a new cycle anywhere fails, and so does an
# entry that is gone (delete it then).
ALLOWED = [
    "runtime/src/sandbox/recover.rs -> runtime/src/sandbox/shim_watch.rs -> runtime/src/sandbox/recover.rs",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blank(text):
    """The source with comments and the insides of string and char literals
    replaced by spaces (newlines kept, so offsets and line numbers hold)."""
    out = list(text)
    i, n = 0, len(text)

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif re.match(r'b?r#*"', text[i : i + 20]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            wipe(i + m.end(), j - len(end))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                wipe(i + 1, i + m.end() - 1)
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


TOKEN = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*|::|[{}();,\[\]#=*<>]|\S")


def tokens(clean):
    """(token, offset) pairs of blanked source."""
    return [(m.group(), m.start()) for m in TOKEN.finditer(clean)]


def expand_use(toks, i, prefix, out):
    """Parses one use tree at toks[i]; appends (segments, offset) to out;
    returns the index after the tree."""
    segs = list(prefix)
    first = toks[i][1] if i < len(toks) else 0
    while i < len(toks):
        t = toks[i][0]
        if t == "{":
            i += 1
            while toks[i][0] != "}":
                i = expand_use(toks, i, segs, out)
                if toks[i][0] == ",":
                    i += 1
            i += 1
            return i
        if t == "*":
            out.append((segs, first))
            return i + 1
        if t == "::":
            i += 1
            continue
        if t in (",", "}", ";"):
            out.append((segs, first))
            return i
        if t == "as":
            i += 2
            continue
        if re.match(r"\$?[A-Za-z_]", t):
            segs = segs + [t]
            i += 1
            continue
        i += 1
    out.append((segs, first))
    return i


def scan(path, modpath):
    """Reads one file: its declared file modules (name, explicit path or None,
    the inline-module path they sit in), its inline modules, and every
    crate/super/self path with the module path it was written in."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    explicit = {}
    for m in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', raw):
        explicit[m.group(2)] = m.group(1)
    clean = blank(raw)
    toks = tokens(clean)
    decls, inline, paths = [], [], []
    stack = []  # per open brace: the inline module name it opened, or None
    pending = None
    i = 0
    while i < len(toks):
        t = toks[i][0]
        cur = modpath + tuple(s for s in stack if s)
        if t == "mod" and i + 2 < len(toks) and re.match(r"[A-Za-z_]", toks[i + 1][0]):
            name, nxt = toks[i + 1][0], toks[i + 2][0]
            if nxt == ";":
                decls.append((name, explicit.get(name), cur))
                i += 3
                continue
            if nxt == "{":
                inline.append(cur + (name,))
                pending = name
                i += 2
                continue
        if t == "{":
            stack.append(pending)
            pending = None
        elif t == "}":
            if stack:
                stack.pop()
        elif t == "in" and i >= 2 and toks[i - 1][0] == "(" and toks[i - 2][0] == "pub":
            # pub(in crate::x): a visibility, not a use.
            while toks[i][0] != ")":
                i += 1
            continue
        elif t == "use":
            out = []
            i = expand_use(toks, i + 1, [], out)
            for segs, off in out:
                if segs and segs[0] in ("crate", "$crate", "super", "self"):
                    paths.append((segs, cur, off))
            continue
        elif t in ("crate", "$crate", "super", "self") and i + 1 < len(toks) and toks[i + 1][0] == "::":
            if not (i > 0 and toks[i - 1][0] == "::"):
                segs, j = [t], i + 1
                while j + 1 < len(toks) and toks[j][0] == "::" and re.match(r"[A-Za-z_]", toks[j + 1][0]):
                    segs.append(toks[j + 1][0])
                    j += 2
                paths.append((segs, cur, toks[i][1]))
                i = j
                continue
        i += 1
    lines = [0]
    for k, ch in enumerate(raw):
        if ch == "\n":
            lines.append(k + 1)

    def line_of(off):
        lo, hi = 0, len(lines)
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if lines[mid] <= off:
                lo = mid
            else:
                hi = mid
        return lo + 1

    return decls, inline, [(s, c, line_of(o)) for s, c, o in paths]


def crate_graph(root_file):
    """Edges {(from_file, to_file): first line} of the crate rooted at root_file."""
    files = {}  # module path -> file
    owner = {}  # module path (file or inline) -> file
    scanned = {}
    todo = [((), root_file)]
    while todo:
        mp, f = todo.pop()
        if f in scanned or not os.path.exists(f):
            continue
        files[mp] = f
        owner[mp] = f
        decls, inline, paths = scan(f, mp)
        scanned[f] = (mp, paths)
        is_dir_owner = mp == () or os.path.basename(f) == "mod.rs"
        base = os.path.dirname(f) if is_dir_owner else os.path.splitext(f)[0]
        for im in inline:
            owner[im] = f
        for name, explicit, at in decls:
            sub = os.path.join(base, *at[len(mp) :])
            if explicit:
                child = os.path.normpath(os.path.join(os.path.dirname(f) if not at[len(mp) :] else sub, explicit))
            else:
                child = os.path.join(sub, name + ".rs")
                if not os.path.exists(child):
                    child = os.path.join(sub, name, "mod.rs")
            todo.append((at + (name,), child))
    file_mod = {f: m for m, f in files.items()}
    edges = {}
    for f, (mp, paths) in scanned.items():
        for segs, cur, line in paths:
            base = list(cur)
            rest = list(segs)
            if rest[0] in ("crate", "$crate"):
                base, rest = [], rest[1:]
            else:
                while rest and rest[0] in ("super", "self"):
                    if rest[0] == "super":
                        base = base[:-1]
                    rest = rest[1:]
            full = tuple(base + rest)
            target = None
            for k in range(len(full), -1, -1):
                if full[:k] in owner:
                    target = owner[full[:k]]
                    break
            if target is None or target == f:
                continue
            # Parent -> own descendant: downward by construction.
            if file_mod[target][: len(mp)] == mp:
                continue
            edges.setdefault((f, target), line)
    return edges


def cycles(nodes, succ):
    """Every elementary cycle (Johnson 1975), each starting at its smallest node."""
    result = []
    order = sorted(nodes)
    for idx, s in enumerate(order):
        allowed = set(order[idx:])
        blocked, bmap, stack = set(), {}, [s]

        def unblock(u):
            work = [u]
            while work:
                w = work.pop()
                if w in blocked:
                    blocked.discard(w)
                    work.extend(bmap.pop(w, ()))

        def circuit(v):
            found = False
            blocked.add(v)
            for w in sorted(succ.get(v, ())):
                if w not in allowed:
                    continue
                if w == s:
                    result.append(list(stack))
                    found = True
                elif w not in blocked:
                    stack.append(w)
                    if circuit(w):
                        found = True
                    stack.pop()
            if found:
                unblock(v)
            else:
                for w in succ.get(v, ()):
                    if w in allowed:
                        bmap.setdefault(w, set()).add(v)
            return found

        circuit(s)
    return result


def fmt(cycle):
    return " -> ".join(cycle + [cycle[0]])


def canonical(text):
    nodes = [p.strip() for p in text.split("->")]
    if len(nodes) > 1 and nodes[0] == nodes[-1]:
        nodes = nodes[:-1]
    k = nodes.index(min(nodes))
    return fmt(nodes[k:] + nodes[:k])


def self_test():
    """The parser against a small crate with one known cycle."""
    import tempfile

    src = {
        "lib.rs": "mod a;\nmod b;\n#[path = \"other.rs\"]\nmod c;\n",
        # a -> b through a use tree; the comment, string and char mention nothing.
        "a.rs": "use crate::{x::Y, b::{self, f}};\n// crate::c::g\nconst S: &str = \"crate::c\";\nconst C: char = '{';\n"
        "pub(in crate::c) fn h() {}\nmod tests { use super::super::c::Z; }\n",
        # b -> a through an expression path; b -> b/inner is downward.
        "b.rs": "mod inner;\nfn f<'a>() { crate::a::h(); self::inner::k(); }\n",
        "b/inner.rs": "pub fn k() { super::super::c::g(); }\n",
        "other.rs": "pub fn g() {}\n",
    }
    with tempfile.TemporaryDirectory() as d:
        for name, text in src.items():
            os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        edges = {(os.path.relpath(a, d), os.path.relpath(b, d)) for a, b in crate_graph(os.path.join(d, "lib.rs"))}
    # crate::x::Y names an item of the crate root.
    want = {("a.rs", "b.rs"), ("a.rs", "lib.rs"), ("a.rs", "other.rs"), ("b.rs", "a.rs"), ("b/inner.rs", "other.rs")}
    assert edges == want, f"edges {sorted(edges)} != {sorted(want)}"
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    found = [fmt(c) for c in cycles({n for e in edges for n in e}, succ)]
    assert found == ["a.rs -> b.rs -> a.rs"], found
    assert canonical("b.rs -> a.rs -> b.rs") == "a.rs -> b.rs -> a.rs"
    print("check-cycles: self-test passed")


def main():
    sys.setrecursionlimit(10000)
    self_test()
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    roots = sorted({t["src_path"] for p in meta["packages"] for t in p["targets"]})
    edges = {}
    for r in roots:
        edges.update(crate_graph(r))
    rel = lambda p: os.path.relpath(p, ROOT)
    succ = {}
    for a, b in edges:
        succ.setdefault(rel(a), set()).add(rel(b))
    nodes = set(succ) | {b for s in succ.values() for b in s}
    if "--graph" in sys.argv[1:]:
        for (a, b), line in sorted(edges.items()):
            print(f"{rel(a)}:{line} -> {rel(b)}")
    allowed = {canonical(c) for c in ALLOWED}
    found = [fmt(c) for c in cycles(nodes, succ)]
    bad = 0
    for c in found:
        tag = "allowed" if c in allowed else "CYCLE"
        bad += c not in allowed
        print(f"{tag}: {c}")
        hops = c.split(" -> ")
        for a, b in zip(hops, hops[1:]):
            line = edges[(os.path.join(ROOT, a), os.path.join(ROOT, b))]
            print(f"    {a}:{line} uses {b}")
    stale = sorted(allowed - set(found))
    for c in stale:
        print(f"STALE allow-list entry (no longer a cycle; delete it from ALLOWED): {c}")
    print(f"check-cycles: {len(roots)} crate roots, {len(nodes)} files with edges, {len(edges)} edges, "
          f"{len(found)} cycles ({len(found) - bad} allowed), {len(stale)} stale allow-list entries")
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
