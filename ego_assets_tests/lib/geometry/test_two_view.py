"""The batched Kabsch fit of the rotation RANSAC against scipy's ``Rotation.align_vectors``."""

import numpy as np
from scipy.spatial.transform import Rotation

from ego_assets.lib.geometry.two_view import align, kabsch_batch, rotation_only


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_batched_kabsch_matches_align_vectors_on_noisy_random_rotations():
    rng = np.random.default_rng(7)
    H, N = 50, 12
    R_true = Rotation.random(H, random_state=3).as_matrix()
    a = _unit(rng.normal(size=(H, N, 3)))
    b = np.einsum("hij,hnj->hni", R_true, a) + rng.normal(scale=0.02, size=(H, N, 3))
    Rb = kabsch_batch(a, b)
    Rs = np.stack([align(a[h], b[h]) for h in range(H)])
    assert np.abs(Rb - Rs).max() < 1e-9
    # proper rotations, close to the truth (the noise moves them a little, not far)
    assert np.allclose(np.linalg.det(Rb), 1.0)
    err_deg = np.degrees((Rotation.from_matrix(Rb) * Rotation.from_matrix(R_true).inv()).magnitude())
    assert err_deg.max() < 3.0 and err_deg.mean() > 1e-4


def test_two_point_sets_give_proper_rotations_like_align_vectors():
    # the RANSAC hypotheses: two vectors per set, where a plain SVD could return a reflection
    rng = np.random.default_rng(11)
    a = _unit(rng.normal(size=(64, 2, 3)))
    R_true = Rotation.random(64, random_state=5).as_matrix()
    b = _unit(np.einsum("hij,hnj->hni", R_true, a) + rng.normal(scale=0.01, size=a.shape))
    Rb = kabsch_batch(a, b)
    assert np.allclose(np.linalg.det(Rb), 1.0)
    Rs = np.stack([align(a[h], b[h]) for h in range(64)])
    assert np.abs(Rb - Rs).max() < 1e-9


def test_rotation_only_recovers_a_rotation_among_outliers():
    rng = np.random.default_rng(2)
    R = Rotation.from_euler("xyz", [3.0, -5.0, 2.0], degrees=True).as_matrix()
    b1 = _unit(rng.normal(size=(200, 3)) + [0, 0, 3])
    b2 = _unit(b1 @ R.T + rng.normal(scale=1e-3, size=b1.shape))
    out = rng.random(200) < 0.3
    b2[out] = _unit(rng.normal(size=(out.sum(), 3)) + [0, 0, 3])
    Rest, inl = rotation_only(b1, b2, np.radians(0.5), rng=np.random.default_rng(0))
    assert Rest is not None
    assert np.degrees(Rotation.from_matrix(Rest @ R.T).magnitude()) < 0.1
    assert inl[~out].mean() > 0.95 and inl[out].mean() < 0.1
