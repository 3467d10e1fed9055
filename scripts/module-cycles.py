#!/usr/bin/env python3
"""Finds dependency cycles between the modules of a Rust crate.

    python3 scripts/module-cycles.py [--code-only] [--no-tests] runtime/src [compiler/src ...]

For each directory given (a crate's `src`), and for every directory module
inside it, the modules are the entries of that directory (a file `x.rs` or a
folder `x/`; `lib.rs`, `main.rs`, `mod.rs` and `bin/` are the parent, not
siblings). A -> B when code in a file under A names a path that resolves to
B: `crate::B`, `super::B`, `self::B`, `crate::{B, ..}`, and deeper
(`crate::d::B` from inside `d/A`, `super::super::B`). Comments count (a
doc link or a "see `crate::B`" ties A's meaning to B); `--code-only` skips
them. `--no-tests` skips `#[cfg(test)]` modules (inline or in their own
file): a test may use fixtures from a module that depends on the one it
tests. String literals never count, and `super` inside an inline
`mod tests { .. }` is resolved from that inline module.

Prints every cycle (one per strongly connected component) with the lines
that make each edge, and exits 1; prints `no module cycles in <dir>` and
exits 0 when there are none. Standard library only.
"""

import os
import re
import sys

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{}(),;*]|\S")


def strip(text):
    """`text` with comments and string/char literals blanked (newlines
    kept), and the comments as (line, text) pairs."""
    out = []
    comments = []
    i, n = 0, len(text)

    def blank(chunk):
        out.append("".join(c if c == "\n" else " " for c in chunk))

    def comment(start, end):
        comments.append((text.count("\n", 0, start) + 1, text[start:end]))
        blank(text[start:end])

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comment(i, j)
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
            comment(i, j)
            i = j
        elif (c == "r" or c == "b") and re.match(r"b?r#*\"", text[i:i + 260]) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            m = re.match(r"b?r(#*)\"", text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            blank(text[i:j])
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(text[i:j + 1])
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if i + 1 < n and text[i + 1] == "\\":
                j = text.find("'", i + 2)
                j = n if j < 0 else j
                blank(text[i:j + 1])
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                blank(text[i:i + 3])
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), comments


def tokens(text, line=1):
    """(token, line) pairs of `text`, whose first line is `line`."""
    pos = 0
    for m in TOKEN.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        yield m.group(0), line


def use_tree(toks, i):
    """Parses the path tail after `prefix::` at toks[i]: returns (list of
    segment lists, index after). Handles `a::b`, `a::{b, c::d}`, `*`."""
    paths = []
    segs = []
    while i < len(toks):
        tok = toks[i][0]
        if tok == "{":
            i += 1
            while i < len(toks) and toks[i][0] != "}":
                sub, i = use_tree(toks, i)
                paths.extend(segs + s for s in sub)
                if i < len(toks) and toks[i][0] == ",":
                    i += 1
            return paths, i + 1
        if re.match(r"[A-Za-z_]", tok):
            if tok == "self" and segs == [] and paths == []:
                paths.append([])
                return paths, i + 1
            segs.append(tok)
            i += 1
            if i < len(toks) and toks[i][0] == "::":
                i += 1
                continue
            break
        if tok == "*":
            i += 1
        break
    paths.append(segs)
    return paths, i


def paths_named(toks, i, here):
    """If toks[i] starts a path (`crate::`, `super::`, `self::`), the
    absolute module paths it names and the index after it."""
    tok = toks[i][0]
    prev = toks[i - 1][0] if i else ""
    if tok not in ("crate", "super", "self") or prev == "::" or i + 1 >= len(toks) or toks[i + 1][0] != "::":
        return [], i + 1
    if tok == "crate":
        base, j = [], i + 2
    elif tok == "self":
        base, j = list(here), i + 2
    else:
        base, j = here[:-1], i + 2
        while j + 1 < len(toks) and toks[j][0] == "super" and toks[j + 1][0] == "::":
            base, j = base[:-1], j + 2
    tails, end = use_tree(toks, j)
    return [base + t for t in tails], max(end, i + 1)


def is_cfg_test(toks, i):
    """Whether the `mod` at toks[i] (after an optional `pub(..)`) carries
    `#[cfg(test)]`."""
    j = i - 1
    if j >= 0 and toks[j][0] == ")":
        while j >= 0 and toks[j][0] != "(":
            j -= 1
        j -= 1
    if j >= 0 and toks[j][0] == "pub":
        j -= 1
    return [t for t, _ in toks[max(0, j - 6):j + 1]] == ["#", "[", "cfg", "(", "test", ")", "]"]


def test_modules(path, module):
    """Module paths of the `#[cfg(test)] mod NAME;` declared in `path`."""
    with open(path, encoding="utf-8") as f:
        code, _ = strip(f.read())
    toks = list(tokens(code))
    return [
        tuple(module + [toks[i + 1][0]])
        for i, (tok, _) in enumerate(toks)
        if tok == "mod" and i + 2 < len(toks) and toks[i + 2][0] == ";" and is_cfg_test(toks, i)
    ]


def references(path, module, with_comments, with_tests=True):
    """(target module path, line) for every module path named in `path`,
    whose module path is `module` (a list of segments)."""
    with open(path, encoding="utf-8") as f:
        code, comments = strip(f.read())
    toks = list(tokens(code))
    refs = []
    inline = []  # (name, brace depth at which it closes)
    inline_at = {}  # line -> inline modules open there
    depth = 0
    i = 0
    while i < len(toks):
        tok, line = toks[i]
        if tok == "mod" and i + 2 < len(toks) and toks[i + 2][0] == "{":
            inline.append((toks[i + 1][0], depth + 1, is_cfg_test(toks, i)))
        elif tok == "{":
            depth += 1
        elif tok == "}":
            if inline and inline[-1][1] == depth:
                inline.pop()
            depth -= 1
        here = module + [name for name, _, _ in inline]
        inline_at.setdefault(line, here)
        named, i = paths_named(toks, i, here)
        if with_tests or not any(test for _, _, test in inline):
            refs.extend((p, line) for p in named)
    if with_comments:
        last = module
        for line, text in comments:
            here = next((inline_at[l] for l in range(line, 0, -1) if l in inline_at), last)
            ctoks = list(tokens(text, line))
            i = 0
            while i < len(ctoks):
                named, i = paths_named(ctoks, i, here)
                refs.extend((p, ctoks[i - 1][1]) for p in named)
    return refs


def modules(src):
    """(file, module path) for every .rs file of the crate rooted at `src`."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts[:1] == ["bin"]:
            continue
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            stem = name[:-3]
            if stem in ("mod",) or (not parts and stem in ("lib", "main")):
                yield os.path.join(root, name), parts
            else:
                yield os.path.join(root, name), parts + [stem]


def entries(src, parts):
    """The sibling modules of directory module `parts`."""
    folder = os.path.join(src, *parts)
    names = set()
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        if os.path.isdir(full) and name != "bin" and any(f.endswith(".rs") for f in os.listdir(full)):
            names.add(name)
        elif name.endswith(".rs") and name not in ("mod.rs", "lib.rs", "main.rs"):
            names.add(name[:-3])
    return names


def graphs(src, with_comments, with_tests=True):
    """{directory module: {A: {B: [(file, line), ...]}}}."""
    files = list(modules(src))
    if not with_tests:
        tests = {t for path, module in files for t in test_modules(path, module)}
        files = [(f, m) for f, m in files if not any(tuple(m[:len(t)]) == t for t in tests)]
    dirs = {tuple(m) for f, m in files if os.path.basename(f) == "mod.rs"} | {()}
    siblings = {d: entries(src, list(d)) for d in dirs}
    result = {d: {} for d in dirs}
    for path, module in files:
        for target, line in references(path, module, with_comments, with_tests):
            for d in dirs:
                k = len(d)
                if len(module) > k and len(target) > k and tuple(module[:k]) == d and tuple(target[:k]) == d:
                    a, b = module[k], target[k]
                    if a != b and a in siblings[d] and b in siblings[d]:
                        where = f"{os.path.relpath(path, src)}:{line}"
                        result[d].setdefault(a, {}).setdefault(b, []).append(where)
    return result


def components(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_in(graph, scc):
    """One cycle through the first node of `scc`, as a node list."""
    start, members = scc[0], set(scc)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return scc


def main(argv):
    code_only = "--code-only" in argv
    no_tests = "--no-tests" in argv
    dirs = [a for a in argv[1:] if a not in ("--code-only", "--no-tests")]
    if not dirs:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} [--code-only] [--no-tests] SRC_DIR [SRC_DIR ...]", file=sys.stderr)
        return 2
    status = 0
    for src in dirs:
        if not os.path.isdir(src):
            print(f"{src}: not a directory", file=sys.stderr)
            return 2
        found = False
        for d, graph in sorted(graphs(src, not code_only, not no_tests).items()):
            where = os.path.join(src, *d)
            for scc in components(graph):
                found = True
                cycle = cycle_in(graph, scc)
                print(f"cycle in {where}: {' -> '.join(cycle)}")
                if len(scc) > len(cycle) - 1:
                    print(f"  (all of {', '.join(scc)} are on cycles with each other)")
                for a, b in zip(cycle, cycle[1:]):
                    uses = graph[a][b]
                    more = f" (+{len(uses) - 3} more)" if len(uses) > 3 else ""
                    print(f"  {a} -> {b}: {', '.join(uses[:3])}{more}")
        if found:
            status = 1
        else:
            print(f"no module cycles in {src}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
