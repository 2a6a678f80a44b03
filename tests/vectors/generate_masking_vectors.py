"""Generate the fixed test vectors for mask expansion (PRG) and Shamir sharing.

Run from the repository root:  python tests/vectors/generate_masking_vectors.py
It rewrites tests/vectors/prg_aes_ctr.json and tests/vectors/shamir_gf_p256.json.

The seeds and polynomial coefficients are derived from SHA-256 of fixed labels
(vectors must be reproducible; nothing here is a protocol secret). The PRG
vectors are produced with :func:`protocols.prg.expand`; the test verifies them
independently with AES-ECB over explicit counter blocks. The Shamir vectors
are produced by plain polynomial evaluation in this script (not with
protocols.shamir), and the test checks that protocols.shamir reconstructs them.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from protocols import prg
from protocols.shamir import PRIME, SHARE_SIZE

HERE = pathlib.Path(__file__).resolve().parent


def _fixed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def prg_vectors() -> list[dict]:
    cases = [(0, 8, 32), (1, 8, 16), (2, 5, 1), (3, 9, 62), (4, 6, 33), (5, 37, 24)]
    out = [{"seed": bytes(32).hex(), "length": 4, "bits": 32,
            "words": [int(v) for v in prg.expand(bytes(32), 4, 32)]}]
    for idx, length, bits in cases:
        seed = _fixed(f"secure_fedrec prg vector {idx}")
        out.append({"seed": seed.hex(), "length": length, "bits": bits,
                    "words": [int(v) for v in prg.expand(seed, length, bits)]})
    return out


def shamir_vectors() -> list[dict]:
    out = []
    for idx, (threshold, holders) in enumerate([(1, [1, 2]), (2, [1, 2, 3]), (3, [5, 9, 12, 40]),
                                                (5, [101 + 7 * h for h in range(9)])]):
        secret = _fixed(f"secure_fedrec shamir secret {idx}")
        coeffs = [int.from_bytes(secret, "big")] + [
            int.from_bytes(_fixed(f"secure_fedrec shamir coeff {idx}.{c}"), "big") % PRIME
            for c in range(1, threshold)]
        shares = []
        for x in holders:
            y = sum(c * pow(x, e, PRIME) for e, c in enumerate(coeffs)) % PRIME
            shares.append({"x": x, "y": y.to_bytes(SHARE_SIZE, "big").hex()})
        out.append({"threshold": threshold, "secret": secret.hex(), "shares": shares})
    return out


def main() -> None:
    (HERE / "prg_aes_ctr.json").write_text(json.dumps(
        {"description": "protocols.prg.expand(seed, length, bits): AES-256-CTR from counter "
                        "block 0^96 || 2 (= AES-256-GCM ciphertext of zeros, nonce 0^96), "
                        "little-endian words reduced mod 2^bits",
         "vectors": prg_vectors()}, indent=1) + "\n")
    (HERE / "shamir_gf_p256.json").write_text(json.dumps(
        {"description": "Shamir shares over GF(2^256 + 297); x = evaluation point, "
                        "y = 33-byte big-endian share",
         "prime": hex(PRIME), "vectors": shamir_vectors()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
