"""MO-ASHA early stopping: rungs, Pareto ranking, promotion, decisions on a real in-memory
study, compute saved. Every expected value is worked out by hand in the comments."""

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.search.early_stop import (
    EPOCH_ACC_ATTR, MOASHA, compute_saved, crowding_distance, non_dominated_sort, promotable,
    rank_at_rung, rung_epochs,
)
from space.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)

ACC_MACS = ["maximize", "minimize"]


def test_rung_epochs():
    assert rung_epochs(1, 3, 27) == [1, 3, 9]
    assert rung_epochs(2, 2, 20) == [2, 4, 8, 16]
    assert rung_epochs(1, 3, 28) == [1, 3, 9, 27]
    assert rung_epochs(4, 2, 4) == []


@pytest.mark.parametrize("args, name", [
    ((0, 3, 9), "min_epochs"), ((1, 1, 9), "eta"), ((3, 3, 2), "max_epochs"),
    ((1.5, 3, 9), "min_epochs"), ((1, True, 9), "eta"),
])
def test_rung_epochs_rejects_bad_input(args, name):
    with pytest.raises(UserError, match=name):
        rung_epochs(*args)
    with pytest.raises(UserError, match=name):
        MOASHA(min_epochs=args[0], eta=args[1], max_epochs=args[2], cost_keys=("macs",))


# (accuracy, MACs), drawn with MACs on x and accuracy on y:
#   front 0: P0 (0.50,10) < P1 (0.60,20) = P1' < P2 (0.62,40) < P3 (0.70,50), a rising staircase
#   E  (0.60,25): same accuracy as P1, more MACs -> dominated by P1 only
#   D1 (0.55,30): dominated by P1 and by E -> front 2
#   D2 (0.40,60): dominated by everyone, D1 included -> front 3
POINTS = [
    (0.62, 40),  # 0 P2
    (0.55, 30),  # 1 D1
    (0.50, 10),  # 2 P0
    (0.60, 25),  # 3 E
    (0.60, 20),  # 4 P1
    (0.40, 60),  # 5 D2
    (0.70, 50),  # 6 P3
    (0.60, 20),  # 7 P1' (duplicate)
]


def test_non_dominated_sort_hand_drawn():
    assert non_dominated_sort(POINTS, ACC_MACS) == [[0, 2, 4, 6, 7], [3], [1], [5]]


def test_non_dominated_sort_follows_directions():
    # Minimising both, the low-accuracy cheap point dominates the other.
    assert non_dominated_sort([(0.6, 20), (0.5, 10)], ["minimize", "minimize"]) == [[1], [0]]
    assert non_dominated_sort([(0.6, 20), (0.5, 10)], ACC_MACS) == [[0, 1]]
    assert non_dominated_sort([], ACC_MACS) == []


def test_crowding_distance_by_hand():
    # Front P0 (0.50,10), P1 (0.60,20), P2 (0.62,40), P3 (0.70,50); ranges 0.20 and 40.
    # P0, P3 end both orderings: infinite.
    # P1: (0.62-0.50)/0.20 + (40-10)/40 = 0.60 + 0.75 = 1.35
    # P2: (0.70-0.60)/0.20 + (50-20)/40 = 0.50 + 0.75 = 1.25
    # The result follows the order the front is given in.
    d = crowding_distance(POINTS, [6, 4, 2, 0])
    assert d[0] == math.inf and d[2] == math.inf
    assert d[1] == pytest.approx(1.35) and d[3] == pytest.approx(1.25)


def test_crowding_distance_zero_range_adds_nothing():
    # MACs all 10: that objective gives no infinities; accuracy: ends inf, middle 0.2/0.2 = 1.
    pts = [(0.5, 10), (0.6, 10), (0.7, 10)]
    assert crowding_distance(pts, [0, 1, 2]) == [math.inf, pytest.approx(1.0), math.inf]
    assert crowding_distance([(0.5, 10)] * 3, [0, 1, 2]) == [0.0, 0.0, 0.0]


def test_rank_at_rung_orders_by_front_crowding_index():
    # Front 0: P0 (2) and P3 (6) are infinite, in index order. Sorting the front by
    # (value, index), the duplicate P1' (7) comes right after P1 (4), so they differ:
    #   acc order:  P0 .50, P1 .60, P1' .60, P2 .62, P3 .70   (range .20)
    #   macs order: P0 10,  P1 20,  P1' 20,  P2 40,  P3 50    (range 40)
    #   P1:  (.60-.50)/.2 + (20-10)/40 = 0.50 + 0.25 = 0.75
    #   P1': (.62-.60)/.2 + (40-20)/40 = 0.10 + 0.50 = 0.60
    #   P2:  (.70-.60)/.2 + (50-20)/40 = 0.50 + 0.75 = 1.25
    # then E (3), D1 (1), D2 (5).
    assert rank_at_rung(POINTS, ACC_MACS) == [2, 6, 0, 4, 7, 3, 1, 5]


def test_rank_at_rung_puts_non_finite_points_last():
    pts = [(math.nan, 1), (0.5, 10), (0.6, math.inf), (0.4, 20)]
    assert rank_at_rung(pts, ACC_MACS) == [1, 3, 0, 2]


# Rung results of six trials, the candidate at index 0 (as should_stop places it).
RUNG = [(0.70, 10), (0.60, 5), (0.80, 20), (0.50, 30), (0.65, 25), (0.40, 40)]
#   front 0: (0.60,5) < (0.70,10) < (0.80,20); (0.50,30), (0.65,25), (0.40,40) are dominated.


def test_dominated_candidate_is_stopped():
    # (0.55, 15) is dominated by (0.70, 10) and (0.60, 5): front 1 at best, behind 3 points.
    pts = [(0.55, 15)] + RUNG
    for eta in (2, 3, 4):  # k = 3, 2, 1 of n = 7
        assert not promotable(0, pts, ACC_MACS, eta)


@pytest.mark.parametrize("candidate", [(0.30, 1), (0.90, 50)])
def test_candidate_at_an_end_of_the_front_goes_on(candidate):
    # The cheapest or the most accurate of all: on the front with infinite crowding, and
    # first by index among the infinite ones, so even k = max(1, 7 // 4) = 1 keeps it.
    pts = [candidate] + RUNG
    assert promotable(0, pts, ACC_MACS, eta=4)


def test_first_trials_k_is_one():
    # n < eta: k = max(1, n // eta) = 1, Optuna's "at least the first" rule.
    assert promotable(0, [(0.1, 100)], ACC_MACS, eta=3)  # a lone trial always goes on
    assert promotable(0, [(0.5, 10), (0.6, 20)], ACC_MACS, eta=3)  # both on the front
    assert not promotable(0, [(0.5, 10), (0.6, 5)], ACC_MACS, eta=3)  # dominated by the other
    assert not promotable(1, [(0.5, 10), (0.6, 20)], ACC_MACS, eta=3)  # loses the index tie


def test_crowding_distance_decides_inside_the_front():
    # Front P2 (0.62,40), P1 (0.60,20), P0 (0.50,10), P3 (0.70,50) plus two dominated points;
    # n = 6, eta = 2 -> k = 3. P0 and P3 (infinite) take two places; P1 (1.35) beats
    # P2 (1.25) for the third although P2 has the lower index.
    pts = [(0.62, 40), (0.60, 20), (0.50, 10), (0.70, 50), (0.55, 30), (0.40, 60)]
    assert rank_at_rung(pts, ACC_MACS) == [2, 3, 1, 0, 4, 5]
    assert promotable(1, pts, ACC_MACS, eta=2)
    assert not promotable(0, pts, ACC_MACS, eta=2)


def _finished(acc, macs, state=TrialState.COMPLETE):
    values = [acc[-1], macs] if state == TrialState.COMPLETE else None
    return create_trial(state=state, values=values,
                        user_attrs={EPOCH_ACC_ATTR: list(acc), "macs": macs})


def _study(*trials):
    study = optuna.create_study(directions=ACC_MACS)
    for t in trials:
        study.add_trial(t)
    return study


def test_should_stop_on_a_study():
    stopper = MOASHA(min_epochs=1, eta=3, max_epochs=9, cost_keys=("macs",))
    assert stopper.rungs == (1, 3)
    # Epoch 1: A (0.50,10), B (0.40,20), C (0.45,5), D (0.30,30, pruned at epoch 1).
    # Epoch 3: A (0.70,10), B (0.60,20), C (0.55,5); D did not get there.
    study = _study(
        _finished([0.50, 0.6, 0.70] + [0.75] * 6, 10),
        _finished([0.40, 0.5, 0.60] + [0.65] * 6, 20),
        _finished([0.45, 0.5, 0.55] + [0.60] * 6, 5),
        _finished([0.30], 30, TrialState.PRUNED),
    )
    cand = study.ask().number

    def stop(epoch, acc, macs):
        return stopper.should_stop(study, cand, epoch, acc, {"macs": macs})

    # Rung 1, n = 5, k = 1: (0.35,25) is dominated by A and B; (0.60,15) tops the accuracy.
    assert stop(1, 0.35, 25)
    assert not stop(1, 0.60, 15)
    # Not a rung, or the last epoch: never stops, whatever the accuracy.
    assert not stop(2, 0.0, 1e9)
    assert not stop(9, 0.0, 1e9)
    # Rung 3 has n = 4 (D is out), k = 1: (0.65,12) is dominated by A (0.70,10) ...
    assert stop(3, 0.65, 12)
    # ... (0.65, 4) is the cheapest of all, an end of the front.
    assert not stop(3, 0.65, 4)
    # A diverged accuracy stops at a rung.
    assert stop(1, math.nan, 1)


def test_should_stop_counts_a_running_trial_that_reached_the_rung():
    stopper = MOASHA(eta=3, max_epochs=9, cost_keys=("macs",))
    study = _study(_finished([0.50] * 9, 10))
    cand = study.ask().number
    # With A (0.50,10) alone, (0.60,15) is on the front and goes on.
    assert not stopper.should_stop(study, cand, 1, 0.60, {"macs": 15})
    # Another worker's running trial that has not stored epoch 1 yet, or stored no cost,
    # or that failed, does not count.
    early = study.ask()
    early.set_user_attr("macs", 1)
    early.set_user_attr(EPOCH_ACC_ATTR, [])
    study.ask().set_user_attr(EPOCH_ACC_ATTR, [0.95])
    study.add_trial(create_trial(state=TrialState.FAIL,
                                 user_attrs={EPOCH_ACC_ATTR: [0.95], "macs": 1}))
    assert not stopper.should_stop(study, cand, 1, 0.60, {"macs": 15})
    # Once it stores (0.95 at epoch 1, 1 MAC) it dominates the candidate: stopped.
    early.set_user_attr(EPOCH_ACC_ATTR, [0.95])
    assert stopper.should_stop(study, cand, 1, 0.60, {"macs": 15})


def test_should_stop_does_not_count_the_candidate_twice():
    # X (0.9,5) dominates the candidate (0.5,10), which dominates Z (0.1,60): the candidate
    # is second of n = 3, k = 3 // 2 = 1 -> stopped. Had its own stored epoch counted again,
    # n = 4 would give k = 2 and keep it.
    stopper = MOASHA(eta=2, max_epochs=4, cost_keys=("macs",))
    study = _study(_finished([0.9] * 4, 5), _finished([0.1] * 4, 60))
    cand = study.ask()
    cand.set_user_attr("macs", 10)
    cand.set_user_attr(EPOCH_ACC_ATTR, [0.5])
    assert stopper.should_stop(study, cand.number, 1, 0.5, {"macs": 10})


def test_no_cost_keys_is_plain_asha():
    # Accuracy alone, eta = 2: with four others at 0.4, 0.5, 0.6, 0.7 (n = 5, k = 2)
    # 0.65 is second and goes on, 0.55 is third and stops.
    stopper = MOASHA(eta=2, max_epochs=4, cost_keys=())
    study = _study(*(_finished([a] * 4, 1) for a in (0.4, 0.5, 0.6, 0.7)))
    cand = study.ask().number
    assert not stopper.should_stop(study, cand, 2, 0.65, {})
    assert stopper.should_stop(study, cand, 2, 0.55, {})


def test_compute_saved():
    # max 9 epochs: complete 9, pruned at 3 and at 1 -> 13 trained of 27, 14/27 saved.
    # A running trial has not finished deciding and a failed one would not have gone on.
    trials = [
        _finished([0.5] * 9, 1), _finished([0.5] * 3, 1, TrialState.PRUNED),
        _finished([0.5], 1, TrialState.PRUNED),
        create_trial(state=TrialState.FAIL, user_attrs={EPOCH_ACC_ATTR: [0.5] * 2}),
    ]
    saved = compute_saved(trials, max_epochs=9)
    assert saved == (13, 27, pytest.approx(14 / 27))
    # A complete trial that ran 5 epochs (a time budget ended it) would have run 5 anyway;
    # a trial that trained nothing counts for nothing.
    more = trials + [_finished([0.5] * 5, 1), create_trial(state=TrialState.COMPLETE,
                                                            values=[0.5, 1])]
    assert compute_saved(more, max_epochs=9) == (18, 32, pytest.approx(14 / 32))
    assert compute_saved([], max_epochs=9) == (0, 0, 0.0)
