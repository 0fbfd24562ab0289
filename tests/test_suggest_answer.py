"""What suggest says: the tie sentence, an answer not confirmed on every seed, strict JSON, the pilot's batch size."""

import json
import math

import pytest

from batchlab.schema import Experiment
from batchlab.suggestion.answer import Suggestion, sentence
from batchlab.suggestion.pipeline import pilot_batch
from batchlab.suggestion.scan import Rate

COST = {"scan": 1.5, "pilot": 2.0, "race": 3.0, "confirmation": 0.5, "total": 7.0}


def answer(**fields) -> Suggestion:
    s = Suggestion(path="runs/x-suggest", metric="test_accuracy", target=0.95, batch_size=256, lr=1.0, seeds=[0, 1],
                   steps=[48, 44], seconds_per_step=0.0013, predicted_seconds=0.0598,
                   predicted_interval=(0.055, 0.066), confirmed=True, b_simple=19.0, measurements=11,
                   noise_every_steps=13, band=(19.0, 304.0), candidates=[32, 128, 256], cost=COST)
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def test_a_tie_names_both_batch_sizes_within_the_noise():
    s = answer(within_noise=[{"batch_size": 128, "lr": 1.0, "steps": [78, 72], "predicted_seconds": 0.0621}])
    text = sentence(s)
    assert text.startswith("Use batch size 256 or 128 (within the noise of this machine): 256 with lr 1: 0.0598 s; "
                           "128 with lr 1: 0.0621 s predicted to test_accuracy 0.95")
    assert "seeds 0 and 1" in text and "cost 7 s (scan 1.5, pilot 2, race 3, confirmation 0.5)" in text


def test_one_answer_states_its_steps_seconds_per_step_and_interval():
    text = sentence(answer())
    assert text.startswith("Use batch size 256 with lr 1: 0.0598 s to test_accuracy 0.95 on this machine, predicted "
                           "(48/44 steps on seeds 0 and 1 x 0.0013 s a step; 95% interval 0.055-0.066 s)")
    assert "B_crit band 19-304 from B_simple 19 (11 measurements" in text


def test_a_setting_that_missed_on_a_seed_is_not_recommended_unqualified():
    missed = "no setting was confirmed: none tried reached test_accuracy 0.95 on every seed of 0, 1 and 2"
    later = "no schedule raced: the answer was not confirmed"  # --schedule's note (the CLI prints notes after)
    text = sentence(answer(confirmed=False, seeds=[0], steps=[48], predicted_interval=None, unconfirmed=missed,
                           notes=[later]))
    assert text.startswith("Not confirmed: use batch size 256 with lr 1") and f"but {missed};" in text
    assert not text.startswith("Use") and later not in text


def test_a_missing_figure_is_null_in_strict_json():
    s = answer(predicted_seconds=math.nan, seconds_per_step=math.inf, rates=[Rate(256, None, [], "out of memory")])
    out = s.to_dict()
    text = json.dumps(out, allow_nan=False)  # raises on NaN or infinity
    assert out["predicted_seconds"] is None and out["seconds_per_step"] is None
    assert json.loads(text)["rates"][0] == {"batch_size": 256, "seconds_per_step": None, "rounds": [],
                                            "error": "out of memory"}


SCANNED = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1437]


@pytest.mark.parametrize("sweep, batch_size, scanned, expected", [
    ({"batch_size": [1, 4, 16, 64, 256, 1437]}, 128, SCANNED, 32),  # the quickstart: 2^5 is the middle
    ({"batch_size": [16, 64, 256, 1024, 4096, 16384]}, 128, SCANNED, 512),  # the critical-batch grid: 2^9
    ({"batch_size": [16, 64, 256, 1024, 4096, 16384]}, 128, SCANNED[:8], 128),  # the scan stopped at 128
    ({}, 100, SCANNED, 128),  # no list: the config's batch size, moved to the nearest scanned one
    ({}, 1437, SCANNED, 1437),
])
def test_the_pilot_trains_at_a_scanned_batch_size_from_the_middle_of_the_sweeps(sweep, batch_size, scanned, expected):
    cfg = Experiment.model_validate({"batch_size": batch_size, "sweep": sweep})
    assert pilot_batch(cfg, scanned) == expected
