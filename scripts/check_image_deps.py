#!/usr/bin/env python3
"""Check the image's virtualenv holds exactly finpipe's runtime dependency set.

Run with the virtualenv's Python after installing (the image build does): every installed
distribution must be finpipe or required by it, transitively, without extras finpipe does not
ask for (so no benchmark or test package, no pip or setuptools), and every version must be the
one constraints.txt pins. Exit status 1 lists the differences.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str) -> set[str]:
    """``root`` and everything its (marker-selected) requirements need, with their extras."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        for line in md.distribution(name).requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((norm(req.name), frozenset(req.extras)))
    return seen


def main(constraints_path: str) -> int:
    pins = {}
    with open(constraints_path) as lines:
        for line in lines:
            if "==" in line and not line.lstrip().startswith("#"):
                name, _, version = line.partition("==")
                pins[norm(name)] = version.strip()
    installed = {norm(d.metadata["Name"]): d.version for d in md.distributions()}
    needed = closure("finpipe")
    problems = [
        f"installed but not needed at runtime: {n}" for n in sorted(set(installed) - needed)
    ]
    problems += [f"needed but not installed: {n}" for n in sorted(needed - set(installed))]
    problems += [
        f"{n} {v} differs from constraints.txt {pins[n]}"
        for n, v in sorted(installed.items())
        if n in pins and pins[n] != v
    ]
    problems += [
        f"{n} is not pinned in constraints.txt"
        for n in sorted(needed)
        if n not in pins and n != "finpipe"
    ]
    for problem in problems:
        print(f"check_image_deps: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_image_deps: {len(installed)} distributions, all needed and pinned")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "constraints.txt"))
