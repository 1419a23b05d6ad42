"""Fresh identifiers: ``base``, else ``base_2``, ``base_3``, ..."""


def unique_name(base, used):
    """Return a name not in ``used`` (a set) derived from ``base``, and add it to ``used``."""
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name
