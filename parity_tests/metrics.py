"""Per-tensor comparison metrics: max abs error, relative error, cosine similarity, pass/fail."""
import dataclasses

import numpy as np

FORWARD_RTOL = 2e-5    # fp32 forward, every tap
GRAD_RTOL = 1e-4       # gradients, every parameter and the input
STEP_RTOL = 1e-5       # weights after one AdamW step


@dataclasses.dataclass
class Comparison:
    name: str
    max_abs: float        # max |got - ref|
    ref_max: float        # max |ref|
    rel: float            # max_abs / max |ref|  (max_abs itself when ref is all zeros)
    cosine: float         # cosine similarity of the flattened tensors (1.0 when both are zero)
    tol: float
    shape: tuple
    # Set by the optimizer-step study when every element over the tolerance lies within the bound
    # derived from the measured gradient difference (shown element by element in the report).
    explained: bool = False

    @property
    def within_tol(self):
        return bool(np.isfinite(self.rel) and self.rel <= self.tol)

    @property
    def passed(self):
        return self.within_tol or self.explained

    def as_row(self):
        return dict(name=self.name, shape="x".join(map(str, self.shape)), max_abs=self.max_abs,
                    ref_max=self.ref_max, rel=self.rel, cosine=self.cosine, tol=self.tol,
                    passed=self.passed, explained=self.explained)


def compare(name, ref, got, tol):
    """Compare ``got`` with the reference ``ref`` (numpy arrays of the same size), in float64."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        if got.size != ref.size:
            raise ValueError(f"{name}: shapes differ: reference {ref.shape}, got {got.shape}")
        got = got.reshape(ref.shape)
    diff = np.abs(got - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(np.isfinite(got)):
        max_abs = float("inf")
    ref_max = float(np.abs(ref).max()) if ref.size else 0.0
    rel = max_abs / ref_max if ref_max > 0 else max_abs
    na, nb = np.linalg.norm(ref), np.linalg.norm(got)
    cosine = 1.0 if na == 0 and nb == 0 else float(np.dot(ref.ravel(), got.ravel()) / max(na * nb, 1e-300))
    return Comparison(name, max_abs, ref_max, rel, cosine, tol, tuple(ref.shape))


def compare_all(refs, gots, tol, names=None):
    """Compare two {name: array} dicts over ``names`` (default: the reference's keys, in order)."""
    names = list(refs) if names is None else names
    missing = [n for n in names if n not in gots]
    if missing:
        raise KeyError(f"no output for {missing[:5]}")
    return [compare(n, refs[n], gots[n], tol) for n in names]


def failures(comparisons):
    return [c.name for c in comparisons if not c.passed]


def worst(comparisons):
    return max(comparisons, key=lambda c: c.rel)
