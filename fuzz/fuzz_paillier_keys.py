"""Atheris harness: PaillierPublicKey/PaillierPrivateKey/ThresholdParams/KeyShare/ThresholdKeySet.from_json.

    OMP_NUM_THREADS=1 python fuzz/fuzz_paillier_keys.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("paillier_keys")
