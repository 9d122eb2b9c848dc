"""LeRobot v3.0 export: per-partition staging, incremental assembly, validation, card and Hub upload.

Modules: ``format`` (the v3.0 format: names, paths, metadata writers, without LeRobot), ``features`` (names
and action spaces), ``actions`` (state/action maths), ``layout`` (the dataset's own file names, formats and
errors), ``staging`` (``stage_partition``, ``load_staged``), ``assembly`` (``assemble``), ``versions``
(``assemble_versioned``: versioned publication), ``incremental`` (``update_dataset``: append, remove, replace
on any fsspec filesystem, no working copy), ``validate`` (``validate_dataset``), ``publish`` (``write_card``, ``push``). Writing and
checking a dataset needs no lerobot/torch; LeRobot (the ``lerobot`` extra) is imported only where it is
used: the load-check when installed, ``push``.
"""
