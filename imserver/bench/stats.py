"""Small statistics helpers: percentiles of a list, and of quantile samples merged from
several workers (each part a count and evenly ranked samples of its sorted values)."""


def percentile(ordered, p: float):
    """Nearest-rank-ish percentile of an already sorted list (None when empty)."""
    if not ordered:
        return None
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def summary(values, scale: float = 1.0, digits: int = 3) -> dict:
    """count, mean, p50, p90, p99, max (and min) of ``values`` times ``scale``."""
    if not values:
        return {"count": 0}
    ordered = sorted(v * scale for v in values)
    return {"count": len(ordered),
            "min": round(ordered[0], digits),
            "mean": round(sum(ordered) / len(ordered), digits),
            "p50": round(percentile(ordered, 50), digits),
            "p90": round(percentile(ordered, 90), digits),
            "p99": round(percentile(ordered, 99), digits),
            "max": round(ordered[-1], digits)}


def merge_quantiles(parts, points=(50, 90, 99)) -> dict:
    """``parts``: [(count, sorted samples)]; each sample stands for count/len(samples)
    values. Weighted percentiles of the whole."""
    weighted = []
    total = 0.0
    for count, samples in parts:
        if not samples or not count:
            continue
        w = count / len(samples)
        weighted.extend((v, w) for v in samples)
        total += count
    if not weighted:
        return {}
    weighted.sort()
    out = {}
    for p in points:
        target = p / 100 * total
        acc = 0.0
        value = weighted[-1][0]
        for v, w in weighted:
            acc += w
            if acc >= target:
                value = v
                break
        out[f"p{p}"] = value
    return out


def expand_samples(parts, limit: int = 5000) -> list:
    """A flat list of values standing for the merged distribution (for plots): each
    part's samples repeated in proportion to its count, at most ``limit`` values."""
    total = sum(c for c, s in parts if s)
    if not total:
        return []
    out = []
    for count, samples in parts:
        if not samples:
            continue
        want = max(1, int(round(limit * count / total)))
        step = len(samples) / want
        out.extend(samples[min(len(samples) - 1, int(i * step))] for i in range(want))
    out.sort()
    return out
