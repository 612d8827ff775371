"""Training the reference model.

- :mod:`~crystalgrid.models.training.loop`: ``train(config, view_train, view_val,
  out_dir=...)``, the training loop (stages, schedules, resume, logs, validation), and
  :func:`~crystalgrid.models.training.loop.read_log`.
- :mod:`~crystalgrid.models.training.loader`: batches read ahead onto the device,
  :func:`~crystalgrid.models.training.loader.measure_loader`.
- :mod:`~crystalgrid.models.training.schedule`: where a staged run's U-Net stage starts, and
  each step's learning rate.
- :mod:`~crystalgrid.models.training.speed`: samples/s of each stage on this machine, and a
  run's expected training time.
- :mod:`~crystalgrid.models.training.augment`: the 48 symmetries of the cube, applied to
  training batches.

Nothing is imported here. Nothing else in :mod:`crystalgrid.models` imports this package:
loading, scoring and sampling a trained model never load the trainer.
"""
