"""Applications of trained models, each the library code behind one ``selfsup`` sub-command.

* :mod:`~selfsup.apps.distill` — fine-tuning on few labels and self-distillation (SimCLR v2),
  ``selfsup distill``;
* :mod:`~selfsup.apps.curation` — deduplication and retrieval of an image pool (DINOv2),
  ``selfsup curate``;
* :mod:`~selfsup.apps.colorization` — colouring pictures with a colorization model,
  ``selfsup colorize``;
* :mod:`~selfsup.apps.tracking` — propagating a segmentation mask through a video with a
  video-colorization model, ``selfsup track``.

They sit above :mod:`selfsup.evaluation` (they may use methods, data and evaluation) and below
:mod:`selfsup.commands`, whose modules only parse arguments and call them. Nothing is imported
here, so importing one application does not import the others.
"""
