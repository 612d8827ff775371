"""Training the reference model.

- :mod:`~crystalgrid.models.training.loop`: ``train(config, view_train, view_val,
  out_dir=...)``, the training loop: set up, epochs of steps, validation and checkpoints.
- :mod:`~crystalgrid.models.training.step`: one optimiser step (stage, augmentation,
  forward and backward, the scheduled learning rate) and the optimiser.
- :mod:`~crystalgrid.models.training.log`: ``log.jsonl`` (:func:`~crystalgrid.models.training.
  log.read_log`), the running means of the loss terms, the line printed at an epoch's end.
- :mod:`~crystalgrid.models.training.resume`: the checkpoint to continue from, checked (the
  fields :meth:`TrainConfig.frozen_on_resume` marks), and the state restored.
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
