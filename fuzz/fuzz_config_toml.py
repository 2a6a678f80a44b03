"""Atheris harness: secure_fedrec.config.load_config on a TOML file (ConfigError).

    OMP_NUM_THREADS=1 python fuzz/fuzz_config_toml.py -max_total_time=60 CORPUS_DIR
    (or all harnesses: python fuzz/run_all.py --seconds 60)
"""

from _harness import main

if __name__ == "__main__":
    main("config_toml")
