"""k-means with k chosen by silhouette: groups of similar texts, so a fill can take a few from each group.

`cluster` runs k-means (greedy k-means++ seeding, Lloyd iterations, best of `RESTARTS` seeded starts) for every k in
`K_RANGE` and keeps the largest k whose mean silhouette is within `SILHOUETTE_TOLERANCE` of the best one. Not simply
the best: the mean over points is dominated by a large cluster, and often scores a few small, well-separated groups
merged into one a little higher than apart. For sampling, splitting a group once too often costs little, while merging
two hides the smaller one (tests/test_review_cluster.py simulates it: one blob of 400 points and four of 10, where the
best silhouette alone finds the five blobs in 21 of 30 runs, this rule in 30).

Above `FIT_SAMPLE` points, each k-means fits a seeded sample and then assigns every point to its nearest centroid;
above `SILHOUETTE_SAMPLE` points, the silhouette is the mean over a seeded sample (as scikit-learn's
`silhouette_score(sample_size=...)`). Same points and seed, same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_RANGE = range(2, 11)
RESTARTS = 3
MAX_ITERATIONS = 100
FIT_SAMPLE = 2000
SILHOUETTE_SAMPLE = 1000
SILHOUETTE_TOLERANCE = 0.1


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # the cluster of each point, 0 .. k-1
    k: int
    silhouette: float | None  # of the chosen k; None when there was no choice (fewer than 3 distinct points)
    scores: dict[int, float]  # every k tried, with its silhouette


def cluster(points: np.ndarray, seed: int = 0, k_range: range = K_RANGE) -> Clusters:
    points = np.asarray(points, dtype=np.float32)
    distinct = len(np.unique(points, axis=0)) if len(points) else 0
    if distinct < 3:
        # k-means cannot split fewer than 3 distinct points in more than one meaningful way: identical ones together.
        labels = np.unique(points, axis=0, return_inverse=True)[1].reshape(-1) if len(points) else np.zeros(0, int)
        return Clusters(labels=labels.astype(np.intp), k=distinct, silhouette=None, scores={})
    labels_of, scores = {}, {}
    for k in k_range:
        if 2 <= k < distinct:
            labels_of[k] = kmeans(points, k, seed)[0]
            scores[k] = silhouette(points, labels_of[k], seed=seed)
    if not scores:
        raise ValueError(f"no k in {k_range} fits {distinct} distinct points")
    best = max(scores.values())
    k = max(k for k, score in scores.items() if score >= best - SILHOUETTE_TOLERANCE)
    return Clusters(labels=labels_of[k], k=k, silhouette=scores[k], scores=scores)


def kmeans(points: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (one per point) and centroids (k rows) of the best of `RESTARTS` seeded k-means runs, by inertia."""
    rng = np.random.default_rng(seed)
    fit = points
    if len(points) > FIT_SAMPLE:
        fit = points[np.sort(rng.choice(len(points), FIT_SAMPLE, replace=False))]
    best_inertia, best_centroids = np.inf, None
    for _ in range(RESTARTS):
        centroids, inertia = _lloyd(fit, _kmeans_plus_plus(fit, k, rng))
        if inertia < best_inertia:
            best_inertia, best_centroids = inertia, centroids
    assert best_centroids is not None
    return _nearest(points, best_centroids)[0], best_centroids


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (Arthur and Vassilvitskii): each next centre is the best, by the inertia it leaves, of
    2 + 2 ln k candidates drawn with probability proportional to D(x)². Plain k-means++ often seeds a dominant cluster
    twice and misses a small one, the very case sampling by cluster is for; scikit-learn's 2 + ln k candidates still
    missed one in some of our simulations (tests/test_review_cluster.py)."""
    norms = (points * points).sum(axis=1)
    trials = 2 + int(2 * np.log(k))
    centres = [points[rng.integers(len(points))]]
    closest = _squared_distances(points, centres[0][None, :], norms)[:, 0].astype(np.float64)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point sits on a centre already
            candidates = rng.integers(len(points), size=1)
        else:
            candidates = rng.choice(len(points), size=trials, p=closest / total)
        after = np.minimum(closest[:, None], _squared_distances(points, points[candidates], norms))
        best = int(np.argmin(after.sum(axis=0)))
        centres.append(points[candidates[best]])
        closest = after[:, best]
    return np.array(centres)


def _lloyd(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    labels = None
    norms = (points * points).sum(axis=1)
    for _ in range(MAX_ITERATIONS):
        new_labels, distances = _nearest(points, centroids, norms)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for c in range(len(centroids)):
            members = points[labels == c]
            if len(members):
                centroids[c] = members.mean(axis=0)
            else:  # an empty cluster takes the point worst served by its centroid, as scikit-learn does
                far = int(np.argmax(distances))
                centroids[c], distances[far] = points[far], 0.0
    labels, distances = _nearest(points, centroids, norms)
    return centroids, float(distances.sum())


def _nearest(points: np.ndarray, centroids: np.ndarray,
             norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    squared = _squared_distances(points, centroids, norms)
    labels = squared.argmin(axis=1)
    return labels, squared[np.arange(len(points)), labels]


def _squared_distances(a: np.ndarray, b: np.ndarray, a_norms: np.ndarray | None = None) -> np.ndarray:
    """‖a_i - b_j‖² for every pair of rows; `a_norms` (‖a_i‖²) may be passed in when a stays the same."""
    a_norms = (a * a).sum(axis=1) if a_norms is None else a_norms
    return np.maximum(a_norms[:, None] - 2 * (a @ b.T) + (b * b).sum(axis=1)[None, :], 0.0)


def silhouette(points: np.ndarray, labels: np.ndarray, sample: int = SILHOUETTE_SAMPLE, seed: int = 0) -> float:
    """Mean silhouette (Rousseeuw 1987) with Euclidean distance: per point (b - a) / max(a, b), where a is its mean
    distance to the rest of its cluster and b the smallest mean distance to another cluster; 0 for a point alone in
    its cluster. Needs at least 2 clusters."""
    points, labels = np.asarray(points, dtype=np.float32), np.asarray(labels)
    if len(points) > sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(points), sample, replace=False))
        points, labels = points[chosen], labels[chosen]
    clusters = np.unique(labels)
    if len(clusters) < 2:
        raise ValueError("the silhouette needs at least 2 clusters")
    distances = np.sqrt(_squared_distances(points, points)).astype(np.float64)
    np.fill_diagonal(distances, 0.0)
    members = labels[:, None] == clusters[None, :]  # point × cluster
    sizes = members.sum(axis=0)
    sums = distances @ members  # point × cluster: total distance to each cluster
    own = members.argmax(axis=1)
    own_size = sizes[own] - 1
    a = np.divide(sums[np.arange(len(points)), own], own_size, out=np.zeros(len(points)), where=own_size > 0)
    mean_to_other = sums / sizes[None, :]
    mean_to_other[np.arange(len(points)), own] = np.inf
    b = mean_to_other.min(axis=1)
    scores = np.where(own_size > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(scores.mean())
