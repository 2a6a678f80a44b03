"""Atheris harness: protocols.paillier.encryption.ciphertexts_from_bytes (InvalidCiphertext).

    OMP_NUM_THREADS=1 python fuzz/fuzz_paillier_ciphertexts.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("paillier_ciphertexts")
