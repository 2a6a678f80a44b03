"""Atheris harness: secure_fedrec.state_file.load_state on a checkpoint or model file (StateFileError).

    OMP_NUM_THREADS=1 python fuzz/fuzz_state_file.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("state_file")
