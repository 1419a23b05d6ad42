"""Compare two ``pytest --dump-sources`` runs: which builds' generated sources differ.

    python3 tools/compare_sources.py BEFORE_DIR AFTER_DIR [--diff N]

Builds are matched by (test, n-th build of that test). Exit status 1 when any matched build
differs; builds present in one run only are listed apart (a test that changed).
"""
import argparse
import difflib
import json
import os
import sys


def _index(root):
    entries = {}
    with open(os.path.join(root, "index.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            entries[(e["test"], e["n"])] = e
    return entries


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--diff", type=int, default=3, metavar="N", help="show a unified diff of the first N changed sources")
    a = p.parse_args(argv)
    old, new = _index(a.before), _index(a.after)
    changed = [k for k in old if k in new and old[k]["sha256"] != new[k]["sha256"]]
    only_old = sorted(set(old) - set(new))
    only_new = sorted(set(new) - set(old))
    print(f"{len(old)} builds before, {len(new)} after; {len(changed)} changed, "
          f"{len(only_old)} only before, {len(only_new)} only after")
    for k in changed:
        print(f"changed: {k[0]} #{k[1]} ({old[k]['name']}, {old[k]['target']})")
    for k in only_old:
        print(f"only before: {k[0]} #{k[1]}")
    for k in only_new:
        print(f"only after: {k[0]} #{k[1]}")
    for k in changed[:a.diff]:
        texts = [open(os.path.join(root, "src", e[k]["sha256"])).read().splitlines()
                 for root, e in ((a.before, old), (a.after, new))]
        sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(*texts, "before", "after", lineterm=""))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
