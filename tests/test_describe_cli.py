"""``resolab describe`` through the command line: one switchable model, and the set of I-Nets (RS-Nets
Table 2's I-Nets column, Table 3's storage footnote 4) that `--method individual` over several
resolutions stands for."""
from __future__ import annotations

import json
import math

import pytest

from orchestrator.cli.main import main

FIVE = ["224", "192", "160", "128", "96"]
# torchvision's ResNet-18 at 1000 classes: 11,689,512 parameters (its documented count).
RESNET18 = 11_689_512


def describe_json(capsys, *args) -> dict:
    assert main(["describe", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_individual_over_five_resolutions_is_the_set_of_five_inets(capsys):
    info = describe_json(capsys, "--backbone", "resnet18", "--method", "individual", "--resolutions", *FIVE,
                         "--num-classes", "1000")
    assert info["models"] == 5 and info["model_params"] == [RESNET18] * 5
    assert info["total_params"] == 5 * RESNET18
    assert info["total_params_M"] == 55.74 == round(5 * RESNET18 / 2**20, 2)  # RS-Nets Table 2, I-Nets
    assert list(info["madds"]) == FIVE
    # Each resolution's MAdds are its own I-Net's, which are a one-model describe's at that resolution.
    one = describe_json(capsys, "--backbone", "resnet18", "--method", "individual", "--resolutions", "160",
                        "--num-classes", "1000")
    assert info["madds"]["160"] == one["madds"]["160"]
    assert info["madds"]["224"] > info["madds"]["192"] > info["madds"]["96"]


def test_the_w2a2_inet_set_needs_log2_of_20_bits_per_weight(capsys):
    info = describe_json(capsys, "--backbone", "preact_resnet18", "--weight-bits", "2", "--act-bits", "2",
                         "--method", "individual", "--resolutions", *FIVE, "--num-classes", "1000")
    # Five 2-bit I-Nets: 5 * 2^2 = 20 values per channel position (RS-Nets footnote 4's 4.32).
    assert info["storage_bits"] == 4.32 == round(math.log2(20), 2)
    rsnet = describe_json(capsys, "--backbone", "preact_resnet18", "--weight-bits", "2", "--act-bits", "2",
                          "--method", "rsnet", "--resolutions", *FIVE, "--num-classes", "1000")
    assert rsnet["storage_bits"] == 2 and rsnet["models"] == 1
    assert info["size_MB"] > 4 * rsnet["size_MB"]  # five models' codes, bases and fp32 layers


def test_the_inet_set_in_words(capsys):
    assert main(["describe", "--backbone", "resnet18", "--method", "individual", "--resolutions", *FIVE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("resnet18 / individual: a set of 5 I-Nets, one per resolution: 58,447,560 params in all "
                      "(55.74 x 2^20), 11,689,512 (11.15 x 2^20) each")
    assert out[1].startswith("   224 px: 1,81") and out[1].endswith("M MAdds (its own I-Net)")
    assert len(out) == 7 and out[6].startswith("  storage: 32 bits per conv weight (across the 5 models)")


def test_one_model_is_described_as_before(capsys):
    info = describe_json(capsys, "--backbone", "resnet18", "--method", "individual", "--resolutions", "224",
                         "--num-classes", "1000")
    assert info["models"] == 1 and info["total_params"] == RESNET18 and info["total_params_M"] == 11.15
    assert list(info["madds"]) == ["224"] and info["storage_bits"] == 32
    rsnet = describe_json(capsys, "--backbone", "resnet18", "--method", "rsnet", "--resolutions", *FIVE,
                          "--num-classes", "1000")
    assert rsnet["models"] == 1 and rsnet["total_params_M"] == 11.18 and list(rsnet["madds"]) == FIVE
    assert main(["describe", "--backbone", "resnet18", "--method", "rsnet", "--resolutions", *FIVE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "resnet18 / rsnet: 11,727,917 params (11.18 x 2^20, 1 model)" and len(out) == 7


@pytest.mark.parametrize("args, message", [
    # The set's jobs are validated one by one: a rule every I-Net job breaks is still refused.
    (["--backbone", "resnet_tiny", "--method", "individual", "--act-bits", "2", "--resolutions", "32", "24"],
     "model.act_bits=2 quantizes activations"),
    (["--backbone", "resnet_tiny", "--method", "rsnet", "--act-bits", "2", "--resolutions", "32", "24"],
     "model.act_bits=2 quantizes activations"),
])
def test_a_set_breaking_a_job_rule_is_refused_in_one_line(capsys, args, message):
    assert main(["describe", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_training_an_inet_over_several_resolutions_is_still_refused():
    from jobspec import ConfigError, JobConfig

    cfg = JobConfig.parse({"method": {"name": "individual"}, "data": {"resolutions": [32, 24]}})
    with pytest.raises(ConfigError, match="individual trains one resolution per job"):
        cfg.validate()
