"""Near-duplicate decisions from LSH candidates, in bounded memory.

1. LSH buckets (`curate.LshStep`): one band at a time (one task per band), its keys sorted per scan chunk and merged
   in blocks (`ledgerlm.data.extsort`); each bucket member is linked to the bucket's first document.
2. `components`: union-find (scipy, in C) over every band's candidate edges -> candidate groups.
3. `greedy_clusters`: inside each candidate group (one task per group subset, `label % tasks`), documents are taken
   in keep order (eligible first, then priority, score, id). A document becomes a duplicate of the first
   representative it is *verified* against (exact shingle Jaccard >= threshold, recomputed from the text); if it
   matches none, it is a representative itself. Every dropped document is therefore similar to the document kept in
   its place: A~B~C chains cannot drop C for an unrelated A.
"""

from __future__ import annotations

import numpy as np

from ledgerlm.data.minhash import MinHasher, exact_jaccard

MAX_REPS_COMPARED = 64  # representatives a document is checked against (the most preferred first)


def greedy_clusters(
    members: np.ndarray,
    labels: np.ndarray,
    keep_pos: np.ndarray,
    ids: np.ndarray,
    text_of,
    hasher: MinHasher | None,
    threshold: float | None,
):
    """Decide the candidate groups in `members` (global indices). Yields (doc, representative, jaccard, group size,
    group's first member by id rank is computed by the caller) for every dropped document.

    `text_of(g)` returns the text of document g; `ids[g]` its content id (same id = identical text of one source:
    always a duplicate). With `threshold` None nothing is verified and the whole group falls to its best member
    (the unverified LSH behaviour, opt-in only).
    """
    if len(members) == 0:
        return
    order = np.lexsort((keep_pos[members], labels[members]))
    m = members[order]
    lab = labels[m]
    bounds = np.flatnonzero(np.concatenate([[True], lab[1:] != lab[:-1], [True]]))
    for a, b in zip(bounds[:-1], bounds[1:]):
        group = m[a:b].tolist()
        size = len(group)
        if threshold is None:
            for g in group[1:]:
                yield g, group[0], float("nan"), size
            continue
        reps: list[int] = []
        shingles: dict[int, np.ndarray] = {}  # this group's only (representatives' are kept while it lasts)

        def sh(g: int, shingles=shingles) -> np.ndarray:
            if g not in shingles:
                shingles[g] = np.unique(hasher.shingles([text_of(g)])[0])
            return shingles[g]

        for g in group:
            rep, jac = -1, 0.0
            for r in reps[:MAX_REPS_COMPARED]:
                if ids[r] == ids[g]:
                    rep, jac = r, 1.0
                    break
                j = exact_jaccard(sh(r), sh(g))
                if j >= threshold:
                    rep, jac = r, j
                    break
            if rep < 0:
                reps.append(g)
            else:
                shingles.pop(g, None)  # only representatives' shingles are needed again
                yield g, rep, round(float(jac), 4), size
