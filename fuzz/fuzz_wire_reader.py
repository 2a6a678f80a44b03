"""Atheris harness: protocols.wire.Reader field codecs, driven by a program in the input.

    OMP_NUM_THREADS=1 python fuzz/fuzz_wire_reader.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("wire_reader")
