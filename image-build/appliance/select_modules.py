#!/usr/bin/env python3
"""Copies the modules named in modules.list, and every module they depend on, from an
unpacked Debian kernel tree into the appliance root.

    select_modules.py LIST SRC_MODULES_DIR DST_MODULES_DIR

SRC_MODULES_DIR is lib/modules/<release> of the unpacked package, with modules.dep
already generated (depmod); DST_MODULES_DIR gets the chosen .ko files and the
modules.builtin* and modules.order files (depmod is run on it afterwards)."""
import fnmatch
import os
import shutil
import sys


def read_list(path):
    with open(path) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def read_deps(src):
    deps = {}
    with open(os.path.join(src, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[mod.strip()] = rest.split()
    return deps


def read_softdeps(src):
    """module path -> names (modules or aliases) modules.softdep says to load with it."""
    path = os.path.join(src, "modules.softdep")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) > 2 and words[0] == "softdep":
                out[words[1].replace("-", "_")] = [w for w in words[2:] if w not in ("pre:", "post:")]
    return out


def read_aliases(src):
    aliases = []
    with open(os.path.join(src, "modules.alias")) as f:
        for line in f:
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                aliases.append((words[1], words[2].replace("-", "_")))
    return aliases


def name_of(path):
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def main():
    list_file, src, dst = sys.argv[1:4]
    deps = read_deps(src)
    softdeps = read_softdeps(src)
    aliases = read_aliases(src)
    by_name = {name_of(m): m for m in deps}
    wanted, missing = set(), []
    for entry in read_list(list_file):
        rel = "kernel/" + entry
        if entry.endswith(".ko"):
            if rel in deps:
                wanted.add(rel)
            else:
                missing.append(entry)
        else:
            hits = [m for m in deps if m.startswith(rel + "/")]
            if not hits:
                missing.append(entry)
            wanted.update(hits)
    if missing:
        sys.exit("select_modules: not in this kernel: " + ", ".join(missing))
    closure, todo = set(), list(wanted)
    while todo:
        m = todo.pop()
        if m in closure:
            continue
        closure.add(m)
        todo.extend(deps.get(m, []))
        for soft in softdeps.get(name_of(m), []):
            names = [soft.replace("-", "_")] if soft.replace("-", "_") in by_name else \
                [mod for pat, mod in aliases if fnmatch.fnmatchcase(soft, pat)]
            todo.extend(by_name[n] for n in names if n in by_name)
    for m in sorted(closure):
        os.makedirs(os.path.dirname(os.path.join(dst, m)), exist_ok=True)
        shutil.copy2(os.path.join(src, m), os.path.join(dst, m))
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    size = sum(os.path.getsize(os.path.join(dst, m)) for m in closure)
    print(f"select_modules: {len(closure)} modules ({len(wanted)} listed), {size >> 20} MiB")


if __name__ == "__main__":
    main()
