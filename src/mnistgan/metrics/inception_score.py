"""Classifier-based Inception Score (Salimans et al. 2016) and class-histogram statistics."""

import numpy as np
from scipy.special import rel_entr
from scipy.stats import entropy

# A digit counts as covered when at least 2% of samples are classified as it: a fifth of its fair
# 10% share. Well above the ~0.1% per class that classifier errors scatter onto absent digits, yet
# low enough that a digit the generator merely under-produces still counts as present.
COVERED_SHARE = 0.02
CONFIDENT_PROB = 0.9


def inception_score(probs, splits=10):
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))). Ranges from 1 to 10 for digits."""
    probs = np.asarray(probs, dtype=np.float64)
    splits = max(1, min(splits, len(probs)))
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(axis=0, keepdims=True)
        scores.append(np.exp(rel_entr(part, py).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_stats(probs):
    """Histogram of argmax classes and what it says about mode coverage and sample clarity."""
    probs = np.asarray(probs, dtype=np.float64)
    hist = np.bincount(probs.argmax(axis=1), minlength=10) / max(len(probs), 1)
    return {
        "digits_covered": int((hist >= COVERED_SHARE).sum()),
        "class_hist": hist.tolist(),
        "kl_uniform": float(entropy(hist, np.full(10, 0.1))),  # nats; log(10)=2.30 for one digit
        "confident": float((probs.max(axis=1) >= CONFIDENT_PROB).mean()),
    }
