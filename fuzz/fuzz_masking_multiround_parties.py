"""Atheris harness: a MultiRoundServer collecting uploads and a MultiRoundClient awaiting unmasking.

    OMP_NUM_THREADS=1 python fuzz/fuzz_masking_multiround_parties.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("masking_multiround_parties")
