"""Atheris harness: protocols.masking.multiround.decode (all 8 message kinds).

    OMP_NUM_THREADS=1 python fuzz/fuzz_masking_multiround_decode.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("masking_multiround_decode")
