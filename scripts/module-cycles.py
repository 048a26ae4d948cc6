#!/usr/bin/env python3
"""No cycle between the top-level modules of agent/src (docs/architecture.md, the layering rule).

Builds the module graph from `crate::<module>` paths (also `crate::{a, b::c}` groups) in
agent/src, leaving out comments, strings and `#[cfg(test)]` code (inline items and the files
they pull in with `mod x;`), since tests may reach across layers. An edge `a -> b` means a
file of module `a` names `crate::b`. Edges into `agent` are left to check-layers.sh's first
check. Edges listed in scripts/module-cycle-exceptions.txt are tolerated; any other cycle
fails, naming its modules and the lines behind each edge. A listed edge that no longer exists
or no longer closes a cycle fails too, so the list only shrinks.

Usage: module-cycles.py            check (exit 1 on a failure)
       module-cycles.py --graph    print every edge with the lines behind it
"""
import os
import re
import sys

SRC = "agent/src"
EXCEPTIONS = "scripts/module-cycle-exceptions.txt"
ROOTS = {"lib.rs", "main.rs"}  # crate roots: they wire everything, not a layer


def strip(text):
    """Blank comments, strings and char literals (keeping newlines, so line numbers hold)."""
    out, i, n = [], 0, len(text)
    blank = lambda s: re.sub(r"[^\n]", " ", s)  # noqa: E731
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
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
            out.append(blank(text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 260])) and not re.match(r"\w", text[i - 1:i]):
            end = text.find('"' + m.group(1), i + m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1]))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']{0,9}|[^\\'])'", text[i:i + 14])):
            out.append(blank(m.group(0)))
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG_TEST = re.compile(r"#\[cfg\((test|all\(test[^\]]*)\)\]")


def drop_cfg_test(code, orig, path, test_files):
    """Blank `#[cfg(test)]` items of `code` (`orig` stripped); note the files their `mod x;`
    declarations pull in."""
    while m := CFG_TEST.search(code):
        i = m.end()
        # The item: up to its `;` or its balanced `{ .. }`, whichever comes first.
        j = i
        while j < len(code) and code[j] not in ";{":
            j += 1
        head = code[i:j]
        if j < len(code) and code[j] == "{":
            depth = 0
            while j < len(code):
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                if depth == 0:
                    break
                j += 1
        elif mod := re.search(r"\bmod\s+(\w+)\s*$", head):
            # strip() blanked the #[path = ".."] string: read it from the original text.
            explicit = re.search(r'#\[path\s*=\s*"([^"]+)"\]', orig[i:j])
            test_files.add(module_file(path, mod.group(1), explicit and explicit.group(1)))
        code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start(): j + 1]) + code[j + 1:]
    return code


def module_file(path, name, explicit):
    """The file `mod name;` in `path` loads (`explicit`: its #[path])."""
    d = os.path.dirname(path)
    if explicit:
        return os.path.normpath(os.path.join(d, explicit))
    base = os.path.basename(path)
    if base not in ("mod.rs", "lib.rs", "main.rs"):
        d = os.path.join(d, base[:-3])
    for cand in (os.path.join(d, name + ".rs"), os.path.join(d, name, "mod.rs")):
        if os.path.exists(cand):
            return os.path.normpath(cand)
    return None


def top_module(path):
    rel = os.path.relpath(path, SRC)
    first = rel.split(os.sep)[0]
    return None if first in ROOTS else first.removesuffix(".rs")


def edges():
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(SRC) for f in fs
                   if f.endswith(".rs"))
    code, test_files = {}, set()
    for f in files:
        with open(f) as fh:
            orig = fh.read()
        code[f] = drop_cfg_test(strip(orig), orig, f, test_files)
    # A test file's own `mod x;` children are test-only too.
    changed = True
    while changed:
        changed = False
        for f in files:
            if f in test_files:
                for mod in re.finditer(r"\bmod\s+(\w+)\s*;", code[f]):
                    child = module_file(f, mod.group(1), None)
                    if child and child not in test_files:
                        test_files.add(child)
                        changed = True
    modules = {top_module(f) for f in files if f not in test_files} - {None}
    graph = {}  # (a, b) -> ["file:line", ..]
    for f in files:
        a = top_module(f)
        if a is None or f in test_files:
            continue
        text = code[f]
        for m in re.finditer(r"\bcrate\s*::\s*(\w+|\{)", text):
            if m.group(1) == "{":
                depth, j = 1, m.end()
                while j < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                # The group's top-level names: drop nested groups, take each first word.
                flat = text[m.end(): j - 1]
                while re.search(r"\{[^{}]*\}", flat):
                    flat = re.sub(r"\{[^{}]*\}", "", flat)
                names = re.findall(r"(?:^|,)\s*(\w+)", flat)
            else:
                names = [m.group(1)]
            line = text.count("\n", 0, m.start()) + 1
            for b in names:
                # Imports of `agent` from below are check-layers.sh's first check (with its own
                # list), so they are not repeated here; `agent` itself may import anything.
                if b not in modules or b in (a, "agent"):
                    continue
                where = graph.setdefault((a, b), [])
                if f"{f}:{line}" not in where:
                    where.append(f"{f}:{line}")
    return modules, graph


def sccs(nodes, adj):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(comp, adj):
    """One shortest cycle through the first module of a strongly connected component."""
    start, prev, todo = comp[0], {}, [comp[0]]
    while todo:
        v = todo.pop(0)
        for w in sorted(adj.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w in comp and w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def adjacency(graph):
    adj = {}
    for a, b in graph:
        adj.setdefault(a, set()).add(b)
    return adj


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    modules, graph = edges()
    if sys.argv[1:] == ["--graph"]:
        for (a, b), where in sorted(graph.items()):
            print(f"{a} -> {b}: {', '.join(where)}")
        return 0
    with open(EXCEPTIONS) as fh:
        listed = [ln.split("#")[0].strip() for ln in fh]
    allowed = set()
    for ln in filter(None, listed):
        a, _, b = (s.strip() for s in ln.partition("->"))
        allowed.add((a, b))
    status = 0
    checked = {e: w for e, w in graph.items() if e not in allowed}
    for comp in sccs(modules, adjacency(checked)):
        if len(comp) < 2:
            continue
        status = 1
        cycle = shortest_cycle(comp, adjacency(checked))
        print(f"check-layers: a cycle between modules {', '.join(comp)}:"
              f" {' -> '.join(cycle)}, from", file=sys.stderr)
        on_cycle = set(zip(cycle, cycle[1:]))
        for e in sorted(on_cycle):
            print(f"  {e[0]} -> {e[1]}: {', '.join(checked[e])}", file=sys.stderr)
        rest = sorted(e for e in checked if e[0] in comp and e[1] in comp and e not in on_cycle)
        if rest:
            print(f"  other edges between these modules ({sys.argv[0]} --graph has their lines): "
                  + ", ".join(f"{a} -> {b}" for a, b in rest), file=sys.stderr)
        print("  make the arrow one-way: move the shared type down, or pass a narrow trait,"
              " closure or plain data in (docs/architecture.md)", file=sys.stderr)
    # The ratchet: an exception must still be an edge that closes a cycle in the full graph.
    full = {frozenset(c) for c in sccs(modules, adjacency(graph)) if len(c) > 1}
    for a, b in sorted(allowed):
        if (a, b) not in graph:
            print(f"check-layers: {a} no longer uses crate::{b}:"
                  f" take '{a} -> {b}' off {EXCEPTIONS}", file=sys.stderr)
            status = 1
        elif not any(a in c and b in c for c in full):
            print(f"check-layers: '{a} -> {b}' no longer closes a cycle: take it off {EXCEPTIONS}",
                  file=sys.stderr)
            status = 1
    if status == 0:
        print(f"check-layers: no cycle between modules ({len(allowed)} edges still excepted)")
    return status


if __name__ == "__main__":
    sys.exit(main())
