"""Atheris harness: a MaskingServer collecting masked inputs and a MaskingClient awaiting shares.

Both decode with the session's own sizes (issue 19, item 5).

    OMP_NUM_THREADS=1 python fuzz/fuzz_masking_midsession.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("masking_midsession")
