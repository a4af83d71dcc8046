"""Exact and near-duplicate records, within one data set or between two (contamination).

Records are compared whole: instruction, input and output, each normalised (case folded, punctuation
and symbols turned into spaces, runs of whitespace made one space), so "What is 2+2?" and
"what is 2 + 2" read the same. Two records are near-duplicates when the Jaccard similarity of their
sets of character 5-grams ("shingles") reaches the threshold: 0.9 by default, which in practice means
the same task with a word or a number changed.

Two ways to find the pairs, both reporting each pair's Jaccard similarity:

- `minhash` (the default): 128 MinHash values per record computed with numpy, locality-sensitive hashing
  (bands of rows chosen for the threshold: 16 bands of 8 at 0.9) to propose candidate pairs, MinHash
  estimates to drop candidates far below the threshold, then each remaining candidate's Jaccard computed in
  numpy over 40-bit shingle hashes (the exact figure unless two of the pair's shingles share a hash, a chance
  near 10^-8). In theory LSH misses a pair at exactly 0.9 once in 8,000 and one at 0.95 once in 30 million;
  on 52,000 synthetic records, whose similar pairs crowd just above 0.9, it missed 7 of 4,431.
- `ngram`: every pair at or above the threshold, none missed, similarity computed on the shingle strings
  themselves (an all-pairs similarity join with prefix and size filtering: records that share none of their
  rarest shingles cannot be similar enough, so they are never compared). As fast on a thousand records,
  about five times slower on 52,000.

`bench/data_scale.py` measures both; the figures are in the README's Data section.
"""

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

FIELDS = ("instruction", "input", "output")
DEFAULT_THRESHOLD = 0.9
METHODS = ("minhash", "ngram")
DEFAULT_METHOD = "minhash"
SHINGLE = 5  # characters: long enough that shared 5-grams mean shared words, short enough for short records
PAD = "\x01"  # pads texts shorter than one shingle, so every record has at least one
SEPARATOR = "\x00"  # between texts when they are hashed together; never inside a normalised text
NUM_HASHES = 128
# LSH must find a pair at the threshold with at least this probability (higher above it).
LSH_RECALL = 0.999
# Candidates whose MinHash estimate falls this far below the threshold are dropped before the exact check:
# near the threshold (0.9) the estimate's standard error with 128 values is about 0.03, so a pair at the
# threshold is dropped this way less than once in 10^3.
ESTIMATE_MARGIN = 0.1
# Shingle sets kept while checking candidates: enough to reuse a record's set across its candidates, few enough
# that memory stays bounded (a set of a few hundred 5-character strings takes tens of kB).
CACHED_SETS = 4096
HASH_BITS = 40  # of a shingle's hash when pairs are checked in numpy; the rest of 64 bits number the texts
SLICES = [slice(i, i + SHINGLE) for i in range(4096)]  # grown on demand for longer texts
NON_WORD = re.compile(r"[^\w\s]|_")


@dataclass(frozen=True)
class Pair:
    """Two records at or above the threshold.

    Within one data set, `first` is the earlier record and `second` the later one (indices from 0); between
    two data sets (`cross_duplicates`), `first` indexes the checked records and `second` the other set.
    `same` lists the fields that are identical after normalising.
    """

    first: int
    second: int
    similarity: float
    same: tuple[str, ...]

    @property
    def differs(self) -> tuple[str, ...]:
        return tuple(name for name in FIELDS if name not in self.same)

    def describe_fields(self) -> str:
        if not self.differs:
            return "identical after normalising"
        if not self.same:
            return "every field differs"
        return f"same {join_words(self.same)}; {join_words(self.differs)} differ{'s' if len(self.differs) == 1 else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "similarity": round(self.similarity, 4),
            "same": list(self.same),
            "differs": list(self.differs),
        }


def join_words(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def normalise(text: str) -> str:
    """Case folded, punctuation and symbols as spaces, whitespace collapsed: what similarity is measured on."""
    return " ".join(NON_WORD.sub(" ", text.casefold()).split())


def record_text(record: dict[str, Any]) -> str:
    """The normalised text of a whole record: instruction, input and output."""
    return normalise("\n".join(str(record.get(name) or "") for name in FIELDS))


def shingles(text: str) -> set[str]:
    """The text's character 5-grams; a text shorter than that is padded to one."""
    if len(text) < SHINGLE:
        text = text.ljust(SHINGLE, PAD)
    count = len(text) - SHINGLE + 1
    if count > len(SLICES):
        SLICES.extend(slice(i, i + SHINGLE) for i in range(len(SLICES), 2 * count))
    return set(map(text.__getitem__, islice(SLICES, count)))  # a third faster than a set comprehension


def jaccard(a: set[str], b: set[str]) -> float:
    common = len(a & b)
    return common / (len(a) + len(b) - common)


# Public entry points -------------------------------------------------------------------------------


def find_duplicates(
    records: Sequence[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD, method: str = DEFAULT_METHOD
) -> list[Pair]:
    """Pairs of records within `records` at or above `threshold`, sorted by the later record.

    Records identical after normalising are paired with the first of them (not with each other), and a
    near-duplicate of such a group is paired with the group's first record, so dropping the `second` of every
    pair keeps exactly one record of each group.
    """
    texts = [record_text(record) for record in records]
    found = similar_pairs(texts, None, threshold, method)
    return sorted(
        (make_pair(records[i], records[j], i, j, similarity) for i, j, similarity in found),
        key=lambda pair: (pair.second, pair.first),
    )


def cross_duplicates(
    records: Sequence[dict[str, Any]],
    others: Sequence[dict[str, Any]],
    threshold: float = DEFAULT_THRESHOLD,
    method: str = DEFAULT_METHOD,
) -> list[Pair]:
    """Pairs (record of `records`, record of `others`) at or above `threshold`, sorted by `records` index.

    Every record of `records` that matches is named, each with the first record of `others` it matches in
    each group of identical ones.
    """
    texts = [record_text(record) for record in records] + [record_text(record) for record in others]
    sides = [0] * len(records) + [1] * len(others)
    found = similar_pairs(texts, sides, threshold, method)
    offset = len(records)
    pairs = []
    for i, j, similarity in found:
        if i >= offset:  # order the pair as (records, others)
            i, j = j, i
        pairs.append(make_pair(records[i], others[j - offset], i, j - offset, similarity))
    return sorted(pairs, key=lambda pair: (pair.first, pair.second))


def make_pair(a: dict[str, Any], b: dict[str, Any], i: int, j: int, similarity: float) -> Pair:
    same = tuple(name for name in FIELDS if normalise(str(a.get(name) or "")) == normalise(str(b.get(name) or "")))
    return Pair(i, j, similarity, same)


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"the similarity threshold must be more than 0 and at most 1, got {threshold}")


# The search ----------------------------------------------------------------------------------------


def similar_pairs(
    texts: Sequence[str], sides: Sequence[int] | None, threshold: float, method: str
) -> list[tuple[int, int, float]]:
    """(i, j, Jaccard) for texts at or above `threshold`, i < j. With `sides`, only pairs across the two
    sides (0 and 1); without, every pair.

    Identical texts are grouped first (per side): each group's first member stands for it in the search, and
    its other members are paired with it directly (within one side) or wherever it matched (across sides).
    """
    check_threshold(threshold)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    side_of = sides if sides is not None else [0] * len(texts)
    first_of: dict[tuple[int, str], int] = {}
    members: dict[int, list[int]] = {}
    for index, text in enumerate(texts):
        rep = first_of.setdefault((side_of[index], text), index)
        if rep != index:
            members.setdefault(rep, []).append(index)
    reps = sorted(set(first_of.values()))
    search = minhash_pairs if method == "minhash" else ngram_pairs
    rep_sides = [side_of[i] for i in reps] if sides is not None else None
    found = [
        (reps[a], reps[b], similarity) for a, b, similarity in search([texts[i] for i in reps], rep_sides, threshold)
    ]
    if sides is None:
        found += [(rep, member, 1.0) for rep, group in members.items() for member in group]
        return found
    expanded = []
    for i, j, similarity in found:
        expanded.append((i, j, similarity))
        # The other members of each side's group match too; name every one of the checked side (0).
        for left, right in ((i, j), (j, i)):
            if side_of[left] == 0:
                expanded += [(min(m, right), max(m, right), similarity) for m in members.get(left, ())]
    return expanded


def verify(candidates: Any, texts: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
    """The candidate pairs whose exact Jaccard reaches `threshold`."""
    cache: dict[int, set[str]] = {}
    found = []
    for a, b in candidates:
        a, b = int(a), int(b)
        if (
            len(cache) > CACHED_SETS
        ):  # candidates come sorted by their first record: the recent sets are the ones reused
            cache.clear()
        sa = cache.get(a)
        if sa is None:
            sa = cache[a] = shingles(texts[a])
        sb = cache.get(b)
        if sb is None:
            sb = cache[b] = shingles(texts[b])
        # Size filter: |A ∩ B| <= min(|A|, |B|), so J <= min/max.
        if min(len(sa), len(sb)) < threshold * max(len(sa), len(sb)) - 1e-9:
            continue
        similarity = jaccard(sa, sb)
        if similarity >= threshold - 1e-12:
            found.append((min(a, b), max(a, b), similarity))
    return found


# MinHash + LSH -------------------------------------------------------------------------------------


def lsh_bands(threshold: float, num_hashes: int = NUM_HASHES) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still find a pair at the
    threshold with probability LSH_RECALL; a pair is a candidate when all rows of some band agree."""
    for rows in range(num_hashes, 0, -1):
        bands = num_hashes // rows
        if 1 - (1 - threshold**rows) ** bands >= LSH_RECALL:
            return bands, rows
    return num_hashes, 1


def minhash_signatures(texts: Sequence[str], num_hashes: int = NUM_HASHES, seed: int = 0) -> Any:
    """(len(texts), num_hashes) uint32 MinHash values of each text's shingles.

    Texts are hashed with numpy a block at a time (bounded memory): their code points side by side, a
    polynomial hash of every window of 5, and per hash function the minimum of `a * h + b` (mod 2^32) over
    each text's windows.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    multipliers = rng.integers(1, 2**31, num_hashes, dtype=np.uint64).astype(np.uint32) * np.uint32(2) + np.uint32(1)
    increments = rng.integers(0, 2**32, num_hashes, dtype=np.uint64).astype(np.uint32)
    signatures = np.empty((len(texts), num_hashes), dtype=np.uint32)
    for start, end in text_blocks(texts):
        hashes, offsets = shingle_hashes(texts[start:end])
        values = hashes.astype(np.uint32)
        del hashes
        buffer = np.empty_like(values)
        for k in range(num_hashes):
            np.multiply(values, multipliers[k], out=buffer)
            buffer += increments[k]
            signatures[start:end, k] = np.minimum.reduceat(buffer, offsets)
    return signatures


# Characters hashed at once: the shingle hashes of a block are a few arrays of 8 bytes per character.
BLOCK_CHARS = 1 << 20


def text_blocks(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive runs of `texts` of about BLOCK_CHARS characters each (one text at least),
    so that memory stays flat in the number of texts."""
    start = 0
    while start < len(texts):
        end, size = start, 0
        while end < len(texts) and (size < BLOCK_CHARS or end == start):
            size += len(texts[end]) + 1
            end += 1
        yield start, end
        start = end


def shingle_hashes(texts: Sequence[str]) -> tuple[Any, Any]:
    """A 64-bit hash of every shingle of `texts`, text after text, and where each text's hashes begin."""
    import numpy as np

    padded = [text if len(text) >= SHINGLE else text.ljust(SHINGLE, PAD) for text in texts]
    lengths = np.fromiter((len(text) for text in padded), dtype=np.int64, count=len(padded))
    points = np.frombuffer(SEPARATOR.join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    windows = len(points) - SHINGLE + 1
    hashed = points[:windows].copy()
    for k in range(1, SHINGLE):
        hashed *= np.uint64(0x100000001B3)
        hashed += points[k : windows + k]
    hashed ^= hashed >> np.uint64(29)
    hashed *= np.uint64(0xBF58476D1CE4E5B9)
    hashed ^= hashed >> np.uint64(32)
    # Keep the windows that lie inside one text: text t starts at starts[t] and has lengths[t] - 4 of them.
    counts = lengths - SHINGLE + 1
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    keep = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))
    return hashed[keep], offsets


def shingle_index(texts: Sequence[str]) -> tuple[Any, Any]:
    """Every text's distinct shingles as sorted keys `text number << 40 | 40-bit shingle hash` in one array, and
    where each text's keys begin (len(texts) + 1 entries): a sorted array that answers "does text t hold this
    shingle" for many (t, shingle) queries at once, through one `searchsorted`."""
    import numpy as np

    keys = []
    for start, end in text_blocks(texts):
        hashes, offsets = shingle_hashes(texts[start:end])
        counts = np.diff(np.append(offsets, len(hashes)))
        block = np.repeat(np.arange(start, end, dtype=np.uint64), counts) << HASH_BITS | hashes >> (64 - HASH_BITS)
        block.sort()  # the text number leads, so blocks in order make one sorted array
        keys.append(block[np.concatenate(([True], block[1:] != block[:-1]))])
    index = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    bounds = np.searchsorted(index, np.arange(len(texts) + 1, dtype=np.uint64) << HASH_BITS)
    return index, bounds


def minhash_pairs(texts: Sequence[str], sides: Sequence[int] | None, threshold: float) -> list[tuple[int, int, float]]:
    import numpy as np

    if len(texts) < 2:
        return []
    signatures = minhash_signatures(texts)
    bands, rows = lsh_bands(threshold)
    side = np.asarray(sides, dtype=np.int8) if sides is not None else None
    rng = np.random.default_rng(1)
    mix = rng.integers(1, 2**63, rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    count = len(texts)
    found = []
    for band in range(bands):
        block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = (block * mix).sum(axis=1)  # wraps around mod 2^64: a hash of the band's rows
        # Candidates far below the threshold by half the MinHash values are dropped band by band (with a wider
        # margin than the final check: 4 standard errors at 0.9), which keeps memory small where many records
        # share a band, as in templated data.
        half = signatures[:, : signatures.shape[1] // 2]
        pairs = estimate_at_least(same_key_pairs(keys, side), half, threshold - 1.5 * ESTIMATE_MARGIN)
        found.append(pairs[:, 0] * count + pairs[:, 1])  # one int64 per pair
    keys = np.sort(np.concatenate(found))  # a sort finds repeats faster than numpy's hash-based unique here
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    pairs = estimate_at_least(np.stack([keys // count, keys % count], axis=1), signatures, threshold - ESTIMATE_MARGIN)
    if len(texts) >= 1 << (64 - HASH_BITS):
        return verify(pairs, texts, threshold)
    return verify_hashed(pairs, texts, threshold)


def verify_hashed(pairs: Any, texts: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
    """`verify` in numpy, on 40-bit shingle hashes: each shingle of a pair's first text is looked up among the
    second's (`searchsorted` in `shingle_index`), for many pairs at once. Two different shingles of a pair
    share a hash with a probability near 10^-8, so the similarity is the exact one but for that chance."""
    import numpy as np

    if not len(pairs):
        return []
    involved = np.unique(pairs)
    index, bounds = shingle_index([texts[i] for i in involved])
    local = np.searchsorted(involved, pairs)  # pair members renumbered into the index's texts
    sizes = np.diff(bounds)
    first, second = local[:, 0], local[:, 1]
    # Size filter: |A ∩ B| <= min(|A|, |B|), so J <= min/max.
    fits = np.minimum(sizes[first], sizes[second]) >= threshold * np.maximum(sizes[first], sizes[second]) - 1e-9
    pairs, first, second = pairs[fits], first[fits], second[fits]
    found = []
    mask = np.uint64((1 << HASH_BITS) - 1)
    start = 0
    while start < len(pairs):
        # About a million lookups per batch (tens of MB of index arrays).
        ends = np.cumsum(sizes[first[start:]])
        end = start + max(1, int(np.searchsorted(ends, 1 << 20)))
        a, b = first[start:end], second[start:end]
        counts = sizes[a]
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        members = np.repeat(bounds[a] - offsets, counts) + np.arange(int(counts.sum()))
        queries = np.repeat(b.astype(np.uint64), counts) << HASH_BITS | index[members] & mask
        where = np.minimum(np.searchsorted(index, queries), len(index) - 1)
        common = np.add.reduceat((index[where] == queries).astype(np.int64), offsets)
        similarity = common / (sizes[a] + sizes[b] - common)
        for (i, j), value in zip(
            pairs[start:end][similarity >= threshold - 1e-12], similarity[similarity >= threshold - 1e-12]
        ):
            found.append((int(min(i, j)), int(max(i, j)), float(value)))
        start = end
    return found


def estimate_at_least(pairs: Any, signatures: Any, floor: float) -> Any:
    """The pairs whose MinHash estimate (the share of equal values) is at least `floor`."""
    import numpy as np

    needed = math.ceil(floor * signatures.shape[1] - 1e-9)  # equal values, out of the signature's
    keep = np.empty(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 1 << 16):  # bounded memory for the row comparisons
        chunk = pairs[start : start + (1 << 16)]
        equal = signatures[chunk[:, 0]] == signatures[chunk[:, 1]]
        keep[start : start + len(chunk)] = np.count_nonzero(equal, axis=1) >= needed
    return pairs[keep]


def same_key_pairs(keys: Any, side: Any = None) -> Any:
    """(n, 2) int64 index pairs (i < j) of entries with equal keys; with `side`, only pairs across sides."""
    import numpy as np

    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    found = []
    # Entries with equal keys sit next to each other: pair each with the ones `distance` places on.
    distance = 1
    while distance < len(order):
        same = ordered[distance:] == ordered[:-distance]
        if not same.any():
            break
        left, right = order[:-distance][same], order[distance:][same]
        if side is not None:
            across = side[left] != side[right]
            left, right = left[across], right[across]
        found.append(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1))
        distance += 1
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


# Exact n-gram Jaccard --------------------------------------------------------------------------------


def ngram_pairs(texts: Sequence[str], sides: Sequence[int] | None, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair at or above the threshold (AllPairs: Bayardo et al., WWW 2007).

    Shingles are ranked rarest first. Two sets with Jaccard >= t share a shingle among the first
    |x| - ceil(t |x|) + 1 of each, so only records sharing one of those "prefix" shingles are compared, and
    of those only records whose sizes allow the threshold (size filter).
    """
    sets = [shingles(text) for text in texts]
    frequency: Counter[str] = Counter()
    for shingle_set in sets:
        frequency.update(shingle_set)

    def rank(shingle: str) -> tuple[int, str]:
        return frequency[shingle], shingle

    index: dict[str, list[int]] = {}
    found = []
    for x in sorted(range(len(sets)), key=lambda i: len(sets[i])):
        size = len(sets[x])
        prefix = sorted(sets[x], key=rank)[: size - math.ceil(threshold * size - 1e-9) + 1]
        candidates: set[int] = set()
        for shingle in prefix:
            bucket = index.setdefault(shingle, [])
            candidates.update(bucket)
            bucket.append(x)
        for y in candidates:
            if sides is not None and sides[x] == sides[y]:
                continue
            # Records arrive smallest first, so |y| <= |x|; J <= |y| / |x|.
            if len(sets[y]) < threshold * size - 1e-9:
                continue
            similarity = jaccard(sets[x], sets[y])
            if similarity >= threshold - 1e-12:
                found.append((min(x, y), max(x, y), similarity))
    return found


# Removal -------------------------------------------------------------------------------------------


def records_to_drop(pairs: Sequence[Pair], cross: bool = False) -> set[int]:
    """Indices to remove: the later record of each pair, or with `cross` the checked set's record of each."""
    return {pair.first if cross else pair.second for pair in pairs}
