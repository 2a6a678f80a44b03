"""Run every atheris harness in turn and record executions and findings.

    OMP_NUM_THREADS=1 python fuzz/run_all.py --seconds 90            # the figures in docs/security.md
    OMP_NUM_THREADS=1 python fuzz/run_all.py --runs 20000 --only wire_frame

Each harness starts from a corpus seeded with valid messages of its decoder
(``targets.Target.seeds``) in ``--workdir``, runs alone (one core), and is
stopped by libFuzzer after ``--seconds`` or ``--runs``. A harness that exits
non-zero left a crash input in the work dir: it is listed under ``findings``
with the exception it raised. Writes ``benchmarks/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "fuzz")]

import targets

#: Contract violations found while building the harnesses (a random-mutation pre-run, and
#: reading each decoder against its contract), fixed before the atheris runs, each with its
#: regression test.
FIXED = [
    {"target": "paillier_messages", "found_by": "review, reproduced", "input": "PartialDecryption body with index byte 0 or 255",
     "escaped": "ValueError (the aggregator's receive() let it through: a key holder could "
                "crash the aggregator)",
     "fix": "protocols/paillier/messages.py PartialDecryptionMessage.parse -> MalformedMessage",
     "test": "tests/fuzz/test_fuzz_decoders.py::test_partial_decryption_index_zero_is_malformed"},
    {"target": "paillier_keys", "found_by": "review, reproduced", "input": "a JSON document nested ~100k arrays deep",
     "escaped": "RecursionError",
     "fix": "protocols/paillier/keys.py _load_document -> ValueError (all five key decoders)",
     "test": "tests/fuzz/test_fuzz_decoders.py::test_deeply_nested_key_document_is_a_value_error"},
    {"target": "config_toml", "found_by": "random-mutation pre-run",
     "input": "a config file that is not UTF-8",
     "escaped": "UnicodeDecodeError (a stack trace instead of the CLI's error message)",
     "fix": "secure_fedrec/config.py load_config -> ConfigError",
     "test": "tests/fuzz/test_fuzz_decoders.py::test_config_file_that_is_not_utf8_is_a_config_error"},
    {"target": "config_toml", "found_by": "review, reproduced",
     "input": "a = [[[[... 5000 deep",
     "escaped": "RecursionError from tomllib",
     "fix": "secure_fedrec/config.py load_config -> ConfigError",
     "test": "tests/fuzz/test_fuzz_decoders.py::test_deeply_nested_config_is_a_config_error"},
    {"target": "state_file", "found_by": "hypothesis twin (tests/fuzz), before the atheris run",
     "input": "a stored zip member whose flags say encrypted (0x1) or compressed patched data (0x20)",
     "escaped": "RuntimeError / NotImplementedError from zipfile",
     "fix": "secure_fedrec/state_file.py: members with any flag but 0x08/0x800 -> StateFileError",
     "test": "tests/engines/test_checkpoint_hardening.py::test_zip_members_with_flags_this_format_never_writes_are_refused"}
]


def run_one(name: str, *, seconds: int | None, runs: int | None, workdir: pathlib.Path) -> dict:
    target = targets.TARGETS[name]
    corpus = workdir / name / "corpus"
    artifacts = workdir / name / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(target.seeds()):
        (corpus / f"seed-{k}").write_bytes(seed)
    cmd = [sys.executable, str(ROOT / "fuzz" / f"fuzz_{name}.py"), "-print_final_stats=1",
           "-timeout=20", "-rss_limit_mb=3072", f"-artifact_prefix={artifacts}/"]
    if seconds is not None:
        cmd.append(f"-max_total_time={seconds}")
    if runs is not None:
        cmd.append(f"-runs={runs}")
    cmd.append(str(corpus))
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    elapsed = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    if not executed:  # a crash ends the run before the final stats: take the last status line
        executed = re.findall(r"#(\d+)\s", log)
    findings = []
    if proc.returncode != 0:
        exception = re.findall(r"^(?:\w+\.)*\w+(?:Error|Exception|Exit)\b.*$", log, re.MULTILINE)
        findings.append({
            "exit_code": proc.returncode,
            "exception": exception[-1] if exception else log[-400:],
            "inputs": sorted(p.name for p in artifacts.iterdir()),
        })
    return {"description": target.description, "executions": int(executed[-1]) if executed else 0,
            "seconds": round(elapsed, 1), "corpus_files": len(list(corpus.iterdir())),
            "allowed_errors": [e.__name__ for e in targets.allowed(target)] or ["(none)"],
            "findings": findings, "command": " ".join(cmd[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(targets.TARGETS))
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/sfr-fuzz"))
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks/results/fuzz.json")
    args = parser.parse_args(argv)
    if args.seconds is None and args.runs is None:
        args.seconds = 60
    results = {}
    print(f"{'decoder':<22}{'executions':>12}{'seconds':>9}  findings")
    for name in args.only or list(targets.TARGETS):
        res = run_one(name, seconds=args.seconds, runs=args.runs, workdir=args.workdir)
        results[name] = res
        print(f"{name:<22}{res['executions']:>12}{res['seconds']:>9.0f}  "
              f"{res['findings'][0]['exception'] if res['findings'] else 'none'}", flush=True)
    out = {
        "command": "python fuzz/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "atheris": _atheris_version(), "python": platform.python_version(),
        "machine": platform.platform(), "targets": results,
        "total_executions": sum(r["executions"] for r in results.values()),
        "open_findings": sum(len(r["findings"]) for r in results.values()),
        "fixed_findings": FIXED,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if out["open_findings"] else 0


def _atheris_version() -> str:
    from importlib.metadata import version

    return version("atheris")


if __name__ == "__main__":
    raise SystemExit(main())
