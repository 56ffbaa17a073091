"""Near-duplicate detection: MinHash of word shingles in an LSH index (datasketch).

The index holds one MinHash signature per KEPT record, so its memory grows with
the number of records kept (about num_perm * 8 bytes plus the LSH band tables per
record), not with the size of the input.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

WORD = re.compile(r"\w+")


def _band_key(b: bytes) -> bytes:
    # The LSH tables key on a band's hash values: 8 bytes instead of rows * 8 keeps them small.
    return hashlib.blake2b(b, digest_size=8).digest()


def shingles(text: str, n: int) -> set[bytes]:
    """Lower-cased word n-grams; a text shorter than n words is one shingle."""
    words = WORD.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDuplicates:
    """`check_add(key, text)` returns the key of a kept near-duplicate, or None and remembers this text."""

    def __init__(self, threshold: float, num_perm: int, shingle_words: int, seed: int = 1):
        from datasketch import MinHash, MinHashLSH

        self.enabled = threshold < 1.0
        self.threshold, self.shingle_words = threshold, shingle_words
        # A MinHash built once holds the permutations; copies of it skip that work per record.
        self._template = MinHash(num_perm=num_perm, seed=seed)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, hashfunc=_band_key) if self.enabled else None
        self.signatures: dict[str, np.ndarray] = {}  # key -> MinHash values, to confirm LSH candidates

    def signature(self, text: str):
        m = self._template.copy()
        m.update_batch(list(shingles(text, self.shingle_words)))
        return m

    def check_add(self, key: str, text: str) -> tuple[str, float] | None:
        """(key of the most similar kept record, estimated Jaccard) if one is over the threshold."""
        if not self.enabled:
            return None
        m = self.signature(text)
        sig = m.hashvalues.astype(np.uint32)  # MinHash values are < 2**32: half the memory of uint64
        best = None
        for other in self.lsh.query(m):
            j = float(np.mean(sig == self.signatures[other]))
            if j >= self.threshold and (best is None or j > best[1]):
                best = (other, j)
        if best is None:
            self.lsh.insert(key, m, check_duplication=False)
            self.signatures[key] = sig
        return best
