"""What every benchmark records: the commit measured and a JSON file under bench/results/."""
import datetime
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def commit():
    """The git commit being measured (``unknown`` outside a checkout)."""
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True).strip()
    except Exception:
        return "unknown"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_results(results, prefix):
    """Write ``bench/results/<prefix>_<date>.json``, print it, and return its path."""
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{prefix}_{datetime.date.today().isoformat()}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    print(f"written to {path}")
    return path
