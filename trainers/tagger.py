"""Train the span tagger for extraction whose teacher only copies (`service.tagger` answers
with it): the cheapest student that can pass such a task.

Each teacher output is aligned back to its input as B-/I- labels per field (outside pieces are
"O"); a CRF over sparse features of each piece and its neighbours learns them (L-BFGS, L2).
Shapes it writes: those of `spans.fields_of`. Other schemas keep the LoRA student.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stillroom.service.generation import pieces
from stillroom.service.tagger import OUTSIDE, Tagger, features, start_mask, transition_mask
from stillroom.trainers.spans import align

if TYPE_CHECKING:
    from numpy.typing import NDArray


def train_tagger(
    examples: Sequence[tuple[str, str]],
    fields: dict[str, bool],
    l2: float = 0.3,
    max_iterations: int = 300,
) -> Tagger:
    """Fit the CRF on (input, teacher output) pairs that align (`align`); raises ValueError
    when none does."""
    from scipy import sparse
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    aligned = []
    for text, output in examples:
        labels = align(text, output, fields)
        if labels:
            aligned.append((pieces(text), labels))
    if not aligned:
        raise ValueError("no example's output could be aligned to its input")
    names = [OUTSIDE] + [f"{p}-{f}" for f in fields for p in ("B", "I")]
    index = {x: i for i, x in enumerate(names)}
    L = len(names)
    feats = [features(have) for have, _ in aligned]
    seen = {x for seq in feats for f in seq for x in f}
    vocabulary = {x: i for i, x in enumerate(sorted(seen))}
    rows, cols = [], []
    r = 0
    for seq in feats:
        for f in seq:
            for x in f:
                if x in vocabulary:
                    rows.append(r)
                    cols.append(vocabulary[x])
            r += 1
    X = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(r, len(vocabulary)))
    gold = np.array([index[y] for _, labels in aligned for y in labels])
    lengths = np.array([len(labels) for _, labels in aligned])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    by_length: dict[int, list[int]] = {}
    for k, n in enumerate(lengths):
        by_length.setdefault(int(n), []).append(k)
    groups = [
        (n, np.array([np.arange(offsets[k], offsets[k] + n) for k in ks]))
        for n, ks in by_length.items()
    ]
    mask, starts = transition_mask(names), start_mask(names)
    F = len(vocabulary)
    sizes = [F * L, L * L, L, L]

    def unpack(theta: NDArray[np.float64]) -> list[NDArray[np.float64]]:
        parts, at = [], 0
        for s in sizes:
            parts.append(theta[at : at + s])
            at += s
        return [parts[0].reshape(F, L), parts[1].reshape(L, L), parts[2], parts[3]]

    def objective(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        w, tr, st, en = unpack(theta)
        t, s = tr + mask, st + starts
        emission = X @ w  # (pieces, labels)
        d_emission = np.zeros_like(emission)
        d_t, d_s, d_e = np.zeros((L, L)), np.zeros(L), np.zeros(L)
        loss = 0.0
        for n, rows_ in groups:
            e = emission[rows_]  # (B, n, L)
            y = gold[rows_]  # (B, n)
            alpha = np.empty_like(e)
            alpha[:, 0] = s + e[:, 0]
            for i in range(1, n):
                alpha[:, i] = logsumexp(alpha[:, i - 1, :, None] + t, axis=1) + e[:, i]
            beta = np.empty_like(e)
            beta[:, n - 1] = en
            for i in range(n - 2, -1, -1):
                beta[:, i] = logsumexp(t + (e[:, i + 1] + beta[:, i + 1])[:, None, :], axis=2)
            log_z = logsumexp(alpha[:, n - 1] + en, axis=1)
            gold_score = (
                s[y[:, 0]]
                + np.take_along_axis(e, y[:, :, None], axis=2).sum(axis=(1, 2))
                + t[y[:, :-1], y[:, 1:]].sum(axis=1)
                + en[y[:, -1]]
            )
            loss += float((log_z - gold_score).sum())
            marginal = np.exp(alpha + beta - log_z[:, None, None])
            onehot = np.zeros_like(e)
            np.put_along_axis(onehot, y[:, :, None], 1.0, axis=2)
            d_emission[rows_] += marginal - onehot
            d_s += marginal[:, 0].sum(axis=0) - onehot[:, 0].sum(axis=0)
            d_e += marginal[:, -1].sum(axis=0) - onehot[:, -1].sum(axis=0)
            if n > 1:
                pair = np.exp(
                    alpha[:, :-1, :, None]
                    + t
                    + (e[:, 1:] + beta[:, 1:])[:, :, None, :]
                    - log_z[:, None, None, None]
                )
                d_t += pair.sum(axis=(0, 1))
                np.add.at(d_t, (y[:, :-1], y[:, 1:]), -1.0)
        grad = np.concatenate([(X.T @ d_emission).ravel(), d_t.ravel(), d_s, d_e])
        loss += 0.5 * l2 * float(theta @ theta)
        return loss, grad + l2 * theta

    theta = np.zeros(sum(sizes))
    result = minimize(
        objective, theta, jac=True, method="L-BFGS-B", options={"maxiter": max_iterations}
    )
    w, tr, st, en = unpack(result.x)
    return Tagger(dict(fields), names, vocabulary, w, tr, st, en, int(result.nit))
