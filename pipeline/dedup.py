"""Dataset-wide duplicate removal: exact-duplicate prompts and near-duplicate images (pHash).

Records are visited in plan order (train units, then val units, each in input order); the first
of a group is kept. Near duplicates are found with the pigeonhole trick: two 64-bit hashes within
Hamming distance d <= 7 share at least one of 8 byte-sized bands, so only bucket-mates are compared.
"""

from __future__ import annotations

from collections import defaultdict


def find_duplicates(records: list[dict], *, prompts: bool, max_hamming: int | None) -> dict[str, str]:
    """{key: reason} for every record to drop; `records` hold key, prompt (fingerprint), phash."""
    drop: dict[str, str] = {}
    first_prompt: dict[str, str] = {}
    buckets: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
    for rec in records:
        key = rec["key"]
        if prompts and rec.get("prompt") and rec["prompt"] in first_prompt:
            drop[key] = f"duplicate_prompt (same prompt as {first_prompt[rec['prompt']]})"
            continue
        h = rec.get("phash")
        if max_hamming is not None and h is not None:
            bands = [(b, (h >> (8 * b)) & 0xFF) for b in range(8)]
            match = None
            for band in bands:
                for other, okey in buckets[band]:
                    d = (h ^ other).bit_count()
                    if d <= max_hamming:
                        match = (okey, d)
                        break
                if match:
                    break
            if match:
                drop[key] = f"near_duplicate_image (Hamming {match[1]} to {match[0]})"
                continue
            for band in bands:
                buckets[band].append((h, key))
        if prompts and rec.get("prompt"):
            first_prompt[rec["prompt"]] = key
    return drop
