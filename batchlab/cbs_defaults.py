"""`batchlab cbs`'s defaults, each with its reason (the command's options; the experiment's own defaults are
batchlab.schema's)."""

CBS_POINTS = 6  # branch points, geometric in examples over the budget, the first at CBS_FIRST of it: with 6, a
# factor of 2 apart, so the fast rise early in training and the plateau later (Merrill et al. 2025) both get points
CBS_FIRST = 1 / 32  # of the budget: the first point (at 0 the loss falls at every batch size, telling little)
CBS_WINDOW = 1 / 16  # of the budget, in examples: what the smallest batch trains to set the loss level L*. Long
# enough for the largest batch of the default ladder (B0 x 8) to take several steps in a 1-epoch budget of a
# 60,000-example set at B0 = 128 (3,750 examples: 3.7 steps of 1,024; 2 windows: 7), short enough that the
# critical batch changes little within it
CBS_TOLERANCE = 1.0  # a batch is within tolerance when it needs at most (1 + this) x the examples the smallest
# batch needs to reach L*: 1 is McCandlish et al.'s critical batch, twice the examples of the small-batch limit.
# Branches run (1 + this) windows at most: a batch that needs more is past the critical batch by definition
CBS_LADDER = (-2, 3)  # default ladder B0 x 2^k, k from -2 to 3: the critical batch rises over training, so the
# ladder reaches further above the reference batch than below it
CBS_EVALS = 8  # evaluations per window in a branch (at least one per step): E_B is interpolated between them
CBS_EVAL_EXAMPLES = 2048  # held-out examples every branch is evaluated on (the same ones, drawn once); eval.subset
# overrides. The comparisons are paired (same examples, same point), so a few thousand suffice
CBS_TOLERANCE_MAX = 15  # branches run (1 + tolerance) windows: 16 windows of examples is past any critical batch
CBS_POINTS_MAX = 100  # points are kept in memory, a copy of the model and optimizer each: more is a mistake
CBS_MEASUREMENTS = 10  # noise-scale draws averaged at each point (noise.batch_size examples each)
CBS_ABOVE = 4  # a fitted CBS over this many times the ladder's largest batch is not a measurement: there
# E_B = E_min (1 + B / CBS) grows by under 1/4 across the whole ladder, less than the branches' noise; the fit can
# then run to 10^14 (seen on digits, where E_B did not grow with the batch at all)
