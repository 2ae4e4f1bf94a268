"""Vectorised word hashing, MinHash signatures and LSH clustering.

Everything works on numpy uint64 arrays with wrap-around (mod 2**64) arithmetic; there is no per-word or per-shingle
Python loop. A batch of documents is joined into one code-point array, so numpy call overhead is paid per batch:

1. normalise (lowercase, punctuation and whitespace -> one space) with `str.translate` (C speed, length-preserving);
2. word hashes: polynomial hash of each word's code points via one prefix sum (R is odd, so R**-s exists mod 2**64);
3. shingle hashes: the word hashes of each n-gram combined with fixed odd multipliers, then a splitmix64 finaliser;
4. MinHash: 112 hash functions h_i(x) = a_i * x (mod 2**64, a_i odd and random: multiply-shift hashing, a bijection
   of the already mixed shingle hash whose top bits decide the minimum; an added b_i would only cost another pass),
   minimum per document with `np.minimum.reduceat`;
5. LSH: each band of 8 values is folded into one 64-bit key; documents with equal keys in any band are candidates;
   clusters are the connected components of the candidate graph (scipy's C union-find).

Code points, not UTF-8 bytes, are hashed, so ASCII text (uint8) and other text (UTF-32) give identical hashes and
word positions are string indices (decontamination cuts spans at those positions).
"""

from __future__ import annotations

import string
import sys
import unicodedata
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)
_R = 0x100000001B3  # odd multiplier for the polynomial word hash
_RINV = pow(_R, -1, 1 << 64)
_LEN_SALT = U64(0x9E3779B97F4A7C15)


def _build_translate_table() -> dict[int, int]:
    """Map every punctuation/symbol/space/control code point of the BMP (and ASCII) to a space; everything else kept."""
    table = {}
    for cp in range(0x3000 + 0x100):  # Latin, Greek, Cyrillic, general punctuation, CJK punctuation
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] in "PSZC" or ch in string.whitespace:
            table[cp] = 32
    for cp in (0xFEFF, 0xFF01, 0xFF0C, 0xFF0E, 0xFF1A, 0xFF1B, 0xFF1F):
        table[cp] = 32
    return table


_TABLE = _build_translate_table()
# the same mapping as a lookup table over code points (applied with numpy, much faster than str.translate)
_LUT = np.arange(0x10000, dtype=np.uint32)  # the whole BMP (every key of _TABLE is in it)
_LUT[list(_TABLE)] = 32
_LUT8 = _LUT[:256].astype(np.uint8)
_NORM8 = _LUT8.copy()  # ASCII: lowercase and punctuation in one table lookup
_NORM8[65:91] += 32
_NORM8_BYTES = _NORM8.tobytes()  # the same table for bytes.translate (one C pass, no numpy fancy indexing)


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) != len(text):  # a few characters (e.g. 'İ') lowercase to two code points: keep them as they are
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return low


def normalize(text: str) -> str:
    """Lowercase and turn punctuation, symbols and whitespace into spaces. Keeps the string length (positions)."""
    return _lower(text).translate(_TABLE)


def codepoints(text: str) -> np.ndarray:
    """The code points of `text` as a numpy array (uint8 for ASCII, else uint32); same values either way."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le" if sys.byteorder == "little" else "utf-32-be"), dtype=np.uint32)


def normalized_codes(text: str) -> np.ndarray:
    """`codepoints(normalize(text))`, with the punctuation mapping done by a numpy lookup table."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii").translate(_NORM8_BYTES), dtype=np.uint8)
    c = codepoints(_lower(text))
    return np.where(c < 0x10000, _LUT[np.minimum(c, 0xFFFF)], c)


def splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (wrapping uint64 arithmetic)."""
    x = x ^ (x >> U64(30))
    x = x * _M1
    x = x ^ (x >> U64(27))
    x = x * _M2
    return x ^ (x >> U64(31))


class _Powers:
    """R**i and R**-i mod 2**64, grown on demand."""

    def __init__(self):
        self.pow = np.ones(1, dtype=U64)
        self.inv = np.ones(1, dtype=U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < n:
            m = max(n, 2 * len(self.pow))
            # built in uint64 throughout (mixing in a Python int list would promote to float64 and lose bits)
            for attr, base in (("pow", _R), ("inv", _RINV)):
                steps = np.full(m, base, dtype=U64)
                steps[0] = 1
                setattr(self, attr, np.cumprod(steps, dtype=U64))
        return self.pow[:n], self.inv[:n]


_POWERS = _Powers()


def word_spans(codes: np.ndarray, space: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices of the maximal runs of non-space code points."""
    w = (codes != space).view(np.int8)
    edges = np.empty(len(w) + 1, dtype=np.int8)
    if len(w):
        edges[0] = w[0]
        np.subtract(w[1:], w[:-1], out=edges[1:-1])
        edges[-1] = -w[-1]
    else:
        edges[0] = 0
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def word_hashes(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """One well-mixed uint64 per word: splitmix(sum_k c[s+k] * R**k + len * salt)."""
    n = len(codes)
    if len(starts) == 0:
        return np.zeros(0, dtype=U64)
    pw, inv = _POWERS.get(n)
    prefix = np.empty(n + 1, dtype=U64)
    prefix[0] = 0
    np.cumsum(codes.astype(U64) * pw, out=prefix[1:])
    raw = (prefix[ends] - prefix[starts]) * inv[starts]
    return splitmix(raw + (ends - starts).astype(U64) * _LEN_SALT)


_NGRAM_MULT = splitmix(np.arange(1, 65, dtype=U64)) | U64(1)  # fixed odd multiplier per n-gram position
_SIZE_TAG = np.arange(65, dtype=U64) * _NGRAM_MULT[63]  # keeps unmixed n-gram values of different n apart


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of n consecutive word hashes (len(wh) - n + 1 values; none if fewer than n words)."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=U64)
    acc = wh[:m] * _NGRAM_MULT[0]
    for k in range(1, n):
        acc += wh[k : k + m] * _NGRAM_MULT[k]
    return splitmix(acc + U64(n))


def ngram_windows(wh: np.ndarray, sizes, mix: bool = True):
    """Yield (n, hash of every window of n consecutive word hashes) for each n of `sizes` in increasing order, as
    long as there are n words (lazily: a caller may stop early). Each window sum is extended from the previous n's.

    mix=False skips the finaliser: the values are then only good for equality tests within one document (a per-size
    tag keeps values of different n apart)."""
    want = sorted(set(sizes))
    acc = wh * _NGRAM_MULT[0]
    for n in range(1, min(want[-1] if want else 0, len(wh)) + 1):
        if n > 1:
            m = len(wh) - n + 1
            acc = acc[:m] + wh[n - 1 : n - 1 + m] * _NGRAM_MULT[n - 1]
        if n in want:
            yield n, splitmix(acc + U64(n)) if mix else acc + _SIZE_TAG[n]


def ngram_hash_family(wh: np.ndarray, sizes, mix: bool = True) -> dict[int, np.ndarray]:
    """`{n: ngram_hashes(wh, n)}` for several n at once (see `ngram_windows`)."""
    got = dict(ngram_windows(wh, sizes, mix))
    return {n: got.get(n, np.zeros(0, dtype=U64)) for n in sorted(set(sizes))}


def doc_word_hashes(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised word hashes of one document, with their start/end string positions."""
    codes = normalized_codes(text)
    s, e = word_spans(codes)
    return word_hashes(codes, s, e), s, e


# ----------------------------------------------------------------------------- MinHash


@dataclass(frozen=True)
class MinHashParams:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


class MinHasher:
    """Signatures for batches of documents: `signatures(texts) -> uint64[len(texts), bands*rows]`.

    A document with fewer words than `ngram` gets one shingle made of all its words; a document with no word at all
    gets the all-ones signature, which `lsh_edges` never buckets.
    """

    EMPTY = np.iinfo(np.uint64).max

    def __init__(self, params: MinHashParams = MinHashParams(), chunk_rows: int = 1 << 16):
        self.params = params
        rng = np.random.Generator(np.random.PCG64(params.seed))
        self.a = rng.integers(0, 2**64 - 1, size=params.num_perm, dtype=U64, endpoint=True) | U64(1)
        self.chunk_rows = chunk_rows  # shingles per block: their products (512 KB) stay in L2 cache

    def shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of a batch, concatenated, and the shingle count of each document."""
        joined = " ".join(texts)
        codes = normalized_codes(joined)  # lowercasing keeps every length (see _lower), so offsets stay valid
        starts, ends = word_spans(codes)
        wh = word_hashes(codes, starts, ends)
        # document of each word, from the document start offsets in the joined string
        lens = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
        doc_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
        word_doc = np.searchsorted(doc_start, starts, side="right") - 1
        return self._shingles(wh, word_doc, len(texts))

    def shingles_of_words(self, whs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`shingles` from each document's normalised word hashes (`doc_word_hashes`, as the quality gates keep them),
        so that the scan hashes every word once. Each document is lowercased on its own here; in `shingles` a batch
        holding a character whose lowercase is longer (e.g. 'İ') lowercases character by character (see `_lower`)."""
        sizes = np.fromiter(map(len, whs), dtype=np.int64, count=len(whs))
        wh = np.concatenate(whs) if whs else np.zeros(0, dtype=U64)
        return self._shingles(wh, np.repeat(np.arange(len(whs)), sizes), len(whs))

    def _shingles(self, wh: np.ndarray, word_doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """Shingles of the words `wh` of a batch; `word_doc` (ascending) is the document of each word."""
        n = self.params.ngram
        words_per_doc = np.bincount(word_doc, minlength=n_docs)
        sh = ngram_hashes(wh, n)
        if len(sh):
            valid = word_doc[: len(sh)] == word_doc[n - 1 :]  # the window stays inside one document
            sh, sh_doc = sh[valid], word_doc[: len(valid)][valid]
        else:
            sh_doc = np.zeros(0, dtype=np.int64)
        short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < n))
        if len(short):  # one shingle of all the words of each short document
            first_word = np.concatenate([[0], np.cumsum(words_per_doc)[:-1]])
            extra = np.array(
                [
                    ngram_hashes(wh[first_word[d] : first_word[d] + words_per_doc[d]], int(words_per_doc[d]))[0]
                    for d in short
                ],
                dtype=U64,
            )
            sh = np.concatenate([sh, extra])
            sh_doc = np.concatenate([sh_doc, short])
            order = np.argsort(sh_doc, kind="stable")
            sh, sh_doc = sh[order], sh_doc[order]
        counts = np.bincount(sh_doc, minlength=n_docs)
        return sh, counts

    def signatures(self, texts: list[str]) -> np.ndarray:
        return self.signatures_from_shingles(*self.shingles(texts))

    def signatures_from_shingles(self, sh: np.ndarray, counts: np.ndarray) -> np.ndarray:
        out = np.full((len(counts), self.params.num_perm), self.EMPTY, dtype=U64)
        nonempty = np.flatnonzero(counts)
        if len(nonempty) == 0:
            return out
        offsets = np.concatenate([[0], np.cumsum(counts)])
        buf = np.empty(self.chunk_rows, dtype=U64)
        # walk the documents in blocks of about chunk_rows shingles (a long document is a block on its own)
        i = 0
        docs = nonempty
        while i < len(docs):
            lo = offsets[docs[i]]
            j = int(np.searchsorted(offsets[docs + 1], lo + self.chunk_rows, side="right"))
            j = max(j, i + 1)
            block = docs[i:j]
            hi = offsets[block[-1] + 1]
            x = sh[lo:hi]
            h = buf[: len(x)] if len(x) <= len(buf) else np.empty(len(x), dtype=U64)
            starts = offsets[block] - lo
            sig = np.empty((self.params.num_perm, len(block)), dtype=U64)
            # one hash function at a time: its products stay in cache and the minimum runs over contiguous
            # memory (4x faster than a (rows x 112) product matrix reduced along its rows)
            for k, a in enumerate(self.a):
                np.multiply(x, a, out=h)
                np.minimum.reduceat(h, starts, out=sig[k])
            out[block] = sig.T
            i = j
        return out


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """uint64[n_docs, bands]: each band's rows folded into one key."""
    n = len(sigs)
    s = sigs.reshape(n, params.bands, params.rows)
    acc = np.zeros((n, params.bands), dtype=U64)
    for r in range(params.rows):
        acc = splitmix(acc ^ s[:, :, r])
    return acc


def lsh_edges(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """Candidate edges (i, j) as int64[m, 2]: a star from the first document of each bucket to every other member.

    The star is enough for connected components and gives each member one edge to check against (exact Jaccard).
    """
    return lsh_edges_from_keys(band_keys(sigs, params), ~np.all(sigs == MinHasher.EMPTY, axis=1))


def lsh_edges_from_keys(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`lsh_edges` from precomputed band keys (n x bands) and the mask of documents that have shingles."""
    params = MinHashParams(bands=keys.shape[1])
    edges = []
    idx = np.flatnonzero(valid)
    for b in range(params.bands):
        k = keys[idx, b]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        run_start = np.concatenate([[True], ~same])
        head = np.maximum.accumulate(np.where(run_start, np.arange(len(ks)), 0))
        members = np.flatnonzero(~run_start)
        edges.append(np.stack([idx[order[head[members]]], idx[order[members]]], axis=1))
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    e = np.concatenate(edges)
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def candidate_pairs(sigs: np.ndarray, params: MinHashParams) -> set[tuple[int, int]]:
    """Every pair that shares a bucket in some band (all pairs, not a star) — for comparisons with other LSH code."""
    keys = band_keys(sigs, params)
    valid = ~np.all(sigs == MinHasher.EMPTY, axis=1)
    pairs: set[tuple[int, int]] = set()
    for b in range(params.bands):
        buckets: dict[int, list[int]] = {}
        for i in np.flatnonzero(valid):
            buckets.setdefault(int(keys[i, b]), []).append(int(i))
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label per node (union-find over the candidate edges, done in C by scipy)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(edges) == 0:
        return np.arange(n)
    m = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(m, directed=False)
    return labels


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = np.unique(a), np.unique(b)
    inter = len(np.intersect1d(sa, sb, assume_unique=True))
    union = len(sa) + len(sb) - inter
    return inter / union if union else 1.0
