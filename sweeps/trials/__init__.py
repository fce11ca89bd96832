"""Trial bodies, one module per trial kind; what each kind is (its record) lives in sweeps.kinds, and
sweeps.trials.entry turns a body into Tune's trainable."""
