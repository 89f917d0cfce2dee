"""Ray Tune sweeps over pretraining settings: the sweep config, the search, trials and results."""
