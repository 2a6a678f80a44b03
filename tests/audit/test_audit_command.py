"""`secure-fedrec audit` end to end on tiny synthetic data."""

import json

import pytest

from secure_fedrec.cli import main

TINY = ["--set", "data.synthetic.n_users=60", "--set", "data.synthetic.n_items=50",
        "--set", "data.synthetic.mean_ratings_per_user=15", "--set", "training.rounds=2",
        "--set", "training.clients_per_round=0.5", "--set", "training.sampling=fixed", "--set", "training.local_epochs=2",
        "--set", "training.checkpoint_every=0", "--set", "model.dim=8",
        # Pinned: the package defaults (private by default) may change under these tests.
        "--set", "privacy.unit=none", "--set", "privacy.noise=central", "--set", "aggregation.protocol=plaintext"]


def test_audit_writes_json_and_plots(tmp_path, capsys):
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[training]\nrounds = 2\n\n[audit]\ncanaries = 60\nshadow_models = 2\n"
                   "shadow_epochs = 2\nn_bootstrap = 20\nupdate_targets = 3\n")
    out = tmp_path / "out"
    code = main(["audit", "--quiet", "--config", str(cfg), "--out", str(out), *TINY])
    assert code == 0
    result = json.loads((out / "audit.json").read_text())
    assert set(result["attacks"]) == {"loss", "lira_online", "lira_offline", "user", "user_popular", "update"}
    for name in ("loss", "lira_online", "user"):
        m = result["attacks"][name]
        assert 0.0 <= m["auc_low"] <= m["auc"] <= m["auc_high"] <= 1.0
        assert "tpr@0.1%" in m
    views = result["attacks"]["update"]["protocol_views"]
    # without DP the plaintext upload gives the rated items away (k = a typical user's count, not the target's)
    assert views["upload"]["auc"] == 1.0 and views["upload"]["precision"] > 0.5
    assert result["attacks"]["update"]["placement"] == "none"
    canary = result["canary_audit"]
    assert canary["num_canaries"] == 60 and canary["epsilon"] == float("inf")
    assert result["violation"] is False and canary["tightness"] is None
    assert result["users"]["members"] + result["users"]["nonmembers"] + result["users"]["shadow"] == 60
    for png in ("roc.png", "roc_loss.png", "roc_user.png", "epsilon.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.toml").exists()
    assert "one-run audit" in capsys.readouterr().out


def test_unknown_audit_key_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[audit]\ncanarys = 3\n")
    assert main(["audit", "--config", str(cfg)]) == 2
    assert "unknown key audit.canarys" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("audit.attacks=loss,liar", "audit.attacks has unknown attack 'liar'"),
    ("audit.canary_kind=rows", "audit.canary_kind must be one of"),
    ("audit.shadow_models=1", "audit.shadow_models must be in [2, 256]"),
    ("audit.confidence=1.5", "audit.confidence must be in (0, 1)"),
    # every number has a finite range (a huge value would only burn the machine)
    ("audit.n_bootstrap=1000000", "audit.n_bootstrap must be in [1, 100000]"),
    ("audit.shadow_epochs=100000", "audit.shadow_epochs must be in [1, 10000]"),
    ("audit.canary_rating=nan", "audit.canary_rating must be a finite number"),
    ("audit.canary_norm=inf", "audit.canary_norm must be in (0, 1e6]"),
    ("audit.cohort_sizes=[0]", "audit.cohort_sizes must be in [1, 100000]"),
    ("audit.fpr_levels=[nan]", "audit.fpr_levels must be in [0, 1)"),
    ("audit.max_users=4", "audit.max_users must be 0 (all) or in [8, 100000000]"),
    ("audit.canaries=1000001", "audit.canaries must be in [0, 1000000]"),
    ("audit.user_shadow=fed", "audit.user_shadow must be one of"),
    ("training.rouns=2", "unknown key training.rouns"),
])
def test_bad_audit_values_are_clear_errors(override, message, capsys):
    assert main(["audit", "--set", override]) == 2
    assert message in capsys.readouterr().err


def test_summary_names_no_score_when_nothing_is_certified():
    from secure_fedrec.audit.commands import summary_text

    canary = {"num_canaries": 10, "kind": "ratings", "epsilon_hat": 0.0, "best_score": None, "best_method": None,
              "confidence": 0.95, "tightness": 0.0, "claimed_epsilon": 0.1, "claim": "ε"}
    text = summary_text({"epsilon": 0.1, "privacy": {"statement": "s"}, "canary_audit": canary, "attacks": {},
                         "violation": False})
    assert "no audited score certifies anything" in text and "None" not in text
