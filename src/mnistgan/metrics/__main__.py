"""Baseline figures and timings: python -m mnistgan.metrics"""

import time

from mnistgan.metrics import (
    evaluate,
    features_and_probs,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kid,
    prdc,
)


def timed(name, fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    print(f"  {name}: {time.perf_counter() - t0:.2f} s")
    return out


def show(name, scores):
    rest = "  ".join(f"{k} {v:.4g}" for k, v in scores.items() if k != "class_hist")
    print(f"{name}: {rest}\n  class_hist {' '.join(f'{h:.3f}' for h in scores['class_hist'])}")


def main():
    print("timings")
    ref = timed("reference stats (cached after the first run)", evaluate.reference_stats, "test")
    real = timed("evaluate_real(10000)", evaluate.evaluate_real, 10000)
    blurred = evaluate.blurred_test_images(0.6)
    blurred_scores = timed("evaluate_images(blurred, 10k)", evaluate.evaluate_images, blurred)
    feats, probs = timed("  features_and_probs", features_and_probs, blurred)
    timed("  fid", frechet_distance, *gaussian_stats(feats), ref["mu"], ref["sigma"])
    timed("  kid", kid, feats, ref["features"])
    timed("  inception_score", inception_score, probs)
    timed("  prdc", prdc, ref["features"], feats)
    show("real train n=10000", real)
    show("blurred test sigma=0.6", blurred_scores)


if __name__ == "__main__":
    main()
