"""gitlib: the library behind gitsweep. Layers import one way, each only from those before it:

    errors, configs, registry, device, augmenter   shared leaf modules
    data      long-tail profiles, nuisances, real sources, content-addressed Parquet builds
    models    CIFAR-style ResNets, MUNIT
    train     the classifier's epochs and MUNIT's steps (configs, losses, rules, schedule)
    metrics   eKLD, consistency, accuracy groups, generator quality, final evaluation
    probes    bias probes of a trained classifier (spectral, critical band, corruptions)
    msr       meta-learned symmetries (layers, synthetic task families, batched MAML)
    plots     figures of results
    runs      one code path per model: the whole classifier run and the whole generator run

No module imports ray or mlflow; configs and registries load without torch.
"""

__version__ = "0.1.0"
