"""Compare two ``pytest --dump-sources`` runs: which builds' generated sources differ.

    python3 tools/compare_sources.py BEFORE_DIR AFTER_DIR [--diff N]

Builds are matched by (test, n-th build of that test); builds of other processes (ranks,
subprocesses) by (test, rank, kernel, k-th such build). Exit status 1 when any matched build
differs; builds present in one run only are listed apart (a test that changed).
"""
import argparse
import difflib
import json
import os
import sys


def _index(root):
    """``{key: entry}``. Builds of the pytest process are keyed ``(test, n)``; builds of
    other processes (ranks of dt.distributed.launch, subprocess tests), whose counts restart
    with each process, are keyed ``(test, "rank R" or "other process", "name/target", k)``,
    k counting those in the order the index lists them."""
    main_pids = None      # pytest's processes (one per line: the workers of pytest -n too)
    pid_file = os.path.join(root, "pytest_pid")
    if os.path.exists(pid_file):
        main_pids = {int(x) for x in open(pid_file).read().split()}
    entries, seen = {}, {}
    with open(os.path.join(root, "index.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            if main_pids is None or e.get("pid") is None or e["pid"] in main_pids:
                key = (e["test"], e["n"])
            else:
                who = "other process" if e.get("rank") is None else f"rank {e['rank']}"
                group = (e["test"], who, f"{e['name']}/{e['target']}")
                seen[group] = seen.get(group, 0) + 1
                key = group + (seen[group],)
            entries[key] = e
    return entries


def _show(k):
    return f"{k[0]} #{k[1]}" if len(k) == 2 else f"{k[0]} [{k[1]}] {k[2]} #{k[3]}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--diff", type=int, default=3, metavar="N", help="show a unified diff of the first N changed sources")
    a = p.parse_args(argv)
    old, new = _index(a.before), _index(a.after)
    changed = [k for k in old if k in new and old[k]["sha256"] != new[k]["sha256"]]
    only_old = sorted(set(old) - set(new), key=str)
    only_new = sorted(set(new) - set(old), key=str)
    print(f"{len(old)} builds before, {len(new)} after; {len(changed)} changed, "
          f"{len(only_old)} only before, {len(only_new)} only after")
    for k in changed:
        print(f"changed: {_show(k)} ({old[k]['name']}, {old[k]['target']})")
    for k in only_old:
        print(f"only before: {_show(k)}")
    for k in only_new:
        print(f"only after: {_show(k)}")
    for k in changed[:a.diff]:
        texts = [open(os.path.join(root, "src", e[k]["sha256"])).read().splitlines()
                 for root, e in ((a.before, old), (a.after, new))]
        sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(*texts, "before", "after", lineterm=""))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
