import json

from secure_fedrec.cli import main


def test_run_writes_metrics_and_config(tmp_path, capsys):
    code = main(["run", "--quiet", "--out", str(tmp_path), "--set", "training.rounds=2",
                 "--set", "data.synthetic.n_users=30", "--set", "data.synthetic.n_items=40", "--set", "data.synthetic.mean_ratings_per_user=15",
                 "--set", "training.clients_per_round=5"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 2 and "rmse" in metrics["final"]
    assert metrics["bytes_sent_per_client_per_round"][0] > 0
    assert (tmp_path / "config.toml").exists()
    assert "RMSE" in capsys.readouterr().out


def test_bad_key_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[training]\nrouns = 3\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "unknown key training.rouns" in capsys.readouterr().err


def test_bad_value_is_a_clear_error(capsys):
    assert main(["run", "--set", "aggregation.protocol=carrier-pigeon"]) == 2
    assert "aggregation.protocol must be one of" in capsys.readouterr().err


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path / "nope.csv")]) == 2
    assert "error" in capsys.readouterr().err
